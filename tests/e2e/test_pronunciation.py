"""End to end: jobs with a lexicon and with inline markup, rendered by a real worker on the real model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.audio import decode_audio

JOB_TIMEOUT = 240.0

pytestmark = pytest.mark.usefixtures("worker")


def render(client: Any, services: Any, **body: Any) -> np.ndarray:
    """Submit a WAV job, wait for it (event-driven, with a deadline) and return its decoded samples."""
    response = client.post("/v1/jobs", json={"format": "wav", "voice": "af_heart", **body})
    assert response.status_code == 202, response.data
    job_id = response.get_json()["id"]
    job = services.jobs.wait(job_id, JOB_TIMEOUT)
    assert job.state == "succeeded", (job.state, job.error_message)
    samples, _ = decode_audio(client.get(f"/v1/jobs/{job_id}/audio").data, "wav")
    return samples


def test_a_lexicon_alias_says_the_alias(client: Any, services: Any) -> None:
    lexicon = client.post("/v1/lexicons", json={"entries": [{"grapheme": "Hermione", "alias": "Bob"}]}).get_json()
    with_lexicon = render(client, services, text="Hermione smiled.", lexicon=lexicon["id"])
    said = render(client, services, text="Bob smiled.")
    without = render(client, services, text="Hermione smiled.")
    assert np.array_equal(with_lexicon, said)
    assert len(without) != len(said)


def test_an_ssml_break_adds_half_a_second(client: Any, services: Any) -> None:
    broken = render(
        client, services, text='<speak>Hello there. <break time="500ms"/> How are you?</speak>', markup="ssml"
    )
    plain = render(client, services, text="Hello there. How are you?")
    assert len(broken) - len(plain) == 12_000  # 0.5 s at 24 kHz

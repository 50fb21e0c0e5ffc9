"""The official ``openai`` package against the running service: streaming by default, SSE events, errors.

Every test goes through real HTTP (``live_server``), the queue and a real worker. Progressive
delivery is asserted on the job's own state when the first audio arrives (the worker has not
finished), never on wall time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

openai = pytest.importorskip("openai")

from engine.audio import decode_audio  # noqa: E402
from engine.exceptions import EngineError  # noqa: E402

#: Three segments (a short opening clause, then two sentences): the job is still rendering when the first
#: one is delivered, and the whole render stays a few seconds on one engine thread.
TEXT = (
    "The first words arrive quickly. The second sentence is rendered while the first one plays, "
    "and this last one comes after both."
)

#: Longest wait for a job to finish after its stream has been read.
JOB_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def sdk(worker: Any, live_server: Any) -> Iterator[Any]:
    """An OpenAI client pointed at the live service, with a real worker behind it."""
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused-by-spool", max_retries=0)
    yield client
    client.close()


def snapshot(services: Any, job_id: str) -> dict[str, Any]:
    """What the job record and its chunk stream in Redis say right now."""
    job = services.jobs.get(job_id)
    entries = services.redis.xrange(services.keys.job_chunks(job_id))
    ended = any(fields.get(b"type") == b"end" for _, fields in entries)
    return {"state": job.state, "done": job.segments_done, "total": job.segments_total, "ended": ended}


def assert_still_rendering(seen: dict[str, Any]) -> None:
    """The job had not finished when its first audio reached the client."""
    assert seen["state"] == "running", seen
    assert not seen["ended"], seen
    assert seen["total"] is not None and seen["total"] >= 2 and seen["done"] < seen["total"], seen


def stream_speech(sdk: Any, services: Any, fmt: str, audio_starts: Any) -> tuple[bytes, dict[str, Any], Any]:
    """POST with OpenAI's defaults (no stream flag); return the body, the job when audio began, the headers."""
    body = bytearray()
    seen: dict[str, Any] | None = None
    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format=fmt
    ) as response:
        headers = response.headers
        job_id = headers["X-Job-Id"]
        for piece in response.iter_bytes():
            body += piece
            if seen is None and audio_starts(bytes(body)):
                seen = snapshot(services, job_id)
    assert seen is not None, "no audio arrived"
    return bytes(body), seen, headers


def decodes_to_audio(data: bytes, fmt: str) -> bool:
    """True when a prefix of a stream already decodes to some samples."""
    try:
        samples, _ = decode_audio(data, fmt)
    except EngineError:
        return False
    return samples.size > 0


def test_pcm_streams_by_default_while_the_job_renders(sdk: Any, services: Any) -> None:
    body, seen, headers = stream_speech(sdk, services, "pcm", lambda data: len(data) >= 2)
    assert_still_rendering(seen)
    assert headers["Content-Type"].startswith("audio/pcm") and "Content-Length" not in headers
    assert headers["X-Spool-Voice"] == "af_alloy" and "tts-1" in headers["X-Spool-Model"]
    job = services.jobs.wait(headers["X-Job-Id"], JOB_TIMEOUT)
    assert job.state == "succeeded" and job.kind == "speech"
    assert body == services.storage.get(job.result_key)


def test_mp3_streams_by_default_while_the_job_renders(sdk: Any, services: Any) -> None:
    body, seen, headers = stream_speech(sdk, services, "mp3", lambda data: decodes_to_audio(data, "mp3"))
    assert_still_rendering(seen)
    assert headers["Content-Type"] == "audio/mpeg"
    job = services.jobs.wait(headers["X-Job-Id"], JOB_TIMEOUT)
    samples, rate = decode_audio(body, "mp3")
    assert job.state == "succeeded"
    assert len(samples) / rate == pytest.approx(job.result_duration, abs=0.1)


def test_sse_events_with_instructions_and_gpt_4o_mini_tts(sdk: Any, services: Any) -> None:
    events = []
    seen: dict[str, Any] | None = None
    with sdk.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice={"id": "coral"},
        input=TEXT,
        instructions="Speak like a cheerful tour guide.",
        response_format="pcm",
        stream_format="sse",
    ) as response:
        headers = response.headers
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
                if seen is None:
                    seen = snapshot(services, headers["X-Job-Id"])
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["X-Spool-Instructions"].startswith("ignored") and headers["X-Spool-Voice"] == "af_heart"
    assert seen is not None
    assert_still_rendering(seen)
    *deltas, done = events
    assert deltas and {e["type"] for e in deltas} == {"speech.audio.delta"}
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == len(TEXT) and usage["output_tokens"] >= 2
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    job = services.jobs.wait(headers["X-Job-Id"], JOB_TIMEOUT)
    assert job.state == "succeeded" and audio == services.storage.get(job.result_key)
    assert np.frombuffer(audio, dtype="<i2").size / 24000 == pytest.approx(job.result_duration, abs=0.01)


def test_unknown_voice_raises_bad_request_naming_valid_voices(sdk: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.speech.create(model="tts-1", voice="nobody", input="Hello.")
    error = info.value
    assert error.status_code == 400 and error.code == "unknown_voice" and error.param == "voice"
    assert error.type == "invalid_request_error"
    message = error.body["message"]
    assert "'nobody'" in message and "af_heart" in message and "alloy" in message and "shimmer" in message


def test_speed_outside_the_engine_range_is_refused_not_clamped(sdk: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", speed=3.0)
    assert info.value.param == "speed" and "0.5" in info.value.body["message"]


def test_models_list_has_openai_names(sdk: Any) -> None:
    ids = {model.id for model in sdk.models.list()}
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "kokoro"} <= ids
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("whisper-1")


def test_a_job_cancelled_mid_stream_cuts_the_response_off_instead_of_ending_it(
    sdk: Any, services: Any, live_server: Any
) -> None:
    import requests

    body = bytearray()
    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT + " A fourth sentence leaves work to cancel.", response_format="pcm"
    ) as response:
        job_id = response.headers["X-Job-Id"]
        pieces = response.iter_bytes()
        # The SDK's HTTP stack (httpx or its fork) reports the cut-off body as a protocol error.
        with pytest.raises(Exception, match="incomplete chunked read") as cut:
            for piece in pieces:
                body += piece
                if len(body) >= 2 and snapshot(services, job_id)["state"] == "running":
                    cancelled = requests.delete(f"{live_server.url}/v1/jobs/{job_id}", timeout=10)
                    assert cancelled.status_code == 202, cancelled.text
                    break
            for piece in pieces:  # the rest: the response must not end as if it were whole
                body += piece
    assert type(cut.value).__name__ == "RemoteProtocolError"
    job = services.jobs.wait(job_id, JOB_TIMEOUT)
    assert job.state == "cancelled" and body

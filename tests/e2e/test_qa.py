"""Automatic QA through the service: a real worker, the real model and recogniser, Redis and S3 (moto)."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np
import pytest

from app.schemas import Book, Job
from engine.assets import MODEL_FILE
from engine.engine import _model_id
from engine.qa import qa_missing
from service.books import decode_checkpoint, encode_checkpoint, plan_segment, segment_digest
from tests.e2e.test_books import BOOK_TIMEOUT, wait_state
from tests.fixtures.service import wait_until

needs_qa = pytest.mark.skipif(qa_missing() is not None, reason=f"QA not installed: {qa_missing()}")

QA_TIMEOUT = 240.0

BOOK = (
    "Chapter One\n\nThe lighthouse keeper climbed the stairs.\n\n"
    "Chapter Two\n\nEvery evening he lit the great lamp. Ships passed safely in the night.\n"
)


def qa_done(client: Any, path: str) -> dict[str, Any]:
    """Poll a job or book until its QA has finished (the audio is delivered before QA runs)."""

    def finished() -> dict[str, Any] | None:
        body = client.get(path).get_json()
        return body if body.get("qa") and body["qa"]["state"] not in ("pending", "running") else None

    return wait_until(finished, QA_TIMEOUT, interval=0.25, what=f"QA of {path}")


@needs_qa
@pytest.mark.usefixtures("worker")
def test_a_clean_job_flags_nothing(client: Any) -> None:
    response = client.post("/v1/jobs", json={"text": "The lighthouse keeper climbed the stairs.", "qa": True})
    assert response.status_code == 202, response.data
    assert response.get_json()["qa"]["state"] == "pending"
    body = qa_done(client, f"/v1/jobs/{response.get_json()['id']}")
    assert body["state"] == "succeeded"
    qa = body["qa"]
    assert qa["state"] == "done", qa
    assert qa["segments_checked"] >= 1 and qa["flagged"] == [] and qa["qa_seconds"] > 0
    assert Job.model_validate(body)


def _upload(client: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/books",
        data={"file": (io.BytesIO(BOOK.encode()), "lamp.txt"), "voice": "af_heart", "qa": "true"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.data
    return response.get_json()


@needs_qa
@pytest.mark.usefixtures("worker")
def test_a_segment_replaced_with_silence_is_flagged_in_status_and_manifest(
    client: Any, services: Any, assets_path: Any
) -> None:
    first = wait_state(client, _upload(client)["id"], {"succeeded", "failed"})
    assert first["state"] == "succeeded", first
    assert first["qa"]["state"] == "done" and first["qa"]["flagged"] == [], first["qa"]
    checked = first["qa"]["segments_checked"]
    assert checked >= 3

    # The same book again reuses every checkpoint: silence one of them (the second chapter's first
    # sentence) and the new book's assembly, hence its QA, hears the silence.
    seg = next(s for s in services.books.plan(first["id"])["segments"] if s["text"].startswith("Every evening"))
    key = services.keys.segment_checkpoint(
        segment_digest(seg, "af_heart", 1.0, "en-us", _model_id(assets_path / MODEL_FILE))
    )
    chunk = decode_checkpoint(services.storage.get(key), plan_segment(seg))
    silent = dataclasses.replace(chunk, samples=np.zeros_like(chunk.samples))
    services.storage.put(key, encode_checkpoint(silent), "application/octet-stream")

    again = wait_state(client, _upload(client)["id"], {"succeeded", "failed"}, timeout=BOOK_TIMEOUT)
    assert again["state"] == "succeeded", again
    qa = again["qa"]
    assert qa["state"] == "done" and qa["segments_checked"] == checked
    assert len(qa["flagged"]) == 1, qa
    flagged = qa["flagged"][0]
    assert flagged["chapter"] == 2 and flagged["segment"] == seg["n"] and flagged["text"] == seg["text"]
    assert flagged["wer"] > qa["threshold"] and flagged["start"] > 0  # after the chapter's heading
    chapter_start = again["manifest"]["chapters"][1]["start"]
    assert flagged["book_start"] == pytest.approx(chapter_start + flagged["start"], abs=0.001)
    manifest = json.loads(client.get(f"/v1/books/{again['id']}/files/manifest.json").data)
    assert manifest["qa"] == qa == again["manifest"]["qa"]
    assert Book.model_validate(again)


def test_qa_is_refused_with_a_400_where_it_is_not_installed(client: Any, monkeypatch: Any) -> None:
    import service.qa

    monkeypatch.setattr(service.qa, "qa_missing", lambda: "the package(s) faster-whisper are not installed")
    response = client.post("/v1/jobs", json={"text": "Hello.", "qa": True})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "qa_not_installed"
    assert error["message"].startswith("QA is not installed on this deployment: ")
    book = client.post(
        "/v1/books",
        data={"file": (io.BytesIO(BOOK.encode()), "lamp.txt"), "qa": "true"},
        content_type="multipart/form-data",
    )
    assert book.status_code == 400 and book.get_json()["error"]["code"] == "qa_not_installed"


@needs_qa
@pytest.mark.parametrize(
    ("body", "field"),
    [({"qa": "maybe"}, "qa"), ({"qa": True, "voice": "ef_dora"}, "qa")],
)
def test_bad_qa_requests_say_what_is_wrong(client: Any, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/jobs", json={"text": "Hola.", **body})
    assert response.status_code == 400, response.data
    assert response.get_json()["error"]["details"]["field"] == field

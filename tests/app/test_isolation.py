"""Owner isolation on every route, with two API keys: whatever alice owns answers bob 404.

Jobs, audio, stream, events, speech, books, book files, zip, voices and status. Alice's job and
speech request are rendered by the session's worker; her book goes to a queue nobody consumes
(so it exists, unfinished: her own file requests answer 409, bob's 404, before any state check).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from config.settings import Settings

KEYS = {"alice-key-0001": "isolation-alice", "bob-key-00002": "isolation-bob"}
ALICE, BOB = ({"Authorization": f"Bearer {key}"} for key in KEYS)

#: Seconds alice's short job may take to render.
JOB_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def keyed(settings: Settings) -> Iterator[Any]:
    """The app with two keys, jobs rendered by the session's worker."""
    application = create_app(settings.replace(api_keys=KEYS))
    yield application
    application.extensions["spool"].close()


@pytest.fixture(scope="module")
def keyed_idle(settings: Settings) -> Iterator[Any]:
    """The same keys, books and jobs sent to a queue no worker consumes."""
    application = create_app(settings.replace(api_keys=KEYS, queue="idle-isolation"))
    yield application
    application.extensions["spool"].close()


@pytest.fixture(scope="module")
def alice_job(keyed: Any, worker: Any) -> dict[str, Any]:
    """Alice's finished job (audio stored, stream ended)."""
    client = keyed.test_client()
    response = client.post("/v1/jobs", json={"text": "Only for Alice.", "format": "wav"}, headers=ALICE)
    assert response.status_code == 202, response.data
    job = keyed.extensions["spool"].jobs.wait(response.get_json()["id"], JOB_TIMEOUT)
    assert job.state == "succeeded", job
    return client.get(f"/v1/jobs/{job.id}", headers=ALICE).get_json()


def _status(client: Any, path: str, headers: dict[str, str], method: str = "GET") -> int:
    """Status of a request, without reading a streamed body."""
    response = client.open(path, method=method, headers=headers, buffered=False)
    try:
        return response.status_code
    finally:
        response.close()


def test_job_routes_answer_another_owner_404(keyed: Any, alice_job: dict[str, Any]) -> None:
    client = keyed.test_client()
    job_id = alice_job["id"]
    paths = [
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/audio",
        f"/v1/jobs/{job_id}/stream",
        f"/v1/jobs/{job_id}/stream?format=pcm",
        f"/v1/jobs/{job_id}/events",
    ]
    for path in paths:
        assert _status(client, path, ALICE) == 200, path
        assert _status(client, path, BOB) == 404, path
        body = client.get(path, headers=BOB).get_json()
        assert body["error"]["code"] in ("job_not_found", "not_found"), path
    assert _status(client, f"/v1/jobs/{job_id}", BOB, "DELETE") == 404
    assert _status(client, f"/v1/jobs/{job_id}", ALICE) == 200  # untouched by bob's DELETE
    listed = client.get("/v1/jobs", headers=BOB).get_json()
    assert job_id not in {job["id"] for job in listed["data"]}
    assert job_id in {job["id"] for job in client.get("/v1/jobs", headers=ALICE).get_json()["data"]}


def test_speech_job_answers_another_owner_404(keyed: Any, worker: Any) -> None:
    client = keyed.test_client()
    response = client.post(
        "/v1/audio/speech", json={"input": "Alice speaks.", "stream": False, "response_format": "wav"}, headers=ALICE
    )
    assert response.status_code == 200, response.data
    job_id = response.headers["X-Job-Id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/audio", f"/v1/jobs/{job_id}/events"):
        assert _status(client, path, ALICE) == 200, path
        assert _status(client, path, BOB) == 404, path


def test_book_routes_answer_another_owner_404(keyed_idle: Any) -> None:
    client = keyed_idle.test_client()
    upload = {"file": (io.BytesIO(b"Chapter one.\n\nAlice reads her own book."), "alice.txt")}
    response = client.post("/v1/books", data=upload, headers=ALICE, content_type="multipart/form-data")
    assert response.status_code == 202, response.data
    book_id = response.get_json()["id"]
    assert _status(client, f"/v1/books/{book_id}", ALICE) == 200
    for path in (f"/v1/books/{book_id}/files/book.m4b", f"/v1/books/{book_id}/zip"):
        assert _status(client, path, ALICE) == 409, path  # hers, not finished
        assert _status(client, path, BOB) == 404, path  # not his: not even its state is told
    for path in (f"/v1/books/{book_id}", f"/v1/books/{book_id}/files/manifest.json", f"/v1/books/{book_id}/plan"):
        assert _status(client, path, BOB) == 404, path
    assert _status(client, f"/v1/books/{book_id}", BOB, "DELETE") == 404
    assert client.get(f"/v1/books/{book_id}", headers=ALICE).get_json()["state"] != "cancelled"
    listed = client.get("/v1/books", headers=BOB).get_json()
    assert book_id not in {book["id"] for book in listed["data"]}
    assert _status(client, f"/v1/books/{book_id}", ALICE, "DELETE") == 200


def test_voices_and_models_need_a_key_and_show_no_owner_data(keyed: Any) -> None:
    client = keyed.test_client()
    for path in ("/v1/voices", "/v1/models"):
        assert client.get(path).status_code == 401
        alice = client.get(path, headers=ALICE)
        bob = client.get(path, headers=BOB)
        assert alice.status_code == bob.status_code == 200
        assert alice.get_json() == bob.get_json()


def test_status_does_not_show_another_owners_jobs(keyed: Any, alice_job: dict[str, Any]) -> None:
    client = keyed.test_client()
    alice = client.get("/status", headers=ALICE).get_json()
    bob = client.get("/status", headers=BOB).get_json()
    assert alice["jobs"]["succeeded"] >= 1
    assert bob["jobs"]["succeeded"] == 0
    assert all(beat.get("current_job") in (None,) for beat in bob["workers"])
    assert not any("pid" in beat for beat in alice["workers"] + bob["workers"])

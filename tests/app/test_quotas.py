"""Quotas per key and stream caps through the HTTP API: each 429 with Retry-After, the lane refusal, releases.

The app here uses its own Redis key prefix and a queue no worker consumes, so its jobs stay queued and
its counters meet no other test's; the last test renders for real on the session worker.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from config.settings import Settings
from service.quotas import seconds_to_utc_midnight
from tests.fixtures.service import wait_until

KEYS = {
    "conc-key-0001": "conc",
    "chars-key-001": "chars",
    "lane-key-0001": "lane",
    "books-key-001": "books",
    "stream-key-01": "streamer",
    "speech-key-01": "speaker",
    "free-key-0001": "free",
    "free-key-0002": "free2",
}

QUOTAS = {
    "conc": {"max_concurrent_jobs": 2},
    "chars": {"max_chars_per_day": 30},
    "lane": {"allowed_lanes": ["normal"]},
    "books": {"max_books_in_flight": 1},
    "streamer": {"max_streams_per_key": 1},
    "speaker": {"max_concurrent_jobs": 1, "allowed_lanes": ["normal"]},
}


def auth(owner: str) -> dict[str, str]:
    key = next(k for k, v in KEYS.items() if v == owner)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def quota_app(settings: Settings) -> Iterator[Any]:
    """Keyed app with per-key quotas, its own key prefix, an idle queue, and 3 streams in all."""
    application = create_app(
        settings.replace(
            key_prefix="quota-test:",
            queue="quota-idle",
            api_keys=KEYS,
            key_quotas=json.dumps(QUOTAS),
            max_streams=3,
            max_streams_per_key=2,
        )
    )
    yield application
    application.extensions["spool"].close()


@pytest.fixture
def api(quota_app: Any) -> Any:
    return quota_app.test_client()


def assert_429(response: Any, limit: str, value: int, current: int) -> dict[str, Any]:
    """The response is a 429 naming ``limit`` with its value and current use, and a Retry-After."""
    assert response.status_code == 429, response.data
    assert int(response.headers["Retry-After"]) >= 1
    error = response.get_json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["message"]
    details = error["details"]
    assert (details["limit"], details["value"], details["current"]) == (limit, value, current), details
    assert details["retry_after"] == int(response.headers["Retry-After"])
    return error


def submit(api: Any, owner: str, text: str = "Hello there.", **fields: Any) -> Any:
    return api.post("/v1/jobs", json={"text": text, **fields}, headers=auth(owner))


def test_concurrent_jobs_429_then_released_by_cancel(api: Any) -> None:
    first = submit(api, "conc")
    second = submit(api, "conc")
    assert first.status_code == second.status_code == 202
    refused = submit(api, "conc")
    error = assert_429(refused, "max_concurrent_jobs", 2, 2)
    assert "concurrent" in error["message"]
    assert submit(api, "free").status_code == 202  # another key is not affected
    # Cancelling a queued job ends it: its slot is free at once.
    assert api.delete(f"/v1/jobs/{first.get_json()['id']}", headers=auth("conc")).status_code == 200
    assert submit(api, "conc").status_code == 202
    assert_429(submit(api, "conc"), "max_concurrent_jobs", 2, 2)


def test_idempotent_replay_is_not_charged(api: Any) -> None:
    headers = {**auth("chars"), "Idempotency-Key": "replay-me"}
    text = "Ten chars."  # 10 characters
    first = api.post("/v1/jobs", json={"text": text}, headers=headers)
    again = api.post("/v1/jobs", json={"text": text}, headers=headers)
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    svc = api.application.extensions["spool"]
    assert svc.quotas.usage("chars")["chars_today"] == 10


def test_characters_per_day_429_until_utc_midnight(api: Any) -> None:
    svc = api.application.extensions["spool"]
    used = svc.quotas.usage("chars")["chars_today"]  # the replay test may have run first
    text = "x" * (30 - used - 5) + " end."
    assert submit(api, "chars", text).status_code == 202
    refused = submit(api, "chars", "Over the limit.")
    error = assert_429(refused, "max_chars_per_day", 30, 30)
    assert error["details"]["requested"] == len("Over the limit.")
    assert abs(int(refused.headers["Retry-After"]) - seconds_to_utc_midnight()) <= 5
    assert "00:00 UTC" in error["message"]


def test_lane_not_allowed_is_403_naming_the_lanes(api: Any) -> None:
    refused = submit(api, "lane", priority="high")
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "lane_not_allowed"
    assert error["details"]["lane"] == "high" and error["details"]["allowed"] == ["normal"]
    assert "'high'" in error["message"] and "normal" in error["message"]
    assert submit(api, "lane", priority="normal").status_code == 202
    assert submit(api, "free", priority="high").status_code == 202  # the deployment allows high


def upload(api: Any, owner: str) -> Any:
    data = {"file": (io.BytesIO(b"Chapter 1\n\nA short book in flight."), "book.txt")}
    return api.post("/v1/books", data=data, headers=auth(owner), content_type="multipart/form-data")


def test_books_in_flight_429_then_released_by_cancel(api: Any) -> None:
    first = upload(api, "books")
    assert first.status_code == 202, first.data
    assert_429(upload(api, "books"), "max_books_in_flight", 1, 1)
    assert api.delete(f"/v1/books/{first.get_json()['id']}", headers=auth("books")).status_code == 200
    again = upload(api, "books")
    assert again.status_code == 202, again.data


@pytest.fixture(scope="module")
def quota_server(quota_app: Any) -> Iterator[str]:
    """The quota app over real HTTP (threaded), for streams held open side by side."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, quota_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def open_events(server: str, owner: str, job_id: str) -> http.client.HTTPResponse:
    """An SSE stream held open (status read, body not): it holds a stream slot until the job ends.

    Keep the response referenced: it owns the socket, and a collected one would hang up.
    """
    conn = http.client.HTTPConnection(server, timeout=30)
    conn.request("GET", f"/v1/jobs/{job_id}/events", headers=auth(owner))
    response = conn.getresponse()
    assert response.status == 200, response.read()
    return response


def test_open_streams_capped_per_key_and_in_all(api: Any, quota_server: str) -> None:
    svc = api.application.extensions["spool"]
    job = submit(api, "streamer").get_json()["id"]
    held = [open_events(quota_server, "streamer", job)]
    refused = api.get(f"/v1/jobs/{job}/stream", headers=auth("streamer"))
    assert_429(refused, "max_streams_per_key", 1, 1)
    # In all: 3 slots (SPOOL_MAX_STREAMS): the streamer holds one, "free" two (its own cap); "free2" is refused.
    jobs = {owner: submit(api, owner).get_json()["id"] for owner in ("free", "free2")}
    held += [open_events(quota_server, "free", jobs["free"]) for _ in range(2)]
    assert_429(api.get(f"/v1/jobs/{jobs['free2']}/events", headers=auth("free2")), "max_streams", 3, 3)
    # A stream that ends (here: its job is cancelled) gives its slot back.
    for owner, job_id in (("streamer", job), *jobs.items()):
        assert api.delete(f"/v1/jobs/{job_id}", headers=auth(owner)).status_code == 200
    wait_until(lambda: svc.quotas.open_streams() == 0, 20, what="every stream slot to be released")
    assert svc.quotas.open_streams("streamer") == 0
    wait_until(lambda: svc.quotas._local_streams == 0, 5, what="the process count to drop")
    for response in held:
        response.close()
    again = open_events(quota_server, "streamer", submit(api, "streamer").get_json()["id"])
    again.close()


def test_speech_429_in_openai_shape_and_lane_fallback(api: Any) -> None:
    svc = api.application.extensions["spool"]
    body = {"model": "tts-1", "input": "Hello.", "voice": "alloy", "stream": False}
    # The speaker may not use "high": its speech job goes to its first allowed lane instead.
    job = submit(api, "speaker").get_json()
    assert job["priority"] == "normal"
    refused = api.post("/v1/audio/speech", json=body, headers=auth("speaker"))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    error = refused.get_json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert error["details"]["limit"] == "max_concurrent_jobs"
    assert svc.quotas.open_streams("speaker") == 0  # the slot taken for the answer was given back


def test_openai_sdk_raises_rate_limit_error(quota_app: Any) -> None:
    openai = pytest.importorskip("openai")
    from werkzeug.serving import make_server

    client = quota_app.test_client()
    for _ in range(2):  # fill the speaker's one slot (its first job may have been submitted already)
        submit(client, "speaker")
    server = make_server("127.0.0.1", 0, quota_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sdk = openai.OpenAI(
            base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="speech-key-01", max_retries=0
        )
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
        assert caught.value.code == "rate_limit_exceeded"
        assert int(caught.value.response.headers["Retry-After"]) >= 1
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_concurrency_slot_released_when_a_job_succeeds(settings: Settings, worker: Any) -> None:
    """On the real worker: a key allowed one job at a time gets 429 while it renders, 202 once it is done."""
    keyed = create_app(
        settings.replace(
            api_keys={"solo-key-0001": "solo-q"},
            key_quotas=json.dumps({"solo-q": {"max_concurrent_jobs": 1}}),
        )
    )
    client = keyed.test_client()
    headers = {"Authorization": "Bearer solo-key-0001"}
    try:
        first = client.post("/v1/jobs", json={"text": "One at a time."}, headers=headers)
        assert first.status_code == 202
        assert_429(
            client.post("/v1/jobs", json={"text": "Too soon."}, headers=headers), "max_concurrent_jobs", 1, 1
        )
        job_id = first.get_json()["id"]
        wait_until(
            lambda: client.get(f"/v1/jobs/{job_id}", headers=headers).get_json()["state"] == "succeeded",
            120,
            interval=0.2,
            what="the first job to succeed",
        )
        second = client.post("/v1/jobs", json={"text": "Now it fits."}, headers=headers)
        assert second.status_code == 202, second.data
        second_id = second.get_json()["id"]
        wait_until(
            lambda: (
                client.get(f"/v1/jobs/{second_id}", headers=headers).get_json()["state"]
                in ("succeeded", "failed")
            ),
            120,
            interval=0.2,
            what="the second job to finish",
        )
    finally:
        keyed.extensions["spool"].close()

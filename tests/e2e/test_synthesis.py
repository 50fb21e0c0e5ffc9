"""End to end: the HTTP API, a real Celery worker process running the real model, Redis, and S3 (moto).

Texts are one short sentence each to keep the shared CPU free.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from typing import Any

import pytest

from engine.audio import decode_audio
from service.jobs import JobSpec
from service.render import run_synthesis

#: Longest wait for one short job on a busy 2-core machine.
JOB_TIMEOUT = 240.0

pytestmark = pytest.mark.usefixtures("worker")


def submit(client: Any, text: str, **fields: Any) -> dict[str, Any]:
    headers = fields.pop("headers", {})
    response = client.post("/v1/jobs", json={"text": text, **fields}, headers=headers)
    assert response.status_code == 202, response.data
    return response.get_json()


def finish(client: Any, services: Any, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
    """Wait for the job to end (event-driven, with a deadline) and return its JSON."""
    job = services.jobs.wait(job_id, timeout)
    assert job.is_terminal, f"job {job_id} still {job.state} after {timeout} s"
    return client.get(f"/v1/jobs/{job_id}").get_json()


def download(client: Any, job: dict[str, Any]) -> tuple[bytes, float]:
    """Fetch a finished job's audio and return it with its decoded duration in seconds."""
    response = client.get(f"/v1/jobs/{job['id']}/audio")
    assert response.status_code == 200, response.data
    data = response.data
    assert len(data) == job["result"]["size"] == int(response.headers["Content-Length"])
    samples, rate = decode_audio(data, job["format"])
    return data, len(samples) / rate


def test_submit_poll_download_decode(client: Any, services: Any) -> None:
    job = submit(client, "The job service renders this sentence.", format="wav")
    done = finish(client, services, job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"]["segments_done"] == done["progress"]["segments_total"] >= 1
    assert done["started_at"] and done["finished_at"] and done["attempts"] == 1
    _, duration = download(client, done)
    assert duration == pytest.approx(done["result"]["duration"], abs=0.01)
    assert 1.0 < duration < 8.0
    assert done["progress"]["audio_seconds"] == pytest.approx(duration, abs=0.05)
    # The stored object is where the storage says, in S3 through moto.
    assert services.storage.exists(services.keys.job_audio(job["id"], "wav"))


def test_mp3_through_the_openai_endpoint(client: Any) -> None:
    response = client.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": "Speech through the queue.",
            "voice": "nova",
            "response_format": "mp3",
            "stream": False,  # the whole file, with its duration in a header
        },
    )
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == "audio/mpeg"
    samples, rate = decode_audio(response.data, "mp3")
    assert len(samples) / rate == pytest.approx(float(response.headers["X-Audio-Duration"]), abs=0.08)
    job = client.get(f"/v1/jobs/{response.headers['X-Job-Id']}").get_json()
    assert job["kind"] == "speech" and job["priority"] == "high" and job["voice"] == "af_nova"


def test_idempotent_submission_renders_once(client: Any, services: Any) -> None:
    key = uuid.uuid4().hex
    first = submit(client, "Only once, please.", headers={"Idempotency-Key": key})
    second = submit(client, "Only once, please.", headers={"Idempotency-Key": key})
    assert first["id"] == second["id"]
    done = finish(client, services, first["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 1
    third = submit(client, "Only once, please.", headers={"Idempotency-Key": key})
    assert third["id"] == first["id"] and third["state"] == "succeeded"


def test_cancel_while_queued_never_runs(settings: Any, services: Any) -> None:
    """A job on a queue no worker consumes is cancelled, then its task is delivered: it must not render."""
    from app import create_app

    idle = create_app(settings.replace(queue="idle"))
    client = idle.test_client()
    job = submit(client, "This should never be spoken.")
    cancelled = client.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    # The broker message is still waiting; run the task body as the worker would when it arrives.
    engine_used = []

    def engine_factory() -> Any:
        engine_used.append(True)
        raise AssertionError("a cancelled job must not load or use the engine")

    assert run_synthesis(services, job["id"], engine_factory) is None
    assert not engine_used
    final = client.get(f"/v1/jobs/{job['id']}").get_json()
    assert final["state"] == "cancelled" and final["started_at"] is None and final["attempts"] == 0
    idle.extensions["spool"].close()


def test_cancel_while_running_stops_after_a_segment(client: Any, services: Any) -> None:
    text = (
        "First comes a short sentence. Then another one follows. A third sentence is here. "
        "And a fourth one ends it."
    )
    job_id = None
    pubsub = services.redis.pubsub(ignore_subscribe_messages=True)
    try:
        # Subscribe before submitting so the first progress event cannot be missed.
        spec_job, _ = services.jobs.create(JobSpec(text=text), owner="public", queue="cpu")
        job_id = spec_job.id
        pubsub.subscribe(services.keys.job_events(job_id))
        services.send_task("spool.synthesize", [job_id], queue="cpu", priority=3, task_id=job_id)
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            event = json.loads(message["data"])
            if event["type"] == "progress" and event["segments_done"] >= 1:
                break
        else:
            pytest.fail("no progress event")
        response = client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code in (200, 202)
    finally:
        pubsub.close()
    done = finish(client, services, job_id)
    assert done["state"] == "cancelled"
    total = done["progress"]["segments_total"]
    assert total >= 4 and 1 <= done["progress"]["segments_done"] < total
    assert client.get(f"/v1/jobs/{job_id}/audio").status_code == 409


SEQUENTIAL = [
    "The river bends gently past the old mill.",
    "A quiet wind moves across the green hills.",
    "Morning light falls softly on the wooden floor.",
    "The baker opens his shop before the sun.",
    "Children laugh as they run along the beach.",
]


def test_five_sequential_requests_are_consistent(client: Any, services: Any) -> None:
    """The seed bug: a second request seven times slower and truncated. Here all five match."""
    renders, durations, walls = [], [], []
    for text in SEQUENTIAL:
        started = time.perf_counter()
        job = submit(client, text, format="wav")
        done = finish(client, services, job["id"])
        walls.append(time.perf_counter() - started)
        assert done["state"] == "succeeded", done["error"]
        _, duration = download(client, done)
        assert duration == pytest.approx(done["result"]["duration"], abs=0.01)
        durations.append(duration)
        renders.append(done["result"]["render_seconds"])
    print(
        f"\nsequential render seconds: {[round(r, 2) for r in renders]}; "
        f"wall seconds: {[round(w, 2) for w in walls]}; audio seconds: {[round(d, 2) for d in durations]}"
    )
    # Eight or nine words each: complete audio has a similar length.
    assert max(durations) / min(durations) < 1.6
    median = statistics.median(renders)
    assert max(renders) <= 3 * median, renders


CONCURRENT = [
    "Yes.",
    "Cats sleep late.",
    "We walked home through the park.",
    "She opened the window to hear the birds.",
    "Every evening the old fisherman mended his nets by the wall.",
    "The library was silent except for pages turning and a clock ticking softly.",
    "After the storm passed, the villagers gathered in the square to count the fallen trees.",
    "Long before the railway came, merchants carried salt, cloth and copper over the high pass "
    "on patient mules.",
]


def test_eight_concurrent_submissions_get_their_own_audio(client: Any, services: Any, app: Any) -> None:
    ids: dict[int, str] = {}
    errors: list[Exception] = []
    barrier = threading.Barrier(len(CONCURRENT))

    def post(index: int, text: str) -> None:
        try:
            barrier.wait()
            ids[index] = submit(app.test_client(), text, format="mp3")["id"]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i, t)) for i, t in enumerate(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids.values())) == len(CONCURRENT)
    durations = []
    for index in range(len(CONCURRENT)):
        done = finish(client, services, ids[index])
        assert done["state"] == "succeeded", done["error"]
        assert done["text_preview"] == CONCURRENT[index][:120]
        _, duration = download(client, done)
        assert duration == pytest.approx(done["result"]["duration"], abs=0.08)
        durations.append(duration)
    words = [len(t.split()) for t in CONCURRENT]
    print(f"\nconcurrent: words {words}, audio seconds {[round(d, 2) for d in durations]}")
    # Each job's audio belongs to its own text: every text is a few words longer than the one
    # before, so its audio is longer too, and the pace stays within speech-like bounds.
    assert durations == sorted(durations)
    for count, duration in zip(words[1:], durations[1:], strict=True):
        assert 0.15 < duration / count < 0.8


def test_worker_heartbeat_and_status(client: Any, worker: Any) -> None:
    status = client.get("/status").get_json()
    assert status["queues"]["cpu"]["workers"] >= 1
    beat = next(w for w in status["workers"] if w["pid"] == worker.first.pid)
    assert beat["engine_ready"] and "cpu" in beat["queues"]


def test_webhook_receives_the_finished_job(client: Any, services: Any) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    arrived = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), json.loads(body)))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        job = submit(client, "Call me back.", webhook_url=f"http://127.0.0.1:{server.server_port}/done")
        done = finish(client, services, job["id"])
        assert done["state"] == "succeeded"
        assert arrived.wait(30), "webhook not called"
    finally:
        server.shutdown()
        thread.join(timeout=10)
    headers, body = received[0]
    assert body["id"] == job["id"] and body["state"] == "succeeded"
    assert body["result"]["duration"] == done["result"]["duration"]
    assert headers["X-Spool-Event"] == "job.succeeded" and "text" not in body

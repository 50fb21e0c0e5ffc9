"""Progressive playback over real HTTP: a real worker renders, listeners join at every moment.

One three-sentence job is rendered while seven listeners use it at once: one from
the start, one that joins after the first chunk, one that disconnects after the
first chunk and reconnects with ``from=1``, one that reads the header and then
nothing until the job has succeeded, an SSE listener, and, after the job ended,
late listeners served from Redis and then from storage. Each test checks one of
those against the stored result.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from engine.audio import decode_audio
from service.jobs import JobSpec

TEXT = "The first one is short. Here comes the second one. And this is the third."

#: Longest wait for the job (three short sentences on a busy 2-core machine).
JOB_TIMEOUT = 240.0

#: Socket timeout of the test's HTTP connections.
SOCKET_TIMEOUT = 240.0

WAV_HEADER = 44


class Http:
    """A minimal HTTP client on the live server that can read a response bit by bit."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80

    def open(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request and return the connection and the response (headers read, body not)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=SOCKET_TIMEOUT)
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        return conn, conn.getresponse()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A JSON request: (status, decoded body)."""
        conn, response = self.open(method, path, body)
        try:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def read_all(self, path: str, headers: dict[str, str] | None = None) -> bytes:
        """GET a resource and return its whole body (asserting 200)."""
        conn, response = self.open("GET", path, headers=headers)
        try:
            assert response.status == 200, response.read()
            return response.read()
        finally:
            conn.close()


def read_events(response: http.client.HTTPResponse) -> list[dict[str, Any]]:
    """Parse a Server-Sent Events body until the server closes it."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if "data" in current:
                current["data"] = json.loads(current["data"])
                events.append(current)
            current = {}
        elif line.startswith(":"):
            current.setdefault("comments", 0)
        else:
            name, _, value = line.partition(":")
            current[name] = value[1:] if value.startswith(" ") else value
    return events


def int16(data: bytes) -> np.ndarray:
    """Samples of a WAV stream or file as int16 (exact: both carry s16le)."""
    samples, rate = decode_audio(data, "wav")
    assert rate == 24000
    return np.round(samples * 32767).astype(np.int16)


@dataclass
class Run:
    """Everything the listeners of the shared job saw."""

    job_id: str
    stored: bytes = b""
    job: dict[str, Any] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    from_start: bytes = b""
    halfway: bytes = b""
    halfway_joined_while: str = ""
    reconnected: bytes = b""
    stalled: bytes = b""
    state_while_stalled: str = ""
    stalled_read_before_end: int = 0
    sse: list[dict[str, Any]] = field(default_factory=list)
    late_redis: bytes = b""
    late_storage: bytes = b""
    late_storage_from_2: bytes = b""
    sse_resumed: list[dict[str, Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


class Listener(threading.Thread):
    """A thread running one listener; exceptions are kept for the test to re-raise."""

    def __init__(self, run: Run, target: Any, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.run_state = run
        self.target_fn = target

    def run(self) -> None:
        try:
            self.target_fn()
        except BaseException as exc:  # surfaced by the tests
            self.run_state.errors.append(exc)


@pytest.fixture(scope="module")
def run(worker: Any, live_server: Any, services: Any) -> Iterator[Run]:
    """Render the shared job with every kind of listener attached; collect what each received."""
    client = Http(live_server.url)
    status, job = client.json("POST", "/v1/jobs", {"text": TEXT, "format": "wav"})
    assert status == 202, job
    result = Run(job["id"])
    job_id = job["id"]
    path = f"/v1/jobs/{job_id}/stream?format=wav"
    first_chunk = threading.Event()
    job_done = threading.Event()
    stalled_has_header = threading.Event()

    def watch() -> None:
        # The replayable stream itself tells when chunk 0 exists (no race with a late subscription).
        for event in services.streams.events(job_id, timeout=JOB_TIMEOUT, audio=False):
            if event.type == "chunk":
                result.chunks.append(
                    {"seq": event.seq, "offset": event.offset, "samples": event.samples, **event.meta}
                )
                first_chunk.set()

    def from_start() -> None:
        result.from_start = client.read_all(path)

    def halfway() -> None:
        assert first_chunk.wait(JOB_TIMEOUT)
        result.halfway_joined_while = services.jobs.get(job_id).state
        result.halfway = client.read_all(path)

    def reconnect() -> None:
        assert first_chunk.wait(JOB_TIMEOUT)
        conn, response = client.open("GET", path)
        try:
            first = response.read(WAV_HEADER + 2 * result.chunks[0]["samples"])
        finally:
            conn.close()  # hang up mid-stream, as a dropped phone connection would
        rest = client.read_all(path + "&from=1")
        result.reconnected = first + rest[WAV_HEADER:]

    def stalled() -> None:
        conn, response = client.open("GET", path)
        try:
            header = response.read(WAV_HEADER)
            stalled_has_header.set()
            assert job_done.wait(JOB_TIMEOUT)
            result.stalled = header + response.read()
        finally:
            conn.close()

    def sse() -> None:
        conn, response = client.open("GET", f"/v1/jobs/{job_id}/events")
        try:
            assert response.status == 200
            assert response.getheader("Content-Type", "").startswith("text/event-stream")
            result.sse = read_events(response)
        finally:
            conn.close()

    threads = [
        Listener(result, fn, fn.__name__) for fn in (watch, from_start, halfway, reconnect, stalled, sse)
    ]
    for thread in threads:
        thread.start()
    assert stalled_has_header.wait(JOB_TIMEOUT), "the stream did not answer with its header at once"
    final = services.jobs.wait(job_id, JOB_TIMEOUT)
    result.state_while_stalled = final.state
    job_done.set()
    for thread in threads:
        thread.join(JOB_TIMEOUT)
        assert not thread.is_alive(), f"listener {thread.name} never finished"
    result.job = client.json("GET", f"/v1/jobs/{job_id}")[1]
    result.stored = client.read_all(f"/v1/jobs/{job_id}/audio")
    # Late listeners: while Redis still holds the stream, then from storage once it is gone.
    result.late_redis = client.read_all(path)
    services.redis.delete(services.keys.job_chunks(job_id))
    result.late_storage = client.read_all(path)
    result.late_storage_from_2 = client.read_all(path + "&from=2")
    conn, response = client.open("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "0"})
    try:
        result.sse_resumed = read_events(response)
    finally:
        conn.close()
    yield result


def test_every_listener_got_no_errors(run: Run) -> None:
    assert not run.errors, run.errors
    assert run.job["state"] == "succeeded", run.job["error"]
    assert len(run.chunks) == run.job["progress"]["segments_total"] == 3


def test_listener_from_the_start_gets_exactly_the_stored_result(run: Run) -> None:
    assert np.array_equal(int16(run.from_start), int16(run.stored))
    assert run.from_start[WAV_HEADER:] == run.stored[WAV_HEADER:]


def test_listener_joining_halfway_gets_exactly_the_stored_result(run: Run) -> None:
    assert np.array_equal(int16(run.halfway), int16(run.stored))


def test_reconnecting_with_from_gets_exactly_the_rest(run: Run) -> None:
    assert np.array_equal(int16(run.reconnected), int16(run.stored))


def test_listeners_after_the_end_get_exactly_the_stored_result(run: Run) -> None:
    assert np.array_equal(int16(run.late_redis), int16(run.stored))
    assert np.array_equal(int16(run.late_storage), int16(run.stored))
    skip = run.chunks[2]["offset"]
    assert np.array_equal(int16(run.late_storage_from_2), int16(run.stored)[skip:])


def test_a_stalled_listener_does_not_delay_the_job(run: Run) -> None:
    # The job reached succeeded while this listener had read nothing past the header.
    assert run.state_while_stalled == "succeeded"
    assert np.array_equal(int16(run.stalled), int16(run.stored))


def test_the_last_chunk_is_clean_speech(run: Run) -> None:
    samples = int16(run.stored).astype(np.float64) / 32767
    last = run.chunks[-1]
    start = last["offset"]
    speech = samples[start : start + int(last["speech_end"] * 24000)]
    tail = samples[-int(0.05 * 24000) :]
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    assert rms(speech) > 0.02, "the last sentence is (nearly) silent"
    assert rms(tail) < 0.01, "the last 50 ms are not quiet: noise or a cut-off word"
    assert len(samples) == start + last["samples"]


def test_sse_delivers_state_progress_chunks_and_end_in_order(run: Run) -> None:
    kinds = [e.get("event") for e in run.sse]
    assert kinds[0] == "state"
    assert {"progress", "chunk", "end"} <= set(kinds)
    chunks = [e for e in run.sse if e.get("event") == "chunk"]
    assert [c["data"]["seq"] for c in chunks] == [0, 1, 2]
    assert [int(c["id"]) for c in chunks] == [0, 1, 2]
    end = kinds.index("end")
    assert end > kinds.index("chunk") and all(k != "chunk" for k in kinds[end:])
    assert kinds[-1] == "state" and run.sse[-1]["data"]["state"] == "succeeded"
    progress = [e["data"] for e in run.sse if e.get("event") == "progress"]
    assert progress[-1]["percent"] == 100.0
    assert progress[-1]["segments_done"] == progress[-1]["segments_total"] == 3
    # Captions: each chunk's text span is the original text, its words on the job's timeline.
    for caption, stored in zip((c["data"] for c in chunks), run.chunks, strict=True):
        span = caption["segment"]
        assert TEXT[span["start"] : span["end"]] == span["text"]
        assert caption["offset"] == stored["offset"]
        times = [t for w in caption["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times)
        assert all(caption["start_time"] - 1e-3 <= t <= caption["end_time"] + 1e-3 for t in times)
    assert chunks[1]["data"]["start_time"] == pytest.approx(chunks[0]["data"]["end_time"], abs=2e-3)


def test_sse_resumes_after_last_event_id(run: Run) -> None:
    kinds = [e.get("event") for e in run.sse_resumed]
    assert kinds[0] == "state"
    chunks = [e["data"]["seq"] for e in run.sse_resumed if e.get("event") == "chunk"]
    assert chunks == [1, 2]
    assert kinds[-1] == "end"


def test_speech_endpoint_streams_the_same_path(worker: Any, live_server: Any, services: Any) -> None:
    client = Http(live_server.url)
    conn, response = client.open(
        "POST",
        "/v1/audio/speech",
        {
            "model": "tts-1",
            "input": "Streaming speech.",
            "voice": "af_heart",
            "response_format": "wav",
            "stream": True,
        },
    )
    try:
        assert response.status == 200
        assert response.getheader("Content-Type") == "audio/wav"
        assert response.getheader("Cache-Control") == "no-store"
        body = response.read()
    finally:
        conn.close()
    job_id = response.getheader("X-Job-Id")
    job = services.jobs.wait(job_id, JOB_TIMEOUT)
    assert job.state == "succeeded"
    stored = services.storage.get(job.result_key)
    assert np.array_equal(int16(body), int16(stored))


@pytest.mark.parametrize(
    ("query", "code"),
    [("format=m4a", "invalid_request"), ("from=-1", "invalid_request"), ("from=x", "invalid_request")],
)
def test_bad_stream_requests_are_4xx_json(live_server: Any, services: Any, query: str, code: str) -> None:
    job, _ = services.jobs.create(JobSpec(text="Not rendered."), owner="public", queue="idle")
    status, body = Http(live_server.url).json("GET", f"/v1/jobs/{job.id}/stream?{query}")
    assert status == 400 and body["error"]["code"] == code
    assert body["error"]["message"]


def test_unknown_and_failed_jobs(live_server: Any, services: Any) -> None:
    client = Http(live_server.url)
    status, body = client.json("GET", "/v1/jobs/" + "0" * 32 + "/stream")
    assert status == 404 and body["error"]["code"] == "job_not_found"
    status, body = client.json("GET", "/v1/jobs/" + "0" * 32 + "/events")
    assert status == 404
    job, _ = services.jobs.create(JobSpec(text="Not rendered."), owner="public", queue="idle")
    services.jobs.fail(job.id, "internal_error", "Broken on purpose.")
    status, body = client.json("GET", f"/v1/jobs/{job.id}/stream")
    assert status == 409 and "failed" in body["error"]["message"]
    conn, response = client.open("GET", f"/v1/jobs/{job.id}/events")
    try:
        events = read_events(response)
    finally:
        conn.close()
    assert [e["event"] for e in events] == ["state", "error"]
    assert events[1]["data"]["message"] == "Broken on purpose."


def test_player_page_and_voices_are_served(live_server: Any) -> None:
    client = Http(live_server.url)
    page = client.read_all("/").decode()
    assert '<script src="/web/player.js"' in page and "<textarea" in page
    for name in ("player.js", "style.css"):
        assert client.read_all(f"/web/{name}")
    status, _ = client.json("GET", "/web/../app/stream.py")
    assert status == 404
    status, body = client.json("GET", "/v1/voices")
    assert status == 200 and body["default"] == "af_heart"
    heart = next(v for v in body["data"] if v["name"] == "af_heart")
    assert heart["language"] == "en-us" and heart["gender"] == "female" and heart["preview_text"]
    assert len([v for v in body["data"] if v["engine"] == "kokoro"]) == 54
    # OpenAI's names are listed where a client looks for voices, each with the Kokoro voice behind it.
    assert body["openai_voices"]["alloy"] == "af_alloy" and body["openai_voices"]["coral"] == "af_heart"
    assert "coral" in heart["openai_names"]
    named = {n for v in body["data"] for n in v["openai_names"]}
    assert named == set(body["openai_voices"]) and {"alloy", "shimmer", "verse"} <= named

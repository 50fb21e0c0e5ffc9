"""Late listeners of a running job whose first chunks were trimmed catch up from the stored parts.

A worker of its own renders with a byte bound of about one chunk (SPOOL_STREAM_MAX_BYTES), its parts
going to S3 (moto). Once the bound has trimmed chunks and while the job still runs, an audio stream
(raw PCM) and an SSE stream join from chunk 0 over real HTTP: the audio is byte-identical to the
stored PCM and the job's WAV, the captions are every chunk once, in order, and the parts are gone
once the job has succeeded.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from app import create_app
from config.settings import Settings
from engine.audio import decode_audio
from tests.app.test_stream_api import Http, read_events
from tests.fixtures.service import wait_until

TEXT = "One, two. Three, four. Five, six. Seven, eight. Nine, ten. Eleven, twelve."

#: PCM bytes the live stream may hold: about one chunk of this text.
BOUND = 60_000

QUEUE = "catchup"

JOB_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def bounded(settings: Settings, worker_pool: Any) -> Iterator[Any]:
    """An app and a worker of their own (their own queue) with the small byte bound."""
    # The session's key prefix, so the pool sees the worker's heartbeat; a queue only this worker consumes.
    own = settings.replace(queue=QUEUE, worker_queues=(QUEUE,), stream_max_bytes=BOUND)
    process = worker_pool.start(name=f"catchup-{uuid.uuid4().hex[:6]}", queues=(QUEUE,), env=own.to_env())
    application = create_app(own)
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield application.extensions["spool"], Http(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join(timeout=10)
        worker_pool.stop(process)
        application.extensions["spool"].close()


def test_late_listeners_of_a_trimmed_running_job_get_everything(bounded: Any) -> None:
    svc, http = bounded
    status, job = http.json("POST", "/v1/jobs", {"text": TEXT, "format": "wav"})
    assert status == 202, job
    job_id = job["id"]
    # Join once the bound has trimmed at least two chunks (they are in parts now), the job still running.
    wait_until(lambda: svc.streams.trimmed_before(job_id) >= 2, JOB_TIMEOUT, interval=0.02, what="trimming")
    joined_while = svc.jobs.get(job_id).state
    got: dict[str, Any] = {}

    def audio() -> None:
        got["pcm"] = http.read_all(f"/v1/jobs/{job_id}/stream?format=pcm")

    def events() -> None:
        conn, response = http.open("GET", f"/v1/jobs/{job_id}/events")
        try:
            got["sse"] = read_events(response)
        finally:
            conn.close()

    threads = [threading.Thread(target=audio), threading.Thread(target=events)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOB_TIMEOUT)
    assert joined_while == "running"  # the catch-up came from parts, not from the finished replay
    final = svc.jobs.get(job_id)
    assert final.state == "succeeded", (final.error_code, final.error_message)

    stored_pcm = svc.storage.get(svc.streams.replay_keys(job_id)[0])
    index = json.loads(svc.storage.get(svc.streams.replay_keys(job_id)[1]))
    assert len(index["chunks"]) >= 5
    assert got["pcm"] == stored_pcm  # byte-identical: no gap, no overlap
    samples, rate = decode_audio(svc.storage.get(final.result_key), "wav")
    assert rate == 24000
    assert np.array_equal(np.round(samples * 32767).astype("<i2").tobytes(), stored_pcm)

    captions = [e["data"] for e in got["sse"] if e.get("event") == "chunk"]
    assert [(c["seq"], c["offset"], c["samples"]) for c in captions] == [
        (row["seq"], row["offset"], row["bytes"] // 2) for row in index["chunks"]
    ]
    assert not [e for e in got["sse"] if e.get("event") == "error"]
    assert svc.storage.list(svc.streams.parts_prefix(job_id)) == []

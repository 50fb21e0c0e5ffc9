"""The byte bound of a job's chunk stream (SPOOL_STREAM_MAX_BYTES) on a real render.

The job is rendered in this process by the real engine through ``run_synthesis``, with a bound of
about two chunks: the live stream never holds more, a listener that keeps up still hears every chunk,
and once the job has succeeded a late listener replays the trimmed chunks from storage (S3 via moto).
``run_synthesis`` stores the trimmed chunks as parts while the job runs, and drops them at its end.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import Settings
from service.jobs import JobSpec
from service.render import run_synthesis
from service.services import Services

TEXT = "One, two. Three, four. Five, six. Seven, eight."

#: Bytes of PCM the live stream may hold: about 1.7 seconds of 24 kHz speech.
BOUND = 80_000


@pytest.fixture
def bounded(settings: Settings) -> Iterator[Services]:
    svc = Services(settings.replace(key_prefix=f"b{uuid.uuid4().hex[:8]}:", stream_max_bytes=BOUND))
    yield svc
    for key in svc.redis.scan_iter(match=svc.keys.prefix + "*"):
        svc.redis.delete(key)
    svc.close()


def stream_bytes(svc: Services, job_id: str) -> int:
    """PCM bytes actually in the job's Redis stream now."""
    entries = svc.redis.xrange(svc.keys.job_chunks(job_id))
    return sum(len(fields.get(b"pcm", b"")) for _, fields in entries)


def test_byte_bound_holds_for_a_real_render(bounded: Services, engine: Any) -> None:
    svc = bounded
    job, _ = svc.jobs.create(JobSpec(text=TEXT, format="wav"), owner="public", queue="bounded-idle")
    heard: list[Any] = []
    peak = [0]
    done = threading.Event()

    def listen() -> None:  # a listener that keeps up, from the first chunk on
        heard.extend(svc.streams.events(job.id, 0, storage=svc.storage, timeout=120))

    def watch() -> None:  # what the stream holds, sampled while the job renders
        while not done.is_set():
            peak[0] = max(peak[0], stream_bytes(svc, job.id))
            done.wait(0.005)

    threads = [threading.Thread(target=listen), threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    try:
        key = run_synthesis(svc, job.id, lambda: engine)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=120)
    final = svc.jobs.get(job.id)
    assert key and final.state == "succeeded", (final.error_code, final.error_message)
    total = final.segments_total
    assert total and total >= 4

    # The listener that kept up heard every chunk in order, then the end.
    chunks = [e for e in heard if e.type == "chunk"]
    assert [e.seq for e in chunks] == list(range(total)), [(e.type, e.seq, dict(e.meta)) for e in heard]
    assert heard[-1].type == "end"
    largest = max(len(e.pcm) for e in chunks)
    everything = sum(len(e.pcm) for e in chunks)
    assert everything > 1.5 * BOUND  # the bound really had to trim

    # The live stream stayed within the bound (one chunk larger than it is kept whole) and says what it trimmed.
    assert peak[0] <= max(BOUND, largest), (peak[0], BOUND, largest)
    assert stream_bytes(svc, job.id) == svc.streams.held_bytes(job.id) <= max(BOUND, largest)
    first_kept = svc.streams.trimmed_before(job.id)
    assert 0 < first_kept < total
    # While it ran, the trimmed chunks were stored as parts (tests/service/test_stream_parts.py); they
    # went once the whole replay was stored, from which a late listener now replays.
    assert svc.storage.list(svc.streams.parts_prefix(job.id)) == [] and not svc.streams.parts(job.id)
    svc.streams.check_replayable(job.id, 0, "running")  # its end entry is written: no 410
    svc.streams.check_replayable(job.id, 0, "succeeded")

    # A late listener from chunk 0: the trimmed chunks come from the stored replay, bytes identical.
    late = list(svc.streams.events(job.id, 0, follow=False, storage=svc.storage))
    assert [e.seq for e in late if e.type == "chunk"] == list(range(total))
    assert b"".join(e.pcm for e in late if e.type == "chunk") == b"".join(e.pcm for e in chunks)
    assert late[-1].type == "end" and late[-1].meta.get("replayed_from") == "storage"
    assert svc.storage.size(svc.streams.replay_keys(job.id)[0]) == everything

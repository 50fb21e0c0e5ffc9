"""The chunk stream against the real Redis, with chunks rendered by the real engine.

Each test gets a key prefix of its own, so nothing leaks between tests; the chunks
come from one short render shared by the module.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis as redis_lib

from engine.audio import decode_audio, to_pcm16
from engine.exceptions import InvalidTextError
from service.jobs import JobSpec, JobStore
from service.keys import Keys
from service.storage import LocalStorage
from service.stream import ChunkStream, StreamClosedError, StreamEvent, iter_encoded

TEXT = "Streams keep every chunk. Late listeners replay them."

#: Times the slow-reader test publishes the whole render while its reader sits idle.
ROUNDS = 40

#: Longest wait for a reader thread to see something that was just published.
WAIT = 30.0


@pytest.fixture(scope="module")
def chunks(engine: Any) -> list[Any]:
    """Real chunks of a two-sentence render."""
    rendered = list(engine.stream(TEXT, voice="af_heart"))
    assert len(rendered) >= 2
    return rendered


@dataclasses.dataclass
class Setup:
    """A chunk stream, a job store and storage under a key prefix of the test's own."""

    redis: redis_lib.Redis
    keys: Keys
    jobs: JobStore
    streams: ChunkStream
    storage: LocalStorage

    def running_job(self) -> str:
        """A job in the running state (as the worker leaves it while rendering)."""
        job, _ = self.jobs.create(JobSpec(text=TEXT), owner="public")
        assert self.jobs.start(job.id, worker="test") is not None
        return job.id


@pytest.fixture
def setup(redis_client: redis_lib.Redis, tmp_path: Path) -> Iterator[Setup]:
    keys = Keys(f"t{uuid.uuid4().hex[:8]}:")
    yield Setup(
        redis_client,
        keys,
        JobStore(redis_client, keys, ttl=600),
        ChunkStream(redis_client, keys, maxlen=1000, ttl=120, block_ms=200),
        LocalStorage(tmp_path / "storage"),
    )
    for key in redis_client.scan_iter(match=keys.prefix + "*"):
        redis_client.delete(key)


def publish_all(s: Setup, job_id: str, chunks: list[Any]) -> list[int]:
    """Publish every chunk and return their sequence numbers."""
    return [s.streams.publish(job_id, chunk) for chunk in chunks]


def finish(s: Setup, job_id: str, chunks: list[Any]) -> None:
    """End the stream and mark the job succeeded, as the worker does."""
    samples = sum(len(c.samples) for c in chunks)
    s.streams.finish(job_id, s.storage, {"segments": len(chunks), "samples": samples, "sample_rate": 24000})
    assert s.jobs.succeed(job_id, {"result_key": "jobs/x/audio.wav"})


def pcm_of(chunks: list[Any]) -> bytes:
    return b"".join(to_pcm16(c.samples) for c in chunks)


def test_publish_then_replay_in_order(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    assert publish_all(setup, job_id, chunks) == list(range(len(chunks)))
    finish(setup, job_id, chunks)
    events = list(setup.streams.events(job_id, follow=False))
    assert [e.type for e in events] == ["chunk"] * len(chunks) + ["end"]
    assert [e.seq for e in events] == list(range(len(chunks) + 1))
    offset = 0
    for event, chunk in zip(events, chunks, strict=False):
        assert event.pcm == to_pcm16(chunk.samples)
        assert event.rate == chunk.sample_rate == 24000
        assert event.offset == offset
        offset += len(chunk.samples)
        assert event.meta["segment"]["text"] == chunk.segment.text
        assert (event.meta["segment"]["start"], event.meta["segment"]["end"]) == (
            chunk.segment.start,
            chunk.segment.end,
        )
        assert [w["word"] for w in event.meta["words"]] == [w.word for w in chunk.words]
        # Captions are on the job's timeline.
        caption = event.caption()
        assert caption["start_time"] == pytest.approx(event.offset / 24000, abs=1e-3)
        if caption["words"]:
            assert caption["words"][0]["start"] >= caption["start_time"]
    assert events[-1].meta["segments"] == len(chunks)
    assert events[-1].offset == offset


def test_from_n_gives_exactly_the_rest(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    publish_all(setup, job_id, chunks)
    finish(setup, job_id, chunks)
    rest = list(setup.streams.events(job_id, 1, follow=False))
    assert [e.seq for e in rest] == list(range(1, len(chunks) + 1))
    assert b"".join(e.pcm for e in rest) == pcm_of(chunks[1:])
    beyond = list(setup.streams.events(job_id, len(chunks) + 5, follow=False))
    assert [e.type for e in beyond] == ["end"]


def test_wake_up_carries_seq_span_and_timeline(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    pubsub = setup.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(setup.keys.job_events(job_id))
    try:
        publish_all(setup, job_id, chunks[:2])
        messages = []
        deadline = time.monotonic() + WAIT
        while len(messages) < 2 and time.monotonic() < deadline:
            # None comes back for the (ignored) subscribe confirmation too: keep reading.
            message = pubsub.get_message(timeout=1.0)
            if message is not None:
                messages.append(json.loads(message["data"]))
        assert len(messages) == 2, "the wake-ups were not published"
    finally:
        pubsub.close()
    first, second = messages
    assert (first["type"], first["seq"], first["start_time"]) == ("chunk", 0, 0.0)
    assert second["seq"] == 1
    assert second["offset"] == len(chunks[0].samples)
    assert second["start_time"] == pytest.approx(len(chunks[0].samples) / 24000, abs=1e-5)
    assert second["segment"]["text"] == chunks[1].segment.text
    assert len(second["words"]) == len(chunks[1].words)


def test_reset_starts_clean(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    publish_all(setup, job_id, chunks)
    setup.streams.reset(job_id)
    assert not setup.redis.exists(setup.keys.job_chunks(job_id))
    assert setup.streams.publish(job_id, chunks[1]) == 0
    (event,) = setup.streams.events(job_id, follow=False)
    assert (event.seq, event.offset, event.pcm) == (0, 0, to_pcm16(chunks[1].samples))


def test_stream_is_bounded_and_expires(setup: Setup, chunks: list[Any]) -> None:
    small = ChunkStream(setup.redis, setup.keys, maxlen=20, ttl=45)
    job_id = setup.running_job()
    tiny = dataclasses.replace(chunks[0], samples=chunks[0].samples[:480])
    for _ in range(300):
        small.publish(job_id, tiny)
    key = setup.keys.job_chunks(job_id)
    assert 0 < setup.redis.ttl(key) <= 45
    # MAXLEN ~ trims whole radix-tree nodes, so the length stays near the bound, never near 300.
    assert 20 <= setup.redis.xlen(key) < 300
    events = list(small.events(job_id, 0, follow=False))
    assert events[0].type == "error" and events[0].meta["code"] == "stream_trimmed"
    last = list(small.events(job_id, 299, follow=False))
    assert [e.seq for e in last] == [299]


def test_replay_from_storage_after_the_stream_is_gone(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    publish_all(setup, job_id, chunks)
    finish(setup, job_id, chunks)
    live = list(setup.streams.events(job_id, follow=False))
    setup.redis.delete(setup.keys.job_chunks(job_id))
    stored = list(setup.streams.events(job_id, storage=setup.storage))
    assert [(e.type, e.seq, e.offset, e.pcm) for e in stored[:-1]] == [
        (e.type, e.seq, e.offset, e.pcm) for e in live[:-1]
    ]
    assert stored[-1].type == "end" and stored[-1].seq == len(chunks)
    assert [e.meta["segment"] for e in stored[:-1]] == [e.meta["segment"] for e in live[:-1]]
    tail = list(setup.streams.events(job_id, len(chunks) - 1, storage=setup.storage))
    assert [e.seq for e in tail] == [len(chunks) - 1, len(chunks)]
    assert tail[0].pcm == to_pcm16(chunks[-1].samples)
    captions = list(setup.streams.events(job_id, 0, storage=setup.storage, audio=False))
    assert [e.samples for e in captions[:-1]] == [len(c.samples) for c in chunks]
    assert all(e.pcm == b"" for e in captions)


def test_slow_reader_does_not_delay_publishing(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    reader = setup.streams.events(job_id)
    setup.streams.publish(job_id, chunks[0])
    assert next(reader).seq == 0  # the reader is live, then consumes nothing while many more arrive
    idle = setup.redis.pubsub()
    idle.subscribe(setup.keys.job_events(job_id))  # a subscriber that never reads its messages
    try:
        for _ in range(ROUNDS):
            publish_all(setup, job_id, chunks)
        finish(setup, job_id, chunks * ROUNDS)
    finally:
        idle.close()
    rest = list(reader)
    assert [e.seq for e in rest] == list(range(1, 2 + ROUNDS * len(chunks)))
    assert rest[-1].type == "end"


def test_a_waiting_reader_gets_the_first_chunk_of_a_queued_job(setup: Setup, chunks: list[Any]) -> None:
    job, _ = setup.jobs.create(JobSpec(text=TEXT), owner="public")
    got: list[StreamEvent] = []
    first = threading.Event()

    def read() -> None:
        for event in setup.streams.events(job.id, timeout=WAIT):
            got.append(event)
            first.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    setup.jobs.start(job.id, worker="test")
    setup.streams.reset(job.id)
    setup.streams.publish(job.id, chunks[0])
    assert first.wait(WAIT), "the reader never saw the first chunk"
    setup.streams.publish(job.id, chunks[1])
    finish(setup, job.id, chunks[:2])
    thread.join(WAIT)
    assert not thread.is_alive()
    assert [e.type for e in got] == ["chunk", "chunk", "end"]


def test_failure_and_cancel_end_the_stream(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    setup.streams.publish(job_id, chunks[0])
    setup.jobs.fail(job_id, "invalid_text", "No speakable text.")
    setup.streams.fail(job_id, InvalidTextError("No speakable text."))
    events = list(setup.streams.events(job_id, timeout=WAIT))
    assert [e.type for e in events] == ["chunk", "error"]
    assert events[-1].meta == {"code": "invalid_text", "message": "No speakable text."}
    with pytest.raises(StreamClosedError):
        setup.streams.publish(job_id, chunks[1])
    # A job cancelled while queued never had a stream: readers end at once with the reason.
    queued, _ = setup.jobs.create(JobSpec(text=TEXT), owner="public")
    setup.jobs.request_cancel(queued.id)
    (event,) = setup.streams.events(queued.id, timeout=WAIT)
    assert event.type == "error" and event.meta["code"] == "cancelled"


def test_encoded_streams_match_the_samples(setup: Setup, chunks: list[Any]) -> None:
    job_id = setup.running_job()
    publish_all(setup, job_id, chunks)
    finish(setup, job_id, chunks)
    expected = np.frombuffer(pcm_of(chunks), dtype="<i2")
    wav = b"".join(iter_encoded(setup.streams.events(job_id), "wav", 24000))
    samples, rate = decode_audio(wav, "wav")
    assert rate == 24000
    assert np.array_equal(np.round(samples * 32767).astype(np.int16), expected)
    mp3 = b"".join(iter_encoded(setup.streams.events(job_id), "mp3", 24000))
    decoded, _ = decode_audio(mp3, "mp3")
    # MP3 adds encoder delay and padding, never more than a few frames.
    assert abs(len(decoded) - len(expected)) < 4 * 1152

"""Chunks the byte bound trims from a running job's stream are stored as parts and replayed from them.

Real chunks (one render by the real engine) are published step by step as the worker would, with a
bound of about one chunk and S3 (moto) for the parts, so the test decides exactly when the late
listener reads, when more chunks are trimmed, and when the job finishes and drops its parts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import Settings
from engine.audio import to_pcm16
from service.jobs import JobSpec
from service.services import Services
from service.stream import StreamEvent, StreamGapError

TEXT = "One, two. Three, four. Five, six. Seven, eight. Nine, ten. Eleven, twelve."

#: PCM bytes the live stream may hold: about one chunk of this text.
BOUND = 60_000


@pytest.fixture(scope="module")
def chunks(engine: Any) -> list[Any]:
    rendered = list(engine.stream(TEXT, voice="af_heart"))
    assert len(rendered) >= 6
    assert sum(len(c.samples) * 2 for c in rendered) > 4 * BOUND  # the bound will have to trim
    return rendered


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    services = Services(settings.replace(key_prefix=f"p{uuid.uuid4().hex[:8]}:", stream_max_bytes=BOUND))
    yield services
    for key in services.redis.scan_iter(match=services.keys.prefix + "*"):
        services.redis.delete(key)
    services.close()


def running_job(svc: Services) -> str:
    job, _ = svc.jobs.create(JobSpec(text=TEXT), owner="public", queue="parts-idle")
    assert svc.jobs.start(job.id, worker="test") is not None
    return job.id


def held_bytes(svc: Services, job_id: str) -> int:
    """PCM bytes really in the job's Redis stream now."""
    return sum(len(f.get(b"pcm", b"")) for _, f in svc.redis.xrange(svc.keys.job_chunks(job_id)))


def take(events: Iterator[StreamEvent], count: int) -> list[StreamEvent]:
    """The next ``count`` events (only ones already published: reading never waits here)."""
    return [next(events) for _ in range(count)]


def test_late_listener_of_a_running_job_replays_parts_then_follows_live(svc: Services, chunks: list[Any]) -> None:
    job_id = running_job(svc)
    total = len(chunks)
    largest = max(len(c.samples) * 2 for c in chunks)

    def publish(upto: int) -> None:
        for chunk in chunks[len(published) : upto]:
            published.append(svc.streams.publish(job_id, chunk, svc.storage))
            assert held_bytes(svc, job_id) <= max(BOUND, largest)  # the bound holds throughout

    published: list[int] = []
    publish(3)
    assert svc.streams.trimmed_before(job_id) >= 1 and svc.streams.parts(job_id)
    svc.streams.check_replayable(job_id, 0, "running")  # no 410: the parts hold what Redis let go

    audio = svc.streams.events(job_id, 0, storage=svc.storage)
    captions = svc.streams.events(job_id, 0, storage=svc.storage, audio=False)
    heard = take(audio, 1)  # chunk 0, from the first part
    publish(total - 1)  # meanwhile Redis trims past what the listener has read, into newer parts
    heard += take(audio, total - 3)
    seen = take(captions, total - 1)
    assert len(svc.streams.parts(job_id)) >= 2

    # The job finishes and drops its parts while both listeners are still behind.
    publish(total)
    samples = sum(len(c.samples) for c in chunks)
    svc.streams.finish(job_id, svc.storage, {"segments": total, "samples": samples, "sample_rate": 24000})
    assert svc.jobs.succeed(job_id, {"result_key": svc.keys.job_audio(job_id, "wav")})
    assert svc.storage.list(svc.streams.parts_prefix(job_id)) == []
    heard += list(audio)
    seen += list(captions)

    assert [e.seq for e in heard if e.type == "chunk"] == list(range(total)) and heard[-1].type == "end"
    pcm = b"".join(e.pcm for e in heard if e.type == "chunk")
    assert pcm == b"".join(to_pcm16(c.samples) for c in chunks)
    assert pcm == svc.storage.get(svc.streams.replay_keys(job_id)[0])  # byte-identical to the stored PCM
    index = json.loads(svc.storage.get(svc.streams.replay_keys(job_id)[1]))
    assert [(e.seq, e.offset, e.samples) for e in seen if e.type == "chunk"] == [
        (row["seq"], row["offset"], row["bytes"] // 2) for row in index["chunks"]
    ]
    assert seen[-1].type == "end"


def test_without_parts_a_late_listener_still_gets_the_gap(svc: Services, chunks: list[Any]) -> None:
    # Published without storage (a caller that keeps no parts): the bound trims freely, as before.
    job_id = running_job(svc)
    for chunk in chunks[:4]:
        svc.streams.publish(job_id, chunk)
    first = svc.streams.trimmed_before(job_id)
    assert first >= 1 and not svc.streams.parts(job_id)
    with pytest.raises(StreamGapError) as gap:
        svc.streams.check_replayable(job_id, 0, "running")
    assert gap.value.details["first_available"] == first
    event = next(svc.streams.events(job_id, 0, storage=svc.storage))
    assert (event.type, event.meta["code"]) == ("error", "stream_trimmed")

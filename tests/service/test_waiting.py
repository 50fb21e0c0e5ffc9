"""Why a job or book waits: positions count the work ahead in its lane and above, ETAs follow (issue 19).

A deployment of its own with no real worker: heartbeats are written by hand, so the test says what
each worker is doing and reads the status the API would show.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config import defaults
from config.settings import Settings
from service import dispatch, waiting
from service.books import BookRecord
from service.jobs import JobSpec
from service.keys import new_id
from service.services import Services
from service.states import BookState
from tests.fixtures.durability import isolated_settings

TEXT = "A short sentence to speak. " * 4  # about 108 characters: two segments at the default estimate


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    services = Services(isolated_settings(settings, heartbeat_ttl=120))
    yield services
    services.close()


def test_the_second_queued_job_counts_the_first_and_waits_longer(svc: Services) -> None:
    queue = svc.settings.queue
    first, _ = svc.jobs.create(JobSpec(text=TEXT), owner="alice", queue=queue)
    second, _ = svc.jobs.create(JobSpec(text=TEXT), owner="bob", queue=queue)
    alone = waiting.job_wait(svc, first)
    assert alone is not None and alone["position"] == 1 and alone["eta_seconds"] > 0
    assert "No live worker" in alone["reason"] and queue in alone["reason"]

    svc.workers.beat("idle@host:1", {"queues": [queue]})
    now = waiting.job_wait(svc, first)
    later = waiting.job_wait(svc, second)
    assert now["reason"].startswith("Next: a free worker")
    own = now["eta_seconds"] / waiting.seconds_per_segment(svc, queue)
    assert later["position"] == 2 and later["ahead_segments"] == round(own) >= 1
    assert later["eta_seconds"] == pytest.approx(2 * now["eta_seconds"])
    assert "1 job(s) ahead" in later["reason"] and "normal" in later["reason"]

    # A high-lane job goes ahead of both; the normal ones count it.
    urgent, _ = svc.jobs.create(JobSpec(text=TEXT, priority="high"), owner="carol", queue=queue)
    assert waiting.job_wait(svc, urgent)["position"] == 1
    assert waiting.job_wait(svc, second)["position"] == 3

    # The one worker renders a book: the next job waits for that segment only.
    svc.workers.beat("idle@host:1", {"queues": [queue], "current_batch": f"{new_id()}:0"})
    busy = waiting.job_wait(svc, urgent)
    assert "book segment" in busy["reason"] and busy["ahead_segments"] == 1
    assert busy["eta_seconds"] > now["eta_seconds"]
    # ... or a job with three segments left: it waits for all three.
    running, _ = svc.jobs.create(JobSpec(text=TEXT), owner="dave", queue=queue)
    svc.jobs.start(running.id, worker="idle@host:1")
    svc.jobs.progress(running.id, 2, 5, 1.0)
    svc.workers.beat("idle@host:1", {"queues": [queue], "current_job": running.id})
    assert waiting.job_wait(svc, urgent)["ahead_segments"] == 3
    assert "3 segment(s) left" in waiting.job_wait(svc, urgent)["reason"]
    assert waiting.job_wait(svc, svc.jobs.get(running.id)) is None  # running: it no longer waits


def test_a_book_sharing_the_workers_with_another_keys_book_counts_its_turns(svc: Services) -> None:
    queue = svc.settings.queue
    mine, theirs = new_id(), new_id()
    for book, owner, total in ((mine, "alice", 10), (theirs, "bob", 20)):
        svc.redis.hset(svc.keys.book(book), mapping={"id": book, "owner": owner, "segments_total": total})
        dispatch.make_ready(svc, queue, book, owner, range(3))
    svc.workers.beat("w@host:1", {"queues": [queue]})
    rec = BookRecord(id=mine, owner="alice", state=BookState.RENDERING, planned_at=1.0, segments_total=10,
                     queue=queue)
    wait = waiting.book_wait(svc, rec, 0)
    assert wait is not None and wait["position"] is None
    assert "1 other book(s) (1 other key(s))" in wait["reason"]
    assert wait["ahead_segments"] == 10, "bob renders as many segments as alice's book has left"
    sps = waiting.seconds_per_segment(svc, queue)
    assert wait["eta_seconds"] == pytest.approx(20 * sps, abs=0.1)
    # Interactive jobs queued now go first: the book counts their segments too.
    svc.jobs.create(JobSpec(text=TEXT), owner="carol", queue=queue)
    assert waiting.book_wait(svc, rec, 0)["ahead_segments"] > 10
    # Alone (bob's book withdrawn), it shares with nobody.
    dispatch.withdraw(svc, queue, theirs)
    assert waiting.book_wait(svc, rec, 0)["reason"].startswith("Rendering on 1 worker(s)")


def test_the_job_status_declares_and_shows_why_it_waits(client: Any, services: Any) -> None:
    job, _ = services.jobs.create(JobSpec(text=TEXT), owner="public", queue="idle-wait")
    body = client.get(f"/v1/jobs/{job.id}").get_json()
    assert body["queue"]["position"] == body["queue_position"] == 1
    assert body["queue"]["ahead_segments"] == 0 and "idle-wait" in body["queue"]["reason"]
    spec = client.get("/openapi.json").get_json()
    fields = spec["components"]["schemas"]["QueueWait"]["properties"]
    assert set(fields) == {"position", "ahead_segments", "eta_seconds", "reason"}
    services.jobs.fail(job.id, "test", "cleaned up")


def test_a_second_keys_job_overtakes_the_first_keys_burst_in_the_same_lane(svc: Services) -> None:
    queue = svc.settings.queue
    burst = [svc.submit(JobSpec(text=TEXT), owner="alice")[0] for _ in range(defaults.FAIR_SHARE_JOBS + 2)]
    other, _ = svc.submit(JobSpec(text=TEXT), owner="bob")
    positions = {j.id: waiting.job_wait(svc, svc.jobs.get(j.id))["position"] for j in [*burst, other]}
    share = defaults.FAIR_SHARE_JOBS
    assert [positions[j.id] for j in burst[:share]] == list(range(1, share + 1))
    assert positions[other.id] == share + 1, "bob's job goes before the rest of alice's burst"
    assert sorted(positions[j.id] for j in burst[share:]) == [share + 2, share + 3]
    # The broker agrees: alice's further jobs wait on the normal lane's overflow step.
    prefix = svc.settings.broker_key_prefix
    overflow = svc.redis.lrange(f"{prefix}{queue}\x06\x16{defaults.OVERFLOW_PRIORITIES['normal']}", 0, -1)
    assert sum(1 for raw in overflow if any(j.id.encode() in raw for j in burst[share:])) == 2
    assert not any(other.id.encode() in raw for raw in overflow)

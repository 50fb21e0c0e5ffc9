"""The job store on a real Redis: creation, idempotency, transitions, events, listing, cancel, ETA."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib

from service.exceptions import IdempotencyConflictError, InvalidStateTransitionError, JobNotFoundError
from service.jobs import JobSpec, JobStore
from service.keys import Keys


@pytest.fixture
def store(redis_client: redis_lib.Redis) -> Iterator[JobStore]:
    """A job store under a key prefix of its own; its keys are removed afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    yield JobStore(redis_client, Keys(prefix), ttl=600)
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)


def spec(text: str = "Hello there.", **kw: Any) -> JobSpec:
    return JobSpec(text=text, **kw)


def test_create_and_get(store: JobStore) -> None:
    job, created = store.create(spec(voice="af_sky", speed=1.25, format="wav"), owner="alice")
    assert created and job.state == "queued" and job.owner == "alice"
    again = store.get(job.id)
    assert (again.voice, again.speed, again.format, again.text) == ("af_sky", 1.25, "wav", "Hello there.")
    assert again.created_at > 0 and again.started_at is None and again.language is None
    with pytest.raises(JobNotFoundError):
        store.get(job.id, owner="bob")
    with pytest.raises(JobNotFoundError):
        store.get("0" * 32)
    assert store.find("not-an-id") is None


def test_idempotency(store: JobStore) -> None:
    first, created = store.create(spec(), owner="alice", idempotency_key="key-1")
    second, created_again = store.create(spec(), owner="alice", idempotency_key="key-1")
    assert created and not created_again and first.id == second.id
    with pytest.raises(IdempotencyConflictError):
        store.create(spec("Something else."), owner="alice", idempotency_key="key-1")
    other, created_other = store.create(spec(), owner="bob", idempotency_key="key-1")
    assert created_other and other.id != first.id


def test_concurrent_idempotent_creates_make_one_job(store: JobStore) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        ids.append(store.create(spec(), owner="alice", idempotency_key="same")[0].id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1


def test_lifecycle_and_events(store: JobStore) -> None:
    job, _ = store.create(spec(), owner="alice")
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.keys.job_events(job.id))
    try:
        running = store.start(job.id, worker="w1")
        assert running is not None and running.state == "running" and running.attempts == 1
        store.progress(job.id, 1, 3, 1.5)
        assert store.get(job.id).segments_done == 1
        assert store.succeed(
            job.id, {"result_key": "jobs/x/audio.mp3", "result_size": 10, "result_duration": 2.0}
        )
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (events and events[-1].get("state") == "succeeded"):
            message = pubsub.get_message(timeout=1)  # None for the subscribe confirmation
            if message is not None:
                events.append(json.loads(message["data"]))
    finally:
        pubsub.close()
    assert [e["type"] for e in events] == ["state", "progress", "state"]
    assert events[0]["state"] == "running" and events[1]["segments_total"] == 3
    assert events[2]["result"]["duration"] == 2.0
    done = store.get(job.id)
    assert done.is_terminal and done.finished_at and done.result_size == 10
    # Terminal states are final.
    with pytest.raises(InvalidStateTransitionError):
        store.set_state(job.id, "running")
    assert store.start(job.id) is None
    assert not store.fail(job.id, "x", "y")
    store.progress(job.id, 3, 3, 9.0)  # ignored: not running
    assert store.get(job.id).segments_done == 1


def test_redelivery_restarts_a_running_job(store: JobStore) -> None:
    job, _ = store.create(spec(), owner="alice")
    store.start(job.id, worker="w1")
    store.progress(job.id, 2, 4, 3.0)
    again = store.start(job.id, worker="w2")
    assert again is not None and again.attempts == 2 and again.worker == "w2" and again.segments_done == 0


def test_cancel_queued_and_running(store: JobStore) -> None:
    queued, _ = store.create(spec(), owner="alice")
    cancelled = store.request_cancel(queued.id, owner="alice")
    assert cancelled.state == "cancelled" and cancelled.finished_at
    assert store.start(queued.id) is None  # a cancelled job never runs
    assert store.is_cancel_requested(queued.id)
    running, _ = store.create(spec(), owner="alice")
    store.start(running.id)
    assert not store.is_cancel_requested(running.id)
    flagged = store.request_cancel(running.id)
    assert flagged.state == "running" and flagged.cancel_requested
    assert store.is_cancel_requested(running.id)
    assert store.cancel(running.id)
    assert store.get(running.id).state == "cancelled"
    with pytest.raises(JobNotFoundError):
        store.request_cancel(running.id, owner="mallory")


def test_queue_position_respects_priority(store: JobStore) -> None:
    a, _ = store.create(spec(), owner="alice")
    b, _ = store.create(spec(), owner="alice")
    urgent, _ = store.create(spec(priority="high"), owner="alice")
    assert store.queue_position(store.get(urgent.id)) == 1
    assert store.queue_position(store.get(a.id)) == 2
    assert store.queue_position(store.get(b.id)) == 3
    store.start(urgent.id)
    assert store.queue_position(store.get(a.id)) == 1
    assert store.queue_position(store.get(urgent.id)) is None
    eta_a = store.eta_seconds(store.get(a.id), position=1)
    eta_b = store.eta_seconds(store.get(b.id), position=2)
    assert eta_a is not None and eta_b is not None and eta_b > eta_a


def test_list_pages_filters_and_owners(store: JobStore) -> None:
    ids = [store.create(spec(f"Text {i}."), owner="alice")[0].id for i in range(7)]
    store.create(spec(), owner="bob")
    store.start(ids[2])
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list(owner="alice", limit=3, cursor=cursor)
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    running = store.list(owner="alice", state="running")
    assert [j.id for j in running.jobs] == [ids[2]] and running.next_cursor is None
    assert len(store.list(owner="bob").jobs) == 1
    counts = store.count_by_state()
    assert counts["queued"] == 7 and counts["running"] == 1


def test_expired_jobs_leave_the_listing(store: JobStore) -> None:
    keep, _ = store.create(spec(), owner="alice")
    gone, _ = store.create(spec(), owner="alice")
    store.redis.delete(store.keys.job(gone.id))
    assert [j.id for j in store.list(owner="alice").jobs] == [keep.id]
    assert store.redis.zscore(store.keys.owner_jobs("alice"), gone.id) is None


def test_expired_idempotency_target_creates_afresh(store: JobStore) -> None:
    first, _ = store.create(spec(), owner="alice", idempotency_key="k")
    store.redis.delete(store.keys.job(first.id))
    second, created = store.create(spec(), owner="alice", idempotency_key="k")
    assert created and second.id != first.id


def test_wait_returns_when_finished(store: JobStore) -> None:
    job, _ = store.create(spec(), owner="alice")
    store.start(job.id)

    def finish() -> None:
        store.fail(job.id, "boom", "it broke")

    timer = threading.Timer(0.2, finish)
    timer.start()
    finished = store.wait(job.id, timeout=30)
    timer.join()
    assert finished.state == "failed" and finished.error_code == "boom"
    still, _ = store.create(spec(), owner="alice")
    assert store.wait(still.id, timeout=0.3, recheck=0.1).state == "queued"


def test_render_rate_moving_average(store: JobStore) -> None:
    base = store.seconds_per_char("cpu")
    store.record_render("cpu", 100, 100 * base * 3)
    assert store.seconds_per_char("cpu") > base
    assert store.seconds_per_char("gpu") == base


def test_requeue_orphan_only_from_the_dead_worker(store: JobStore) -> None:
    job, _ = store.create(spec(), owner="alice", queue="idle")
    store.start(job.id, worker="w-dead:1")
    running = store.get(job.id)
    assert not store.requeue_orphan(running, "w-other:2")
    assert store.requeue_orphan(running, "w-dead:1")
    again = store.get(job.id)
    assert again.state == "queued" and again.worker is None and again.started_at is None
    assert store.queue_position(again) == 1
    assert not store.requeue_orphan(running, "w-dead:1")  # only once


def test_orphans_of_a_dead_worker_are_requeued(services: Any) -> None:
    from service.recovery import recover_jobs

    job, _ = services.jobs.create(spec("Orphaned."), owner="public", queue="idle")
    services.jobs.start(job.id, worker="gone@host:4242")
    services.jobs.set_fields(job.id, started_at=0.0)  # long ago: its worker had time to beat
    fresh, _ = services.jobs.create(spec("Just started."), owner="public", queue="idle")
    services.jobs.start(fresh.id, worker="starting@host:1")
    before = services.redis.llen("idle\x06\x163")
    assert job.id in recover_jobs(services)
    assert services.jobs.get(job.id).state == "queued"
    assert services.jobs.get(fresh.id).state == "running"  # within one heartbeat TTL: left alone
    assert services.redis.llen("idle\x06\x163") == before + 1  # sent again at normal priority

"""Reconciliation and retries, with a real worker of its own: nothing accepted is left unqueued.

The deployment here has its own key prefixes and queue (the session's worker never sees it), local
storage in which ``segments`` is a plain file, so every book checkpoint write fails for real, and a
worker whose sweep runs every second with a one-second grace.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from engine.book import load_book
from service.books import BookSpec
from service.jobs import JobSpec
from service.recovery import broker_snapshot, reconcile
from service.services import Services
from tests.fixtures.durability import isolated_settings
from tests.fixtures.service import WorkerPool, wait_until


@pytest.fixture
def quiet(settings: Settings) -> Iterator[Services]:
    """Services on a deployment of their own with no worker at all (nothing sweeps but the test)."""
    svc = Services(isolated_settings(settings, reconcile_grace=0.0, max_attempts=3))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def deployment(settings: Settings) -> Iterator[tuple[Services, WorkerPool]]:
    """Services and a running worker on an isolated deployment whose checkpoint writes fail."""
    root = Path(tempfile.mkdtemp(prefix="spool-recovery-"))
    storage = root / "storage"
    storage.mkdir()
    (storage / "segments").write_text("not a directory: every checkpoint write fails\n")
    own = isolated_settings(settings, storage_url=str(storage), reconcile_grace=1.0, max_attempts=3)
    svc = Services(own)
    pool = WorkerPool(own, root)
    pool.start(name="recovery")
    try:
        yield svc, pool
    finally:
        pool.stop_all()
        svc.close()


def test_the_broker_snapshot_reads_kombus_queue_lists_and_unacked_hash(quiet: Services) -> None:
    svc = quiet
    idle = svc.settings.replace(queue="idle-snap")
    job, _ = svc.jobs.create(JobSpec(text="Never rendered."), owner="t", queue=idle.queue)
    assert job.id not in broker_snapshot(svc, {idle.queue}).task_ids
    svc.enqueue(job)
    assert job.id in broker_snapshot(svc, {idle.queue}).task_ids
    assert svc.jobs.get(job.id).enqueued_at is not None
    # The same message, moved by hand into the unacked hash the way kombu stores a delivery.
    prefix = svc.settings.broker_key_prefix
    raw = svc.redis.rpop(f"{prefix}{idle.queue}\x06\x163")
    assert raw is not None
    svc.redis.hset(f"{prefix}unacked", "tag-1", b'[' + raw + b', "", "idle-snap"]')
    try:
        assert job.id in broker_snapshot(svc, {idle.queue}).task_ids
    finally:
        svc.redis.hdel(f"{prefix}unacked", "tag-1")
        svc.jobs.fail(job.id, "test", "cleaned up")


def test_a_job_stored_with_no_broker_message_is_requeued_by_the_sweep_and_completes(
    deployment: tuple[Services, WorkerPool],
) -> None:
    svc, _ = deployment
    # What a crash between JobStore.create and send_task leaves: a queued job and no message.
    job, created = svc.jobs.create(JobSpec(text="Stored, never queued.", format="wav"), owner="t",
                                   queue=svc.settings.queue)
    assert created and job.enqueued_at is None
    done = wait_until(lambda: (j := svc.jobs.get(job.id)).is_terminal and j, 120, interval=0.2,
                      what="the sweep to queue the job and the worker to render it")
    assert done.state == "succeeded", done
    assert done.attempts == 1 and done.enqueued_at is not None
    assert svc.storage.exists(done.result_key)


def test_an_idempotency_retry_of_a_job_stored_but_never_queued_queues_it(quiet: Services) -> None:
    svc = quiet
    idle = "idle-idem"
    spec = JobSpec(text="Retried with the same key.")
    job, _ = svc.jobs.create(spec, owner="t", queue=idle, idempotency_key="order-13")
    assert job.id not in broker_snapshot(svc, {idle}).task_ids
    again, created = svc.submit(spec, owner="t", idempotency_key="order-13")
    assert not created and again.id == job.id
    assert job.id in broker_snapshot(svc, {idle}).task_ids
    # A second retry finds it queued already: no second message.
    svc.submit(spec, owner="t", idempotency_key="order-13")
    prefix = svc.settings.broker_key_prefix
    lists = [svc.redis.lrange(f"{prefix}{idle}{sep}", 0, -1) for sep in ("", "\x06\x163")]
    assert sum(1 for rows in lists for raw in rows if job.id.encode() in raw) == 1
    svc.jobs.fail(job.id, "test", "cleaned up")


def test_a_running_job_no_worker_holds_is_requeued_and_attempts_are_capped(quiet: Services) -> None:
    svc = sweeper = quiet
    idle = "idle-cap"
    try:
        job, _ = svc.jobs.create(JobSpec(text="Dropped by a live worker."), owner="t", queue=idle)
        for attempt in (1, 2):
            # A worker that is alive (it beats) but gave the job up: running, held by nobody, no message.
            sweeper.workers.beat("alive@host:1", {"queues": [idle], "current_job": None})
            assert svc.jobs.start(job.id, worker="alive@host:1").attempts == attempt
            found = reconcile(sweeper, locked=False)
            assert [j.id for j in found.jobs] == [job.id]
            assert svc.jobs.get(job.id).state == "queued"
            assert job.id in broker_snapshot(svc, {idle}).task_ids
            svc.redis.delete(*(f"{svc.settings.broker_key_prefix}{idle}{s}" for s in ("", "\x06\x163")))
        sweeper.workers.beat("alive@host:1", {"queues": [idle], "current_job": None})
        assert svc.jobs.start(job.id, worker="alive@host:1").attempts == 3
        reconcile(sweeper, locked=False)
        failed = svc.jobs.get(job.id)
        assert failed.state == "failed" and failed.error_code == "attempts_exhausted"
        assert "started 3 time(s)" in failed.error_message and "SPOOL_MAX_ATTEMPTS" in failed.error_message
    finally:
        sweeper.workers.remove("alive@host:1")


def test_a_book_batch_whose_storage_write_fails_is_retried_then_fails_the_book_clearly(
    deployment: tuple[Services, WorkerPool], tmp_path: Path
) -> None:
    svc, pool = deployment
    source = tmp_path / "tiny.txt"
    source.write_text("# One\n\nA short chapter that cannot be stored.\n", encoding="utf-8")
    book_id = svc.books.create(load_book(source), BookSpec(), "t", source_name="tiny.txt")

    def finished() -> Any:
        rec = svc.books.record(book_id)
        return rec if rec.state in ("succeeded", "failed", "cancelled") else None

    rec = wait_until(finished, 120, interval=0.2, what="the book to finish")
    assert rec.state == "failed", rec
    assert rec.error_code == "batch_failed"
    assert "failed 3 time(s)" in rec.error_message and "storage" in rec.error_message
    assert "NotADirectoryError" in rec.error_message or "Error" in rec.error_message
    attempts = svc.redis.hgetall(svc.keys.book_batch_attempts(book_id))
    assert int(attempts[b"0"]) == 3  # started three times: retried, then given up
    assert pool.first.alive()


def test_a_book_plan_or_batch_no_message_carries_is_sent_again_by_the_sweep(
    quiet: Services, tmp_path: Path
) -> None:
    svc = quiet
    source = tmp_path / "tiny.txt"
    source.write_text("# One\n\nA chapter whose messages were lost.\n", encoding="utf-8")
    book_id = svc.books.create(load_book(source), BookSpec(), "t", source_name="tiny.txt")
    queue = svc.settings.queue
    lists = [f"{svc.settings.broker_key_prefix}{queue}{s}" for s in ("", "\x06\x163", "\x06\x166")]
    assert book_id in broker_snapshot(svc, {queue}).plans
    assert reconcile(svc, locked=False).plans == []  # carried: nothing to do
    svc.redis.delete(*lists)  # the plan message is lost (say, with Redis' last second of writes)
    assert reconcile(svc, locked=False).plans == [book_id]
    assert book_id in broker_snapshot(svc, {queue}).plans
    # Planned, with a batch marked queued whose message is gone.
    svc.redis.delete(*lists)
    svc.redis.hset(svc.keys.book(book_id), mapping={"planned_at": "1", "segments_total": "1"})
    svc.redis.hset(svc.keys.book_batches(book_id), "0", "queued")
    found = reconcile(svc, locked=False)
    assert [(b, n) for b, n, _ in found.batches] == [(book_id, 0)]
    assert (book_id, 0) in broker_snapshot(svc, {queue}).batches
    assert reconcile(svc, locked=False).batches == []  # now carried
    svc.books.cancel(book_id)

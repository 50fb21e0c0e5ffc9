"""Durability through real crashes: Redis SIGKILLed mid-job, and a worker SIGKILLed three times.

Each test runs a deployment of its own: a private redis-server with AOF in a temporary directory,
local storage, and real worker processes (the real model), so the session's worker sees none of it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from service.jobs import JobSpec
from service.services import Services
from tests.fixtures.durability import PrivateRedis, isolated_settings, job_of
from tests.fixtures.service import WorkerPool, wait_until

#: Several sentences: a handful of segments, so there is work left when the crash comes.
TEXT = (
    "The lighthouse keeper climbed the stairs at dusk. "
    "He wound the great clock, trimmed the wick, and polished the lens until it shone. "
    "Far out at sea, a small boat turned toward the light. "
    "By morning the storm had passed, and the harbour was calm again."
)


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A private redis-server with AOF in a temporary directory."""
    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="spool-aof-"))).start()
    try:
        yield server
    finally:
        server.stop()


def _deployment(settings: Settings, server: PrivateRedis, root: Path, **changes: Any) -> Settings:
    storage = root / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    return isolated_settings(settings, redis_url=server.url, storage_url=str(storage), **changes)


def _running_with_progress(svc: Services, job_id: str, pid: int) -> Any:
    """The job once it runs on the worker with ``pid`` and has at least one segment done, with more left."""
    job = job_of(svc, job_id)
    if job is None or job.state != "running" or not (job.worker or "").endswith(f":{pid}"):
        return None
    return job if job.segments_done >= 1 else None


def test_redis_sigkilled_and_restarted_mid_job_the_job_completes_with_the_calm_audio(
    settings: Settings, own_redis: PrivateRedis, tmp_path: Path
) -> None:
    own = _deployment(settings, own_redis, tmp_path)
    svc = Services(own)
    pool = WorkerPool(own, tmp_path)
    try:
        worker = pool.start(name="aof")
        job, _ = svc.submit(JobSpec(text=TEXT, format="wav"), owner="t")
        seen = wait_until(lambda: _running_with_progress(svc, job.id, worker.pid), 120, interval=0.02,
                          what="the job to be part-way through")
        assert seen.segments_done < seen.segments_total  # the crash comes with work left
        own_redis.kill()
        # Stay down until the worker has met the outage mid-job (its next write failed and waits).
        wait_until(lambda: "Redis unreachable" in worker.log_path.read_text(errors="replace"), 120,
                   interval=0.1, what="the worker to notice the outage")
        own_redis.start()  # same port, same data directory: AOF reload
        done = wait_until(lambda: (j := job_of(svc, job.id)) is not None and j.is_terminal and j, 180,
                          interval=0.2, what="the job to finish after the restart")
        assert done.state == "succeeded", (done, worker.log_tail())
        assert done.attempts == 1  # the worker rode the restart out: no re-render from scratch
        assert worker.alive()
        crashed = svc.storage.get(done.result_key)
        # The same input rendered calmly by the same worker.
        calm, _ = svc.submit(JobSpec(text=TEXT, format="wav"), owner="t")
        calm = svc.jobs.wait(calm.id, 180)
        assert calm.state == "succeeded"
        assert svc.storage.get(calm.result_key) == crashed
    finally:
        pool.stop_all()
        svc.close()


def test_a_job_whose_worker_is_killed_three_times_fails_with_attempts_exhausted(
    settings: Settings, own_redis: PrivateRedis, tmp_path: Path
) -> None:
    own = _deployment(settings, own_redis, tmp_path, max_attempts=3)
    svc = Services(own)
    pool = WorkerPool(own, tmp_path)
    try:
        job, _ = svc.submit(JobSpec(text=TEXT * 2, format="wav"), owner="t")
        for attempt in (1, 2, 3):
            worker = pool.start(name=f"doomed{attempt}")
            seen = wait_until(lambda w=worker: _running_with_progress(svc, job.id, w.pid), 120,
                              interval=0.02, what=f"attempt {attempt} to be under way")
            assert seen.attempts == attempt
            pool.kill(worker)  # SIGKILL while it renders: no ack, no cleanup
        survivor = pool.start(name="survivor")
        failed = wait_until(lambda: (j := job_of(svc, job.id)) is not None and j.is_terminal and j, 60,
                            interval=0.1, what="recovery to give the job up")
        assert failed.state == "failed", (failed, survivor.log_tail())
        assert failed.error_code == "attempts_exhausted"
        assert failed.attempts == 3
        assert "started 3 time(s)" in failed.error_message
        # The survivor never started it a fourth time, and is free for other work.
        assert survivor.alive() and not (failed.worker or "").endswith(f":{survivor.pid}")
    finally:
        pool.stop_all()
        svc.close()

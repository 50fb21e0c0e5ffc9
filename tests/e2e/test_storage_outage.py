"""Storage outages through the whole system: moto's S3 server killed mid-upload, then started again.

Real parts: a moto server process of its own (restarted on the same port with its state
replayed, see ``tests/fixtures/moto_process.py``), real Celery workers with the real model, and
the session's Redis. Model calls are counted by the worker's engine (heartbeat
``segments_rendered``), so "without rendering again" is checked, not assumed.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from config.settings import Settings
from engine.audio import decode_audio
from engine.book import load_book
from service.books import BookSpec
from service.exceptions import StorageError, StorageUnavailableError
from service.jobs import JobSpec
from service.services import Services
from service.storage import RetryPolicy, S3Storage
from tests.fixtures.moto_process import MotoProcess
from tests.fixtures.service import WorkerPool, WorkerProcess, free_port, wait_until

#: Bucket made on the outage server.
BUCKET = "spool-outage"

#: How long the long outages last (what issue 13 asks the system to wait out).
OUTAGE_SECONDS = 30.0

#: The retry window of the worker that waits out the long outages.
LONG_WINDOW = 120

#: The retry window of the worker that gives up quickly, to show the requeue keeps the audio.
SHORT_WINDOW = 4

#: Longest wait for a job or a small book on a busy machine.
TIMEOUT = 240.0

TEXT = "The lamp was lit. It rained all night, and nobody came. In the morning the road was gone."


@dataclass
class Outage:
    """The outage server, settings on it per worker, and the workers."""

    moto: MotoProcess
    long: Settings
    short: Settings
    pool: WorkerPool
    long_worker: WorkerProcess
    short_worker: WorkerProcess


def _client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="x",
    )


@pytest.fixture(scope="module")
def outage(settings: Settings) -> Iterator[Outage]:
    """A moto server process, and two workers on it: one waits out 30 s, the other gives up after 4 s."""
    work = Path(tempfile.mkdtemp(prefix="spool-outage-"))
    moto = MotoProcess(free_port(), work)
    moto.start()
    _client(moto.url).create_bucket(Bucket=BUCKET)
    base = settings.replace(
        storage_url=f"s3://{BUCKET}/results?endpoint={moto.url}",
        var_dir=str(work / "var"),  # both workers on this "machine" share the spill directory
        heartbeat_interval=1.0,
        heartbeat_ttl=6,
    )
    long = base.replace(queue="outage-long", worker_queues=("outage-long",), storage_retry_window=LONG_WINDOW)
    short = base.replace(
        queue="outage-short", worker_queues=("outage-short",), storage_retry_window=SHORT_WINDOW
    )
    pool = WorkerPool(long, work)
    long_worker = pool.start(name="outage-long", queues=long.worker_queues, env=long.to_env(), wait=False)
    short_worker = pool.start(name="outage-short", queues=short.worker_queues, env=short.to_env(), wait=False)
    try:
        pool.wait_ready(long_worker)
        pool.wait_ready(short_worker)
        yield Outage(moto, long, short, pool, long_worker, short_worker)
    finally:
        pool.stop_all()
        moto.stop()


def _beat(pool: WorkerPool, worker: WorkerProcess) -> dict[str, Any]:
    """The worker's latest heartbeat record."""
    return next(b for b in pool.registry.live() if b.get("pid") == worker.pid)


def _rendered_after(pool: WorkerPool, worker: WorkerProcess, jobs_done: int) -> int:
    """The worker's model-call count once its heartbeat shows ``jobs_done`` finished tasks."""
    beat = wait_until(
        lambda: (b := _beat(pool, worker))["jobs_done"] >= jobs_done and b,
        30,
        interval=0.2,
        what="the worker's heartbeat after the job",
    )
    return int(beat["segments_rendered"])


def test_a_job_whose_upload_meets_a_30_s_outage_succeeds_without_rendering_again(outage: Outage) -> None:
    svc = Services(outage.long)
    try:
        before = _beat(outage.pool, outage.long_worker)
        outage.moto.stop()
        down_at = time.monotonic()
        job, _ = svc.submit(JobSpec(text=TEXT, format="mp3"), owner="outage")
        # Rendering needs no storage: the job renders every segment, then waits on its upload.
        rendered = wait_until(
            lambda: (j := svc.jobs.get(job.id)).segments_total and j.segments_done == j.segments_total and j,
            TIMEOUT,
            interval=0.1,
            what="the render to finish",
        )
        assert rendered.state == "running"
        wait_until(lambda: time.monotonic() - down_at >= OUTAGE_SECONDS, OUTAGE_SECONDS + 5, interval=0.2)
        assert svc.jobs.get(job.id).state == "running"  # still waiting on storage, not failed
        outage.moto.start()
        final = wait_until(
            lambda: (j := svc.jobs.get(job.id)).is_terminal and j, TIMEOUT, interval=0.2, what="the job"
        )
        assert final.state == "succeeded", (final.error_code, final.error_message)
        assert final.attempts == 1
        samples, rate = decode_audio(svc.storage.get(final.result_key))
        assert rate == 24_000 and len(samples) / rate > 3.0
        after = _rendered_after(outage.pool, outage.long_worker, before["jobs_done"] + 1)
        assert after - before["segments_rendered"] == final.segments_total  # every segment once
        assert not list((Path(outage.long.var_dir) / "spill" / "jobs").glob(f"{job.id}-*"))  # spill cleared
    finally:
        if not outage.moto.running:
            outage.moto.start()
        svc.close()


def test_a_job_requeued_after_the_window_uploads_its_kept_audio_without_rendering(outage: Outage) -> None:
    svc = Services(outage.short)
    try:
        before = _beat(outage.pool, outage.short_worker)
        outage.moto.stop()
        job, _ = svc.submit(JobSpec(text=TEXT, format="opus"), owner="outage")
        # Past the 4 s window the job goes back to the queue, its audio kept on this machine's disk.
        wait_until(lambda: svc.jobs.get(job.id).attempts >= 2, TIMEOUT, interval=0.1, what="a second attempt")
        outage.moto.start()
        final = wait_until(
            lambda: (j := svc.jobs.get(job.id)).is_terminal and j, TIMEOUT, interval=0.2, what="the job"
        )
        assert final.state == "succeeded", (final.error_code, final.error_message)
        assert final.attempts >= 2
        samples, rate = decode_audio(svc.storage.get(final.result_key))
        assert len(samples) / rate > 3.0
        after = _rendered_after(outage.pool, outage.short_worker, before["jobs_done"] + final.attempts)
        assert after - before["segments_rendered"] == final.segments_total  # not once more per attempt
    finally:
        if not outage.moto.running:
            outage.moto.start()
        svc.close()


def test_a_job_fails_with_a_clear_error_when_storage_stays_down(outage: Outage) -> None:
    svc = Services(outage.short)
    try:
        outage.moto.stop()
        job, _ = svc.submit(JobSpec(text="Short.", format="wav"), owner="outage")
        final = wait_until(
            lambda: (j := svc.jobs.get(job.id)).is_terminal and j, TIMEOUT, interval=0.2, what="the job"
        )
        assert final.state == "failed" and final.error_code == "storage_unavailable"
        assert "SPOOL_STORAGE_RETRY_WINDOW" in final.error_message
        assert final.attempts == 3
        assert not list((Path(outage.short.var_dir) / "spill" / "jobs").glob(f"{job.id}-*"))
    finally:
        outage.moto.start()
        svc.close()


def test_a_book_whose_storage_fails_for_30_s_mid_batch_completes(outage: Outage, tmp_path: Path) -> None:
    svc = Services(outage.long)
    try:
        source = tmp_path / "book.txt"
        source.write_text(
            "Chapter 1\n\nThe boat left early. The sea was calm.\n\n"
            "Chapter 2\n\nAt noon the wind rose. They came home late, tired and wet.\n",
            encoding="utf-8",
        )
        book_id = svc.books.create(load_book(source), BookSpec(gap=0.5), "outage", source_name="book.txt")
        wait_until(
            lambda: svc.redis.scard(svc.keys.book_done(book_id)) >= 1,
            TIMEOUT,
            interval=0.05,
            what="a checkpoint",
        )
        outage.moto.stop()
        down_at = time.monotonic()
        wait_until(lambda: time.monotonic() - down_at >= OUTAGE_SECONDS, OUTAGE_SECONDS + 5, interval=0.2)
        assert svc.books.state(book_id) in ("rendering", "assembling")
        outage.moto.start()
        final = wait_until(
            lambda: svc.books.state(book_id) in ("succeeded", "failed") and svc.books.record(book_id),
            TIMEOUT,
            interval=0.2,
            what="the book",
        )
        assert final.state == "succeeded", (final.error_code, final.error_message)
        renders = svc.books.renders(book_id)
        assert sorted(renders) == list(range(final.segments_total))
        assert set(renders.values()) == {1}  # every segment synthesised exactly once
        assert svc.storage.exists(svc.keys.book_file(book_id, "book.m4b"))
    finally:
        if not outage.moto.running:
            outage.moto.start()
        svc.close()


def test_storage_refusals_fail_at_once_and_outages_are_retried_with_the_file_rewound(outage: Outage) -> None:
    retrying = RetryPolicy(window=60)
    missing = S3Storage("no-such-bucket-here", endpoint_url=outage.moto.url, access_key="t", secret_key="t")
    missing.retry = retrying
    started = time.monotonic()
    with pytest.raises(StorageError) as refused:
        missing.put("jobs/x/audio.wav", b"data")
    assert not isinstance(refused.value, StorageUnavailableError)
    assert "SPOOL_S3_CREATE_BUCKET" in refused.value.message
    assert time.monotonic() - started < 10  # no 60 s wait on a 4xx

    storage = S3Storage(BUCKET, "direct", endpoint_url=outage.moto.url, access_key="t", secret_key="t")
    storage.retry = RetryPolicy(window=1.0)
    outage.moto.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as down:
            storage.put("jobs/x/a.bin", b"data")
        assert 0.9 < time.monotonic() - started < 30
        assert "SPOOL_STORAGE_RETRY_WINDOW" in down.value.message
        # A file object half read by a failed attempt is sent whole once storage is back.
        storage.retry = RetryPolicy(window=60)
        data = bytes(range(256)) * 4096
        errors: list[BaseException] = []

        def upload() -> None:
            try:
                storage.put("jobs/x/b.bin", io.BytesIO(data))
            except BaseException as exc:  # reported to the test thread
                errors.append(exc)

        thread = threading.Thread(target=upload)
        thread.start()
        time.sleep(1.5)  # an outage of a second and a half, not a synchronisation
        outage.moto.start()
        thread.join(timeout=90)
        assert not thread.is_alive() and not errors, errors
        assert storage.get("jobs/x/b.bin") == data
    finally:
        if not outage.moto.running:
            outage.moto.start()

"""Retention: DELETE of a finished job or book empties its storage prefix; the sweeper expires old files.

The job is rendered by the real worker and stored in S3 (moto); the book's checkpoints are reference
counted so a checkpoint two books share outlives the first deletion; the sweep runs on local storage,
where file times can be set in the past.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from config.settings import Settings
from service.jobs import JobSpec
from service.retention import DAY, maybe_sweep, reference_checkpoint, sweep
from service.services import Services
from service.storage import LocalStorage
from tests.fixtures.service import wait_until


def test_delete_of_a_finished_job_empties_its_storage_prefix(client: Any, services: Any, worker: Any) -> None:
    job_id = client.post("/v1/jobs", json={"text": "Delete me afterwards.", "format": "wav"}).get_json()["id"]
    wait_until(
        lambda: client.get(f"/v1/jobs/{job_id}").get_json()["state"] in ("succeeded", "failed"),
        120,
        interval=0.2,
        what="the job to finish",
    )
    prefix = f"jobs/{job_id}/"
    stored = services.storage.list(prefix)
    assert {k.rsplit("/", 1)[1] for k in stored} >= {"audio.wav", "stream.pcm", "chunks.json"}
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 204 and response.data == b""
    assert services.storage.list(prefix) == []
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert not services.redis.exists(services.keys.job(job_id), services.keys.job_chunks(job_id))
    assert services.redis.zscore(services.keys.jobs_by_created(), job_id) is None
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 404


@pytest.fixture
def idle_books(settings: Settings) -> Iterator[Any]:
    application = create_app(settings.replace(queue="retention-idle", key_prefix=f"r{uuid.uuid4().hex[:8]}:"))
    yield application
    svc = application.extensions["spool"]
    for key in svc.redis.scan_iter(match=svc.keys.prefix + "*"):
        svc.redis.delete(key)
    svc.close()


def finished_book(api: Any, svc: Services, checkpoints: list[str]) -> str:
    """A book uploaded (nobody renders it), given outputs and checkpoints, then marked succeeded."""
    data = {"file": (io.BytesIO(b"Chapter 1\n\nA book to delete."), "book.txt")}
    book_id = api.post("/v1/books", data=data, content_type="multipart/form-data").get_json()["id"]
    svc.storage.put(svc.keys.book_file(book_id, "book.m4b"), b"m4b bytes", "audio/mp4")
    for key in checkpoints:
        svc.storage.put(key, b"npz bytes", "application/octet-stream")
        reference_checkpoint(svc, book_id, key)
    svc.redis.hset(svc.keys.book(book_id), "state", "succeeded")
    svc.redis.srem(svc.keys.books_active(), book_id)
    return book_id


def test_delete_of_a_finished_book_keeps_shared_checkpoints(idle_books: Any) -> None:
    api = idle_books.test_client()
    svc = idle_books.extensions["spool"]
    shared, own = (svc.keys.segment_checkpoint(uuid.uuid4().hex * 2) for _ in range(2))
    first = finished_book(api, svc, [shared, own])
    second = finished_book(api, svc, [shared])
    assert svc.storage.list(f"books/{first}/")
    assert api.delete(f"/v1/books/{first}").status_code == 204
    assert svc.storage.list(f"books/{first}/") == []
    assert not svc.storage.exists(own) and svc.storage.exists(shared)  # the second book still uses it
    assert api.get(f"/v1/books/{first}").status_code == 404
    assert api.delete(f"/v1/books/{second}").status_code == 204
    assert not svc.storage.exists(shared)
    assert not svc.redis.hlen(svc.keys.checkpoint_refs())


def test_sweeper_deletes_expired_files_and_keeps_fresh_ones(settings: Settings, tmp_path: Path) -> None:
    svc = Services(
        settings.replace(key_prefix=f"s{uuid.uuid4().hex[:8]}:", retention_days=30, checkpoint_retention_days=10),
        storage=LocalStorage(tmp_path / "storage"),
    )
    try:
        old = time.time() - 40 * DAY
        expired, fresh = uuid.uuid4().hex, uuid.uuid4().hex
        queued, _ = svc.jobs.create(JobSpec(text="Still queued."), owner="public", queue="sweep-idle")
        active_book = uuid.uuid4().hex
        stale_ckpt, needed_ckpt = (svc.keys.segment_checkpoint(uuid.uuid4().hex * 2) for _ in range(2))
        files = {
            svc.keys.job_audio(expired, "mp3"): old,
            svc.keys.storage_key("jobs", expired, "stream.pcm"): old,
            svc.keys.job_audio(fresh, "mp3"): time.time(),
            svc.keys.job_audio(queued.id, "mp3"): old,  # an unfinished job is never swept
            svc.keys.book_file(active_book, "plan.json"): old,  # nor a book in flight
            stale_ckpt: old,
            needed_ckpt: old,  # used by the book in flight
        }
        for key, modified in files.items():
            svc.storage.put(key, b"data")
            path = tmp_path / "storage" / key
            os.utime(path, (modified, modified))
        svc.redis.sadd(svc.keys.books_active(), active_book)
        reference_checkpoint(svc, active_book, needed_ckpt)
        assert maybe_sweep(svc, background=False) is True
        assert maybe_sweep(svc, background=False) is False  # one sweep per interval (the lock)
        left = set(svc.storage.list("jobs/")) | set(svc.storage.list("books/")) | set(svc.storage.list("segments/"))
        assert left == {
            svc.keys.job_audio(fresh, "mp3"),
            svc.keys.job_audio(queued.id, "mp3"),
            svc.keys.book_file(active_book, "plan.json"),
            needed_ckpt,
        }
        assert sweep(svc) == {"jobs": 0, "books": 0, "segments": 0}  # nothing more is due
    finally:
        for key in svc.redis.scan_iter(match=svc.keys.prefix + "*"):
            svc.redis.delete(key)
        svc.close()

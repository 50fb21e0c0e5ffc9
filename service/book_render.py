"""The book render: one batch of segments into checkpoints, and the assembly of a finished book.

A worker's tasks call these with the process's engine; the batch that completes a book
assembles it while holding the book's lock (see ``service.books``).

Assembly streams: chapter by chapter, each checkpoint is read from storage, fed to the chapter's
MP3 encoder and a spool file on disk, and dropped (``engine.audiobook.assemble_streamed``); the
outputs and the zip are written to a temporary directory and uploaded from their files
(multipart for large ones). Memory does not grow with the length of the book. A thread renews
the assembly lock every third of ``SPOOL_ASSEMBLY_LOCK_TTL`` while it works; if the lock is lost
(Redis lost it, or this process stalled past the TTL) the assembly stops before the next chapter
or upload and leaves the book to the worker that holds it.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import redis as redis_lib

from engine.audio import AUDIO_FORMATS
from engine.audiobook import ChapterSource, Piece, assemble_streamed
from engine.exceptions import SpoolError
from engine.subtitles import cues_from_chunks
from service.books import (
    BookStore,
    decode_checkpoint,
    encode_checkpoint,
    plan_segment,
    segment_digest,
)
from service.exceptions import AssemblyLockLostError
from service.lanes import claim_yield
from service.retention import reference_checkpoint
from service.states import FINISHED
from service.waiting import record_segment

if TYPE_CHECKING:
    from engine import Engine
    from engine.speech import ResolvedVoice

log = logging.getLogger("spool.books")

#: Content types of the book outputs that are not one of the audio formats (chapter MP3s are).
_CONTENT_TYPES = {
    ".m4b": "audio/mp4",
    ".srt": "application/x-subrip",
    ".vtt": "text/vtt",
    ".json": "application/json",
}


def plan_book(store: BookStore, book_id: str, worker_name: str) -> int:
    """Split a submitted book into segments and queue its batches; return how many segments."""
    try:
        return store.plan_and_queue(book_id, worker_name)
    except SpoolError as exc:
        # Text the segmenter refuses cannot be fixed by retrying: the book fails with the reason.
        store.fail(book_id, exc.code, exc.message)
        return 0


def render_batch(store: BookStore, engine: Engine, book_id: str, batch: int, worker_name: str) -> list[str]:
    """Render segments of one batch that have no checkpoint yet; return the checkpoint keys."""
    svc = store.svc
    rec = store.record(book_id)
    if rec.state in FINISHED:
        return []
    spec = rec.render_spec
    try:
        rv = dataclasses.replace(engine.check(spec.voice, spec.speed, spec.language), lexicon=store.lexicon(rec))
    except SpoolError as exc:
        store.fail(book_id, exc.code, exc.message)
        return []
    store.start_batch(book_id, batch, worker_name)
    plan = store.plan(book_id)
    first, end = plan["batches"][batch]
    queue = store.queue(book_id)
    keys = []
    for seg in plan["segments"][first:end]:
        if store.state(book_id) in FINISHED:
            log.info("book %s is %s: stopping", book_id, store.state(book_id))
            return keys
        key = svc.keys.segment_checkpoint(
            segment_digest(seg, rv.spec, rv.speed, rv.lang, engine.model_id, rv.lexicon)
        )
        if store.is_segment_done(book_id, seg["i"]):
            keys.append(key)
            continue
        rendered = not svc.storage.exists(key)
        if not rendered:
            seconds = _duration(svc.storage.get(key))  # rendered before: by a retry, or the same book again
        else:
            if claim_yield(svc, queue, worker_name):
                # Interactive work waits on a higher lane: give way now, the rest of the batch goes
                # back to the queue (issue 19), so the job starts within one segment's render time.
                store.hand_back_batch(book_id, batch)
                store.log_event(book_id, "yield", batch=batch, segment=seg["i"], worker=worker_name)
                log.info(
                    "book %s: batch %d handed back at segment %d for waiting work", book_id, batch, seg["i"]
                )
                return keys
            began = time.perf_counter()
            chunk = engine.synthesize_segment(plan_segment(seg), rv, is_last=seg["last"])
            record_segment(svc, queue, time.perf_counter() - began)  # the rate queue ETAs use
            svc.storage.put(key, encode_checkpoint(chunk), "application/octet-stream")
            store.count_render(book_id, seg["i"])
            seconds = chunk.duration
        store.segment_done(book_id, seg["i"], seconds)
        reference_checkpoint(svc, book_id, key)  # so deleting the book knows which checkpoints it shared
        store.log_event(book_id, "segment", segment=seg["i"], worker=worker_name, rendered=int(rendered))
        keys.append(key)
    store.finish_batch(book_id, batch)
    if store.try_assembly(book_id):
        # The batch that completes the book assembles it here, holding the lock (no extra hop).
        keys.extend(assemble_book(store, engine, book_id))
    return keys


def _duration(data: bytes) -> float:
    """Seconds of audio in a checkpoint."""
    with np.load(io.BytesIO(data), allow_pickle=False) as saved:
        return len(saved["samples"]) / int(saved["rate"])


class LockRenewer(threading.Thread):
    """Renews a book's assembly lock every third of its TTL while the assembly runs."""

    def __init__(self, store: BookStore, book_id: str, token: str) -> None:
        super().__init__(name=f"spool-assembly-lock-{book_id[:8]}", daemon=True)
        self.store = store
        self.book_id = book_id
        self.token = token
        self.interval = store.svc.settings.assembly_lock_ttl / 3
        self.renewals = 0
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Renew until stopped or the lock is lost; a Redis hiccup is retried at the next turn."""
        while not self._stop_event.wait(self.interval):
            try:
                if not self.store.renew_assembly(self.book_id, self.token):
                    log.warning("book %s: the assembly lock was lost; stopping this assembly", self.book_id)
                    self.lost.set()
                    return
                self.renewals += 1
            except redis_lib.RedisError as exc:
                log.warning("book %s: could not renew the assembly lock (%s); retrying", self.book_id, exc)

    def check(self) -> None:
        """Raise AssemblyLockLostError once the lock is no longer this assembly's."""
        if self.lost.is_set():
            raise AssemblyLockLostError(
                f"Book {self.book_id}'s assembly lock expired or was taken over; another worker assembles "
                "it. If this repeats, raise SPOOL_ASSEMBLY_LOCK_TTL.",
                book_id=self.book_id,
            )

    def __enter__(self) -> LockRenewer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def assemble_book(store: BookStore, engine: Engine, book_id: str) -> list[str]:
    """Assemble a book whose segments are all done, holding (and renewing) its lock; return the keys written."""
    rec = store.record(book_id)
    if rec.state in FINISHED:
        return []
    token = store.hold_assembly(book_id)
    if token is None:
        log.info("book %s: another worker holds the assembly lock; leaving the assembly to it", book_id)
        return []
    try:
        with LockRenewer(store, book_id, token) as lock:
            return _assemble(store, engine, book_id, lock)
    except AssemblyLockLostError as exc:
        log.warning("%s", exc.message)
        return []


def _chapter_pieces(
    store: BookStore, engine: Engine, rv: ResolvedVoice, segs: list[dict[str, Any]]
) -> Iterator[Piece]:
    """One chapter's checkpoints, read one at a time: samples and cues (times from the chapter's start)."""
    svc = store.svc
    at = 0.0
    for seg in segs:
        key = svc.keys.segment_checkpoint(
            segment_digest(seg, rv.spec, rv.speed, rv.lang, engine.model_id, rv.lexicon)
        )
        chunk = decode_checkpoint(svc.storage.get(key), plan_segment(seg))
        yield chunk.samples, cues_from_chunks([chunk], offset=at)
        at += chunk.duration


def _assemble(store: BookStore, engine: Engine, book_id: str, lock: LockRenewer) -> list[str]:
    """The assembly itself, streamed from the checkpoints to files on disk and from them to storage."""
    svc = store.svc
    rec = store.record(book_id)
    store.start_assembly(book_id)
    spec = rec.render_spec
    rv = dataclasses.replace(engine.check(spec.voice, spec.speed, spec.language), lexicon=store.lexicon(rec))
    plan = store.plan(book_id)
    segments = plan["segments"]
    sources = [
        ChapterSource(
            chapter["title"],
            rv.sample_rate,
            lambda c=chapter: _chapter_pieces(
                store, engine, rv, segments[c["first"] : c["first"] + c["count"]]
            ),
            tuple(chapter.get("parents", ())),
        )
        for chapter in plan["chapters"]
    ]
    cover = None
    cover_key = svc.keys.book_file(book_id, "cover")
    if rec.cover_type and svc.storage.exists(cover_key):
        cover = svc.storage.get(cover_key)
    keys = []
    with tempfile.TemporaryDirectory(prefix="spool-book-") as tmp:
        out = Path(tmp) / "book"
        manifest = assemble_streamed(
            sources,
            out,
            title=rec.title or "Untitled",
            author=rec.author,
            cover=cover,
            cover_type=rec.cover_type or None,
            gap=spec.gap,
            skipped=plan.get("skipped", []),
            on_chapter=lambda _n: lock.check(),
        )
        names = [*manifest["files"], "manifest.json"]
        zipped = Path(tmp) / "book.zip"
        with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in names:
                archive.write(out / name, arcname=name)
        for name, path in [*((n, out / n) for n in names), ("book.zip", zipped)]:
            lock.check()
            key = svc.keys.book_file(book_id, name)
            with open(path, "rb") as fh:
                svc.storage.put(key, fh, _content_type(name))
            keys.append(key)
        lock.check()
    store.succeed(book_id, manifest)
    log.info(
        "book %s assembled: %d chapters, %.1f min (lock renewed %d times)",
        book_id,
        len(sources),
        manifest["duration"] / 60,
        lock.renewals,
    )
    return keys


def _content_type(name: str) -> str:
    """Content type of a book output by its name."""
    if name.endswith(".zip"):
        return "application/zip"
    suffix = Path(name).suffix
    audio = AUDIO_FORMATS.get(suffix.lstrip("."))
    return _CONTENT_TYPES.get(suffix) or (audio.content_type if audio else "application/octet-stream")

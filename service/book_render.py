"""The book render: one batch of segments into checkpoints, and the assembly of a finished book.

A worker's tasks call these with the process's engine; the batch that completes a book
assembles it while holding the book's lock (see ``service.books``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.audio import AUDIO_FORMATS
from engine.audiobook import ChapterAudio, assemble
from engine.exceptions import SpoolError
from engine.subtitles import cues_from_chunks
from service.books import (
    BookStore,
    decode_checkpoint,
    encode_checkpoint,
    plan_segment,
    segment_digest,
)
from service.lanes import claim_yield
from service.retention import reference_checkpoint
from service.states import FINISHED

if TYPE_CHECKING:
    from engine import Engine

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
            chunk = engine.synthesize_segment(plan_segment(seg), rv, is_last=seg["last"])
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


def assemble_book(store: BookStore, engine: Engine, book_id: str) -> list[str]:
    """The assembly itself (the caller holds the book's lock); returns the storage keys written."""
    svc = store.svc
    rec = store.record(book_id)
    if rec.state in FINISHED:
        return []
    store.start_assembly(book_id)
    spec = rec.render_spec
    rv = dataclasses.replace(engine.check(spec.voice, spec.speed, spec.language), lexicon=store.lexicon(rec))
    plan = store.plan(book_id)
    chapters = []
    for chapter in plan["chapters"]:
        chunks = []
        for seg in plan["segments"][chapter["first"] : chapter["first"] + chapter["count"]]:
            key = svc.keys.segment_checkpoint(
                segment_digest(seg, rv.spec, rv.speed, rv.lang, engine.model_id, rv.lexicon)
            )
            chunks.append(decode_checkpoint(svc.storage.get(key), plan_segment(seg)))
        samples = np.concatenate([c.samples for c in chunks]).astype(np.float32)
        chapters.append(
            ChapterAudio(
                chapter["title"],
                samples,
                rv.sample_rate,
                cues_from_chunks(chunks),
                tuple(chapter.get("parents", ())),
            )
        )
    cover = None
    cover_key = svc.keys.book_file(book_id, "cover")
    if rec.cover_type and svc.storage.exists(cover_key):
        cover = svc.storage.get(cover_key)
    keys = []
    with tempfile.TemporaryDirectory(prefix="spool-book-") as tmp:
        out = Path(tmp)
        manifest = assemble(
            chapters,
            out,
            title=rec.title or "Untitled",
            author=rec.author,
            cover=cover,
            cover_type=rec.cover_type or None,
            gap=spec.gap,
            skipped=plan.get("skipped", []),
        )
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in [*manifest["files"], "manifest.json"]:
                archive.write(out / name, arcname=name)
        for name in [*manifest["files"], "manifest.json"]:
            key = svc.keys.book_file(book_id, name)
            suffix = Path(name).suffix
            audio = AUDIO_FORMATS.get(suffix.lstrip("."))
            content_type = _CONTENT_TYPES.get(suffix) or (
                audio.content_type if audio else "application/octet-stream"
            )
            with open(out / name, "rb") as fh:
                svc.storage.put(key, fh, content_type)
            keys.append(key)
        key = svc.keys.book_file(book_id, "book.zip")
        svc.storage.put(key, zipped.getvalue(), "application/zip")
        keys.append(key)
    store.succeed(book_id, manifest)
    log.info("book %s assembled: %d chapters, %.1f min", book_id, len(chapters), manifest["duration"] / 60)
    return keys

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
import json
import logging
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import redis as redis_lib

from engine.audio import AUDIO_FORMATS
from engine.audiobook import (
    CHAPTER_FORMAT,
    ChapterSource,
    Piece,
    PreviousM4B,
    assemble_streamed,
    cues_from_json,
)
from engine.exceptions import SpoolError
from engine.subtitles import cues_from_chunks
from service.book_fix import chapter_digest, plan_revision
from service.books import (
    BookStore,
    _text,
    decode_checkpoint,
    encode_checkpoint,
    plan_segment,
    segment_digest,
)
from service.exceptions import AssemblyLockLostError
from service.lanes import claim_yield
from service.qa import QaRun, book_report, start_run
from service.retention import reference_checkpoint, reference_plan
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


def plan_book(
    store: BookStore, book_id: str, worker_name: str, engine: Callable[[], Engine] | None = None
) -> int:
    """Split a submitted book into segments and queue its batches; return how many segments.

    A fixed book's new revision (revision 2 on) is planned by ``service.book_fix.plan_revision``
    with the worker's engine (``engine()``), which names the segments to reuse.
    """
    t0, cpu0 = time.time(), time.thread_time()
    try:
        if engine is not None and int(_text(store.redis.hget(store.keys.book(book_id), "revision")) or 1) > 1:
            count = plan_revision(store, engine(), book_id, worker_name)
        else:
            count = store.plan_and_queue(book_id, worker_name)
    except SpoolError as exc:
        # Text the segmenter refuses cannot be fixed by retrying: the book fails with the reason.
        store.fail(book_id, exc.code, exc.message)
        return 0
    if count:
        # Wall and CPU of the planning, for the phase breakdown (benchmarks/book_phases.py).
        store.log_event(book_id, "plan", worker=worker_name, **_took(t0, cpu0), segments=count)
    return count


def _took(t0: float, cpu0: float) -> dict[str, str]:
    """The event fields of a step that began at wall time ``t0`` with this thread's CPU at ``cpu0``."""
    return {"t0": f"{t0:.4f}", "dt": f"{time.time() - t0:.4f}", "cpu": f"{time.thread_time() - cpu0:.4f}"}


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

    def checkpoint_of(seg: dict[str, Any]) -> str:
        return svc.keys.segment_checkpoint(segment_digest(seg, rv.spec, rv.speed, rv.lang, engine.model_id, rv.lexicon))

    # Checkpoints are referenced before they are looked for, so another book's purge keeps them
    # (service.retention): all of them at the book's first batch, then each again as it is reached.
    reference_plan(svc, book_id, lambda: [checkpoint_of(seg) for seg in plan["segments"]])
    keys = []
    for seg in plan["segments"][first:end]:
        t0, cpu0 = time.time(), time.thread_time()
        if store.state(book_id) in FINISHED:
            log.info("book %s is %s: stopping", book_id, store.state(book_id))
            return keys
        key = checkpoint_of(seg)
        if store.is_segment_done(book_id, seg["i"]):
            keys.append(key)
            continue
        reference_checkpoint(svc, book_id, key)
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
        done = _took(t0, cpu0)
        store.log_event(
            book_id, "segment", segment=seg["i"], worker=worker_name, rendered=int(rendered), **done
        )
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
    store: BookStore,
    engine: Engine,
    rv: ResolvedVoice,
    segs: list[dict[str, Any]],
    qa: QaRun | None = None,
    chapter: tuple[int, str] = (0, ""),
) -> Iterator[Piece]:
    """One chapter's checkpoints, read one at a time: samples and cues (times from the chapter's start)."""
    svc = store.svc
    at = 0.0
    for seg in segs:
        key = svc.keys.segment_checkpoint(
            segment_digest(seg, rv.spec, rv.speed, rv.lang, engine.model_id, rv.lexicon)
        )
        chunk = decode_checkpoint(svc.storage.get(key), plan_segment(seg))
        if qa is not None:  # QA hears the audio the book is assembled from (issue 17 part 4)
            qa.check(chunk, start=at, chapter=chapter[0], chapter_title=chapter[1])
        yield chunk.samples, cues_from_chunks([chunk], offset=at)
        at += chunk.duration


def _assemble(store: BookStore, engine: Engine, book_id: str, lock: LockRenewer) -> list[str]:
    """The assembly itself, streamed from the checkpoints to files on disk and from them to storage.

    A fixed book's revision is written beside the files it replaces (``books/<id>/r<N>/``), which
    keep being served until it succeeds; a chapter whose audio is unchanged (same chapter digest)
    has its file copied from the previous revision rather than encoded again.
    """
    # Process CPU (the encoders run on two threads) and this thread's (the critical path).
    t0, cpu0, thread0 = time.time(), time.process_time(), time.thread_time()
    svc = store.svc
    rec = store.record(book_id)
    store.start_assembly(book_id)
    spec = rec.render_spec
    revision = rec.revision
    rv = dataclasses.replace(engine.check(spec.voice, spec.speed, spec.language), lexicon=store.lexicon(rec))
    plan = store.plan(book_id)
    segments = plan["segments"]
    qa_run = start_run(svc.settings, rv.lang) if spec.qa else None
    qa = qa_run if isinstance(qa_run, QaRun) else None
    previous = json.loads(rec.manifest) if rec.manifest else None
    served = rec.served_revision or (1 if previous else 0)
    old_chapters = previous["chapters"] if previous and served != revision else []
    count = len(plan["chapters"])
    sources = []
    reuse: dict[int, str] = {}  # chapter number -> the previous revision's file to copy
    for n, chapter in enumerate(plan["chapters"], start=1):
        segs = segments[chapter["first"] : chapter["first"] + chapter["count"]]
        digest = chapter_digest(
            [segment_digest(seg, rv.spec, rv.speed, rv.lang, engine.model_id, rv.lexicon) for seg in segs],
            chapter["title"],
            spec.gap if n < count else 0.0,
            n == count,
            rv.sample_rate,
        )
        old = old_chapters[n - 1] if n <= len(old_chapters) and len(old_chapters) == count else None
        same = old is not None and old.get("digest") == digest
        if same:
            reuse[n] = old["file"]
        sources.append(
            ChapterSource(
                chapter["title"],
                rv.sample_rate,
                lambda segs=segs, n=n, t=chapter["title"]: _chapter_pieces(store, engine, rv, segs, qa, (n, t)),
                tuple(chapter.get("parents", ())),
                meta={"digest": digest, "revision": int(old.get("revision", 1)) if same and old else revision},
            )
        )
    cover = None
    cover_key = svc.keys.book_file(book_id, "cover")
    if rec.cover_type and svc.storage.exists(cover_key):
        cover = svc.storage.get(cover_key)
    keys = []
    steps: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="spool-book-") as tmp:
        previous_m4b = None
        if reuse:
            old_cues = _old_cues(store, book_id, served, count)
            for n, name in reuse.items():
                # The unchanged chapter's file as the previous revision has it: copied, not encoded again.
                path = Path(tmp) / f"reuse-{n}.{CHAPTER_FORMAT}"
                _download(store, svc.keys.book_revision_file(book_id, served, name), path)
                source = sources[n - 1]
                source.encoded = path
                entry = old_chapters[n - 1]
                if old_cues is not None and "samples" in entry:
                    source.cues, source.length = cues_from_json(old_cues[n - 1]), int(entry["samples"])
            if all("offset" in c and "samples" in c for c in old_chapters):
                # The M4B is rebuilt from the previous one: unchanged chapters' packets are copied.
                previous_m4b = PreviousM4B(
                    Path(tmp) / "previous.m4b",
                    [(int(c["offset"]), int(c["offset"]) + int(c["samples"])) for c in old_chapters],
                )
                _download(store, svc.keys.book_revision_file(book_id, served, "book.m4b"), previous_m4b.path)
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
            concurrent=svc.settings.assembly_concurrent,
            timings=steps,
            extra={"revision": revision},
            previous=previous_m4b,
            cues_file=Path(tmp) / "cues.json",
        )
        steps["encoded_at"] = time.time()
        if qa_run is not None:
            manifest["qa"] = book_report(qa_run, manifest)
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
        names = [*manifest["files"], "manifest.json"]
        zipped = Path(tmp) / "book.zip"
        with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in names:
                archive.write(out / name, arcname=name)
        steps["zipped_at"] = time.time()
        # cues.json (each chapter's cues) is not one of the book's files: the next fix reads it.
        uploads = [*((n, out / n) for n in names), ("book.zip", zipped), ("cues.json", Path(tmp) / "cues.json")]
        for name, path in uploads:
            lock.check()
            key = svc.keys.book_revision_file(book_id, revision, name)
            with open(path, "rb") as fh:
                svc.storage.put(key, fh, _content_type(name))
            if name != "cues.json":
                keys.append(key)
        lock.check()
    # Where the assembly's time went, for the phase breakdown (benchmarks/book_phases.py).
    store.log_event(
        book_id,
        "assembly",
        t0=f"{t0:.4f}",
        dt=f"{time.time() - t0:.4f}",
        cpu=f"{time.process_time() - cpu0:.4f}",
        thread_cpu=f"{time.thread_time() - thread0:.4f}",
        **{k: f"{v:.4f}" for k, v in steps.items()},
    )
    store.succeed(book_id, manifest)
    if previous and served and served != revision:
        _drop_revision(store, book_id, served, [*previous["files"], "manifest.json", "book.zip", "cues.json"])
    log.info(
        "book %s assembled (revision %d): %d chapters, %d copied unchanged, %.1f min (lock renewed %d times)",
        book_id,
        revision,
        len(sources),
        len(reuse),
        manifest["duration"] / 60,
        lock.renewals,
    )
    return keys


def _download(store: BookStore, key: str, path: Path) -> None:
    """Copy a stored object to a local file, in pieces."""
    with open(path, "wb") as fh:
        for block in store.svc.storage.iter_range(key, 0, None):
            fh.write(block)


def _old_cues(store: BookStore, book_id: str, revision: int, count: int) -> list[Any] | None:
    """Each chapter's cues as the previous revision's assembly kept them (None when it kept none)."""
    key = store.keys.book_revision_file(book_id, revision, "cues.json")
    if not store.svc.storage.exists(key):
        return None
    cues = json.loads(store.svc.storage.get(key))
    return cues if len(cues) == count else None


def _drop_revision(store: BookStore, book_id: str, revision: int, names: list[str]) -> None:
    """Delete a replaced revision's outputs (its plan and source stay: they are small)."""
    for name in names:
        try:
            store.svc.storage.delete(store.keys.book_revision_file(book_id, revision, name))
        except SpoolError as exc:  # a leftover file costs storage only; the prefix goes with the book
            log.warning("book %s: could not delete revision %d's %s: %s", book_id, revision, name, exc.message)


def _content_type(name: str) -> str:
    """Content type of a book output by its name."""
    if name.endswith(".zip"):
        return "application/zip"
    suffix = Path(name).suffix
    audio = AUDIO_FORMATS.get(suffix.lstrip("."))
    return _CONTENT_TYPES.get(suffix) or (audio.content_type if audio else "application/octet-stream")

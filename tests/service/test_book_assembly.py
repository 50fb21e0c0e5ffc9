"""Book assembly streamed from checkpoints: same outputs as the in-memory assembly, lock renewed while it works.

A synthetic book (real record, plan and checkpoints; audio made without the model, see
``tests/fixtures/synthetic_book.py``) is assembled by :func:`service.book_render.assemble_book`
into local storage, with the session's Redis. The reference is what assembly did before it
streamed: every chapter's samples joined in memory and encoded whole.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import av
import numpy as np

from config.settings import Settings
from engine.audio import encode_audio
from engine.audiobook import CHAPTER_FORMAT, safe_name, write_m4b
from engine.subtitles import Cue, cues_from_chunks, to_srt, to_vtt
from service.book_render import assemble_book
from service.books import decode_checkpoint, plan_segment, segment_digest
from service.services import Services
from service.storage import LocalStorage
from tests.fixtures.synthetic_book import MODEL_ID, RATE, SyntheticEngine, make_book

#: Lock TTL of these tests (renewed every third of it): the assembly must outlive it.
LOCK_TTL = 1


def _reference(svc: Services, book_id: str, out: Path) -> dict[str, bytes]:
    """The outputs as the in-memory assembly made them: whole chapters joined, then encoded."""
    store = svc.books
    plan = store.plan(book_id)
    rec = store.record(book_id)
    spec = rec.render_spec
    rv = SyntheticEngine().check(spec.voice, spec.speed, spec.language)
    silence = np.zeros(int(round(spec.gap * RATE)), dtype=np.float32)
    files: dict[str, bytes] = {}
    pieces, marks, cues, at = [], [], [], 0
    for n, chapter in enumerate(plan["chapters"], start=1):
        chunks = [
            decode_checkpoint(
                svc.storage.get(
                    svc.keys.segment_checkpoint(segment_digest(seg, rv.spec, rv.speed, rv.lang, MODEL_ID))
                ),
                plan_segment(seg),
            )
            for seg in plan["segments"][chapter["first"] : chapter["first"] + chapter["count"]]
        ]
        samples = np.concatenate([c.samples for c in chunks]).astype(np.float32)
        start = at / RATE
        files[f"{safe_name(chapter['title'], n)}.{CHAPTER_FORMAT}"] = encode_audio(
            samples, RATE, CHAPTER_FORMAT
        )
        cues += [
            Cue(round(c.start + start, 3), round(c.end + start, 3), c.text, c.words)
            for c in cues_from_chunks(chunks)
        ]
        pieces.append(samples)
        at += len(samples)
        marks.append((chapter["title"], start, at / RATE))
        if n < len(plan["chapters"]):
            pieces.append(silence)
            at += len(silence)
    write_m4b(out / "book.m4b", np.concatenate(pieces), RATE, marks, title=rec.title, author=rec.author)
    files["book.m4b"] = (out / "book.m4b").read_bytes()
    files["book.srt"] = to_srt(cues).encode()
    files["book.vtt"] = to_vtt(cues).encode()
    return files


def _services(settings: Settings, tmp_path: Path) -> Services:
    return Services(settings.replace(assembly_lock_ttl=LOCK_TTL), storage=LocalStorage(tmp_path / "storage"))


def test_streamed_assembly_gives_the_same_files_and_keeps_its_lock(
    settings: Settings, tmp_path: Path
) -> None:
    svc = _services(settings, tmp_path)
    rival = Services(svc.settings, storage=svc.storage)  # a second worker, with its own connections
    try:
        book = make_book(svc, chapters=3, segments_per_chapter=10, segment_seconds=8.0, gap=0.7)
        store = svc.books
        assert store.try_assembly(book.id)  # what the batch that completes the book does
        token = store.assembly_token(book.id)
        seen: dict[str, Any] = {"taken": 0, "tokens": set(), "polls": 0}
        stop = threading.Event()

        def second_worker() -> None:
            # What recovery on another worker does each beat: take the lock if it is free.
            while not stop.is_set():
                if rival.books.try_assembly(book.id):
                    seen["taken"] += 1
                seen["tokens"].add(rival.books.assembly_token(book.id))
                seen["polls"] += 1
                stop.wait(0.1)  # the rival's polling period, not a synchronisation

        thread = threading.Thread(target=second_worker)
        thread.start()
        started = time.monotonic()
        keys = assemble_book(store, SyntheticEngine(), book.id)  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
        stop.set()
        thread.join(timeout=10)
        assert elapsed > LOCK_TTL, f"assembly took {elapsed:.1f} s: too quick to show the lock is renewed"
        assert seen["taken"] == 0 and seen["polls"] > 5
        assert seen["tokens"] - {None} == {token}  # nobody else ever held it
        rec = store.record(book.id)
        assert rec.state == "succeeded"
        assert store.assembly_token(book.id) is None  # released on success

        expected = _reference(svc, book.id, tmp_path)
        manifest = store.payload(book.id)["manifest"]
        assert sorted(manifest["files"]) == sorted(expected)
        for name, data in expected.items():
            assert svc.storage.get(svc.keys.book_file(book.id, name)) == data, name
        assert len(keys) == len(expected) + 2  # and manifest.json, book.zip
        with zipfile.ZipFile(io.BytesIO(svc.storage.get(svc.keys.book_file(book.id, "book.zip")))) as archive:
            assert sorted(archive.namelist()) == sorted([*expected, "manifest.json"])
            for name, data in expected.items():
                assert archive.read(name) == data, name
        with av.open(io.BytesIO(expected["book.m4b"])) as container:
            titles = [c["metadata"]["title"] for c in container.chapters()]
        assert titles == [c["title"] for c in manifest["chapters"]] == ["Chapter 1", "Chapter 2", "Chapter 3"]
        assert abs(manifest["duration"] - (book.seconds + 2 * 0.7)) < 0.01
    finally:
        rival.close()
        svc.close()


def test_an_assembly_that_loses_its_lock_stops_and_leaves_the_book_to_the_holder(
    settings: Settings, tmp_path: Path
) -> None:
    svc = _services(settings, tmp_path)
    try:
        book = make_book(svc, chapters=3, segments_per_chapter=6, segment_seconds=8.0)
        store = svc.books
        assert store.try_assembly(book.id)
        lock_key = svc.keys.book_lock(book.id)
        stop = threading.Event()

        def take_over() -> None:
            # Once assembly runs, the lock passes to another holder (as after an expiry and a takeover).
            while not stop.is_set() and store.state(book.id) != "assembling":
                stop.wait(0.02)
            svc.redis.set(lock_key, "another-worker", ex=60)

        thread = threading.Thread(target=take_over)
        thread.start()
        keys = assemble_book(store, SyntheticEngine(), book.id)  # type: ignore[arg-type]
        stop.set()
        thread.join(timeout=10)
        assert keys == []
        assert store.state(book.id) == "assembling"  # not marked done by the worker that lost the lock
        assert svc.redis.get(lock_key) == b"another-worker"  # the holder's lock is left alone
        assert not svc.storage.exists(svc.keys.book_file(book.id, "book.zip"))
    finally:
        svc.close()


def test_assembly_with_its_encoders_on_one_thread_or_two_stores_the_same_files_and_logs_its_steps(
    settings: Settings, tmp_path: Path
) -> None:
    stored: dict[bool, dict[str, bytes]] = {}
    for concurrent in (False, True):
        svc = Services(
            settings.replace(assembly_concurrent=concurrent),
            storage=LocalStorage(tmp_path / f"s{concurrent}"),
        )
        try:
            book = make_book(svc, chapters=2, segments_per_chapter=3, segment_seconds=4.0, seed=3)
            assert assemble_book(svc.books, SyntheticEngine(), book.id)  # type: ignore[arg-type]
            manifest = svc.books.payload(book.id)["manifest"]
            stored[concurrent] = {
                name: svc.storage.get(svc.keys.book_file(book.id, name)) for name in manifest["files"]
            }
            (event,) = [f for _, f in svc.books.events(book.id) if f["event"] == "assembly"]
            steps = {k: float(event[k]) for k in ("t0", "dt", "cpu", "read_s", "m4b_s", "mp3_wait_s")}
            # The steps lie inside the assembly's own wall time, which ends before the book is finished.
            assert 0 < steps["read_s"] + steps["m4b_s"] + steps["mp3_wait_s"] <= steps["dt"]
            assert steps["t0"] + steps["dt"] <= svc.books.record(book.id).finished_at  # type: ignore[operator]
            assert steps["cpu"] > 0
        finally:
            svc.close()
    assert stored[True] == stored[False] and len(stored[True]) == 5  # m4b, srt, vtt, two chapter MP3s

"""Book rendering as a service: plan in a worker, fan segments out to every worker, assemble once.

A submitted book is checked cheaply in the web process and parsed into chapters by a light worker
in a child process with limits (``service.book_parse``); the chosen chapters go to storage
(``source.json``) and a plan task to the queue. A worker
splits them into segments (``plan.json``) and makes the segments ready in small batches for the
fair dispatcher (``service.dispatch``: round-robin by key, then by book, one low-lane token per
batch), so every worker takes part, two books progress together and interactive jobs still
overtake them. Each rendered
segment is checkpointed in storage under a hash of what it was made from (text, voice, speed,
language, model), so a retry, a restart or the same book submitted again renders nothing twice.
When the last segment is done one worker, holding the book's lock, assembles the audiobook.

A worker killed mid-batch leaves its batch marked ``running:<worker>``; the heartbeat of any
live worker notices the dead owner and queues the batch again (the checkpoints make that safe).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from config import defaults
from engine.book import Book, Chapter
from engine.chunk import AudioChunk, WordTiming
from engine.lexicon import Lexicon
from engine.segment import Segment, split_text
from service import dispatch, waiting
from service.exceptions import ConflictError, NotFoundError
from service.keys import new_id
from service.qa import book_qa_view
from service.record import HashRecord, hash_mapping
from service.states import FINISHED, BookState
from service.task_names import BOOK_PLAN, BOOK_RENDER

if TYPE_CHECKING:
    from service.services import Services

log = logging.getLogger("spool.books")

#: Segments per render task: small, so work spreads evenly over workers and a crash loses little.
BATCH_SIZE = 4

#: The last this many segments of a book are queued one per task, so at the end of a book no
#: worker sits idle while another still has a whole batch to render (benchmarks/book_tail.py).
TAIL_SEGMENTS = 8


def batch_spans(count: int, size: int = BATCH_SIZE, tail: int = TAIL_SEGMENTS) -> list[list[int]]:
    """[first, end) segment ranges covering ``count`` segments in order: ``size`` each, the last ``tail`` alone."""
    bulk = max(0, count - tail)
    spans = [[i, min(i + size, bulk)] for i in range(0, bulk, size)]
    return spans + [[i, i + 1] for i in range(bulk, count)]



# KEYS: the assembly lock. ARGV: the holder's token, ttl in ms. Extends the lock only for its holder.
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class BookNotFoundError(NotFoundError):
    """No such book for this API key."""

    code = "book_not_found"


@dataclass(frozen=True)
class BookSpec:
    """How to render a book: voice, speed, language, chapter gap, selection and tag overrides."""

    voice: str = defaults.VOICE
    speed: float = defaults.SPEED
    language: str = "en-us"
    gap: float = 1.5
    title: str | None = None
    author: str | None = None
    chapters: tuple[int, ...] = ()
    include_matter: bool = False
    # Pronunciation (issue 17): a lexicon id and the version it had at submission.
    lexicon: str | None = None
    lexicon_version: str | None = None
    # Automatic QA of the assembled audio (issue 17 part 4, service/qa.py).
    qa: bool = False


@dataclass
class BookRecord(HashRecord):
    """One book as stored: its spec, state, progress and result (one Redis hash, field for field)."""

    id: str
    owner: str
    state: BookState = BookState.QUEUED
    title: str = ""
    author: str = ""
    cover_type: str = ""
    source: str = ""
    spec: str = "{}"  # the BookSpec as JSON (see :attr:`render_spec`)
    queue: str = ""
    created_at: float = 0.0
    planned_at: float | None = None
    planner: str | None = None  # the worker planning it, while it does
    started_at: float | None = None
    finished_at: float | None = None
    chapters_total: int = 0
    segments_total: int = 0
    audio_seconds: float = 0.0
    manifest: str | None = None  # the manifest as JSON, once assembled
    error_code: str | None = None
    error_message: str | None = None
    # Fixes (issue 17 part 3): the revision rendered last, the one whose files are served, and the
    # summary of the fix that started the current revision (JSON; see service.book_fix).
    revision: int = 1
    served_revision: int = 0
    fix: str | None = None
    # Parsing off the web process (service.book_parse): the raw upload's storage name while it is
    # parsed, the worker parsing it, how many times a parse started, and when it ended.
    upload: str = ""
    parser: str | None = None
    parse_attempts: int = 0
    parsed_at: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def render_spec(self) -> BookSpec:
        """How the book is rendered."""
        data = json.loads(self.spec)
        data["chapters"] = tuple(data.get("chapters") or ())
        return BookSpec(**data)

    @property
    def is_planned(self) -> bool:
        """True once a worker has split the chapters into segments and queued them."""
        return self.planned_at is not None


def source_chapters(source: dict[str, Any]) -> list[Chapter]:
    """The chapters stored in ``source.json`` at submission, as the engine's Chapter records."""
    return [
        Chapter(n, c["title"], c["text"], c["kind"], c.get("reason") or "", tuple(c.get("parents", ())))
        for n, c in enumerate(source["chapters"])
    ]


def plan_book(
    chapters: list[Chapter],
    lang: str,
    skipped: list[dict[str, Any]] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Split every chapter into segments; return the plan (chapters, segments, batches, what is skipped)."""
    planned_chapters = []
    segments = []
    for number, chapter in enumerate(chapters):
        pieces = split_text(chapter.text, lang=lang)
        first = len(segments)
        for piece in pieces:
            segments.append(
                {
                    "i": len(segments),
                    "c": number,
                    "n": piece.index,
                    "start": piece.start,
                    "end": piece.end,
                    "text": piece.text,
                    "spoken": piece.spoken,
                    "boundary": piece.boundary,
                    "trim_lead": piece.trim_lead,
                    "last": piece.index == len(pieces) - 1,
                }
            )
        planned_chapters.append(
            {
                "title": chapter.title,
                "kind": chapter.kind,
                "parents": list(chapter.parents),
                "words": chapter.words,
                "first": first,
                "count": len(pieces),
            }
        )
    batches = batch_spans(len(segments))
    return {
        "chapters": planned_chapters,
        "segments": segments,
        "batches": batches,
        # Every section the render leaves out, with why, so a user sees what is missing (issue 12).
        "skipped": list(skipped or []),  # Chapter.report() of each section left out
        "warnings": list(warnings or []),
    }


def segment_digest(
    seg: dict[str, Any], voice: str, speed: float, lang: str, model_id: str, lexicon: Lexicon | None = None
) -> str:
    """Content hash naming a segment's checkpoint: same text, voice, speed, language and model, same audio.

    With a lexicon, the digest of the entries this segment's text uses is part of it, so a changed
    entry re-renders only the segments that contain it (and a segment using none keeps its name).
    """
    used = lexicon.digest_for(seg["spoken"]) if lexicon is not None else ""
    parts = [
        model_id,
        voice,
        f"{speed:.4f}",
        lang,
        seg["spoken"],
        seg["boundary"],
        "last" if seg["last"] else "",
        *(["trim-lead"] if seg.get("trim_lead") else []),  # keeps older checkpoints' names valid
        *([f"lexicon:{used}"] if used else []),
    ]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def encode_checkpoint(chunk: AudioChunk) -> bytes:
    """A rendered segment as an ``.npz``: float32 samples, rate, speech end and word timings."""
    buffer = io.BytesIO()
    words = json.dumps([[w.word, w.start, w.end] for w in chunk.words])
    np.savez(
        buffer,
        samples=np.asarray(chunk.samples, dtype=np.float32),
        rate=np.array(chunk.sample_rate),
        speech_end=np.array(chunk.speech_end),
        words=np.array(words),
    )
    return buffer.getvalue()


def decode_checkpoint(data: bytes, segment: Segment) -> AudioChunk:
    """Turn a stored checkpoint back into an AudioChunk for ``segment``."""
    with np.load(io.BytesIO(data), allow_pickle=False) as saved:
        words = [WordTiming(str(w), float(s), float(e)) for w, s, e in json.loads(str(saved["words"]))]
        return AudioChunk(
            index=segment.index,
            samples=saved["samples"],
            sample_rate=int(saved["rate"]),
            segment=segment,
            words=words,
            speech_end=float(saved["speech_end"]),
        )


def plan_segment(seg: dict[str, Any]) -> Segment:
    """The Segment a plan entry describes (span relative to its chapter's text)."""
    return Segment(
        seg["n"],
        seg["start"],
        seg["end"],
        seg["text"],
        seg["spoken"],
        seg["boundary"],
        bool(seg.get("trim_lead", False)),  # plans stored before this field render as they did
    )


# KEYS: book. ARGV: now, the rendering state. The first batch to start sets the start time and state.
_START = """
if (redis.call('HGET', KEYS[1], 'started_at') or '') ~= '' then return 0 end
redis.call('HSET', KEYS[1], 'started_at', ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then redis.call('HSET', KEYS[1], 'state', ARGV[2]) end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def revision_status(store: BookStore, rec: BookRecord, done: int) -> dict[str, Any]:
    """The revision fields of a book's JSON: revision, served revision, segments reused and rendered, fix."""
    served = rec.served_revision or (1 if rec.manifest else 0)
    rendered = int(store.redis.hlen(store.keys.book_renders(rec.id)))
    note = None
    if served and served < rec.revision:
        if rec.state in FINISHED:
            note = f"Revision {rec.revision} {rec.state}; the files are revision {served}'s, the last that succeeded."
        else:
            note = f"Revision {rec.revision} is {rec.state}; until it succeeds the files are revision {served}'s."
    return {
        "revision": rec.revision,
        "served_revision": served or None,
        "segments_rendered": rendered,
        "segments_reused": max(0, done - rendered),
        "fix": {k: v for k, v in json.loads(rec.fix).items() if k != "token"} if rec.fix else None,
        "note": note,
    }


class BookStore:
    """Book records in Redis and plans in storage; every key comes from ``service.keys``."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.redis = svc.redis
        self.keys = svc.keys
        self.ttl = svc.settings.job_ttl
        self._plans: dict[str, dict[str, Any]] = {}
        self._sources: dict[str, dict[str, Any]] = {}
        self._renew_lock = self.redis.register_script(_RENEW_LOCK)

    # -- creation -------------------------------------------------------------------------------

    def lexicon(self, rec: BookRecord) -> Lexicon | None:
        """The lexicon version the book was submitted with (None without one); LexiconNotFoundError if gone."""
        spec = rec.render_spec
        if not spec.lexicon:
            return None
        return self.svc.lexicons.snapshot(rec.owner, spec.lexicon, spec.lexicon_version or "")

    def create(self, book: Book, spec: BookSpec, owner: str, *, source_name: str) -> str:
        """Store the chosen chapters and the cover, record the book, and queue its plan task; return its id.

        Splitting into segments is a worker's job (:meth:`plan`): a long book's text work never
        holds a web thread.
        """
        chapters = book.select(include_matter=spec.include_matter, chapters=list(spec.chapters) or None)
        source = {
            "chapters": [c.report() | {"text": c.text} for c in chapters],
            "skipped": [c.report() for c in book.skipped(include_matter=spec.include_matter)],
            "warnings": list(book.warnings),
        }
        book_id = new_id()
        storage = self.svc.storage
        storage.put(
            self.keys.book_file(book_id, "source.json"), json.dumps(source).encode(), "application/json"
        )
        if book.cover:
            storage.put(self.keys.book_file(book_id, "cover"), book.cover, book.cover_type or "image/jpeg")
        now = time.time()
        record = BookRecord(
            id=book_id,
            owner=owner,
            title=spec.title or book.title,
            author=spec.author if spec.author is not None else book.author,
            cover_type=book.cover_type or "",
            source=source_name,
            spec=json.dumps(spec.__dict__ | {"chapters": list(spec.chapters)}),
            queue=self.svc.settings.queue,
            created_at=now,
            chapters_total=len(chapters),
        )
        pipe = self.redis.pipeline()
        pipe.hset(self.keys.book(book_id), mapping=hash_mapping(record.to_hash()))
        pipe.zadd(self.keys.books_by_created(), {book_id: now})
        pipe.zadd(self.keys.owner_books(owner), {book_id: now})
        pipe.sadd(self.keys.books_active(), book_id)
        pipe.expire(self.keys.book(book_id), self.ttl)
        pipe.execute()
        self._sources[book_id] = source
        self.send_plan(book_id)
        log.info("book %s queued for planning: %d chapters", book_id, len(chapters))
        return book_id

    def send_plan(self, book_id: str) -> None:
        """Queue the book's plan task (normal lane: planning is quick and shows the user progress)."""
        self.svc.send_task(
            BOOK_PLAN, [book_id], queue=self.queue(book_id), priority=defaults.PRIORITIES["normal"]
        )

    def plan_and_queue(self, book_id: str, worker: str) -> int:
        """Split the stored chapters into segments, store the plan, make every batch ready; return the count.

        Runs in a worker. Idempotent: a book already planned (a redelivered task) is left alone.
        """
        rec = self.record(book_id)
        if rec.state in FINISHED or rec.is_planned:
            return 0
        self.redis.hset(self.keys.book(book_id), "planner", worker)
        spec = rec.render_spec
        source = self.source(book_id)
        plan = plan_book(
            source_chapters(source), spec.language, source.get("skipped"), source.get("warnings")
        )
        self.svc.storage.put(
            self.keys.book_file(book_id, "plan.json"), json.dumps(plan).encode(), "application/json"
        )
        pipe = self.redis.pipeline()
        pipe.hset(
            self.keys.book(book_id),
            mapping={"segments_total": len(plan["segments"]), "planned_at": repr(time.time()), "planner": ""},
        )
        pipe.hset(
            self.keys.book_batches(book_id), mapping={str(n): "queued" for n in range(len(plan["batches"]))}
        )
        pipe.expire(self.keys.book_batches(book_id), self.ttl)
        pipe.execute()
        self._plans[book_id] = plan
        # Made ready for the fair dispatcher (service.dispatch), one token each, not queued FIFO.
        dispatch.make_ready(self.svc, self.queue(book_id), book_id, rec.owner, range(len(plan["batches"])))
        log.info(
            "book %s planned: %d chapters, %d segments", book_id, len(plan["chapters"]), len(plan["segments"])
        )
        return len(plan["segments"])

    def send_batch(self, book_id: str, batch: int) -> None:
        """Queue one render batch again: ready for the fair dispatcher of the book's queue, with its token."""
        owner = _text(self.redis.hget(self.keys.book(book_id), "owner"))
        dispatch.make_ready(self.svc, self.queue(book_id), book_id, owner, [batch])

    def send_batch_message(self, book_id: str, batch: int) -> None:
        """Queue one named batch as its own message (the scheme before fair dispatch; kept for tools)."""
        self.svc.send_task(
            BOOK_RENDER,
            [book_id, batch],
            queue=self.queue(book_id),
            priority=defaults.PRIORITIES["low"],
        )

    def queue(self, book_id: str) -> str:
        """The queue a book's tasks go to (the one it was submitted with)."""
        return _text(self.redis.hget(self.keys.book(book_id), "queue")) or self.svc.settings.queue

    # -- reading --------------------------------------------------------------------------------

    def record(self, book_id: str, owner: str | None = None) -> BookRecord:
        """The book's record, or BookNotFoundError (also for another owner's book)."""
        raw = self.redis.hgetall(self.keys.book(book_id))
        # A hash without an id is the remnant of an expired book (a counter written after it went).
        rec = BookRecord.from_hash(raw) if any(_text(k) == "id" for k in raw) else None
        if rec is None or (owner is not None and rec.owner != owner):
            raise BookNotFoundError(
                f"No book {book_id!r}: it does not exist, has expired, or belongs to another API key.",
                book_id=str(book_id),
            )
        return rec

    def plan(self, book_id: str) -> dict[str, Any]:
        """The plan of the book's current revision (read from storage once per process and revision)."""
        revision = int(_text(self.redis.hget(self.keys.book(book_id), "revision")) or 1)
        cached = self._plans.get(book_id)
        if cached is None or cached.get("revision", 1) != revision:
            key = self.keys.book_revision_file(book_id, revision, "plan.json")
            cached = self._plans[book_id] = json.loads(self.svc.storage.get(key))
        return cached

    def source(self, book_id: str) -> dict[str, Any]:
        """The chapters chosen at submission, with what was skipped (read from storage once per process)."""
        if book_id not in self._sources:
            data = self.svc.storage.get(self.keys.book_file(book_id, "source.json"))
            self._sources[book_id] = json.loads(data)
        return self._sources[book_id]

    def list(self, owner: str, limit: int = 50) -> list[str]:
        """The owner's most recent book ids, newest first."""
        return [_text(b) for b in self.redis.zrevrange(self.keys.owner_books(owner), 0, limit - 1)]

    def payload(self, book_id: str, owner: str | None = None) -> dict[str, Any]:
        """The JSON form of a book: state, progress with ETA, chapters and their states, files."""
        rec = self.record(book_id, owner)
        # Before a worker plans it, the chapters are the ones chosen at submission, with no segments yet;
        # before its upload is parsed (or when the parse failed), none.
        if rec.is_planned:
            plan = self.plan(book_id)
        elif rec.upload and rec.parsed_at is None:
            plan = {"chapters": [], "skipped": [], "warnings": []}
        else:
            plan = self.source(book_id)
        spec = rec.render_spec
        done = {int(_text(i)) for i in self.redis.smembers(self.keys.book_done(book_id))}
        total = rec.segments_total
        chapters = []
        for number, chapter in enumerate(plan["chapters"], start=1):
            ids = range(chapter.get("first", 0), chapter.get("first", 0) + chapter.get("count", 0))
            finished = sum(1 for i in ids if i in done)
            count = chapter.get("count", 0)
            state = "done" if count and finished == count else ("rendering" if finished else "pending")
            chapters.append(
                {
                    "number": number,
                    "title": chapter["title"],
                    "parents": chapter.get("parents", []),
                    "state": state,
                    "segments_done": finished,
                    "segments_total": count,
                }
            )
        eta = None
        started = rec.started_at
        if started and done and rec.state == BookState.RENDERING:
            elapsed = time.time() - started
            eta = round(elapsed / len(done) * (total - len(done)), 1)
        manifest = json.loads(rec.manifest) if rec.manifest else None
        return {
            "id": book_id,
            "object": "book",
            "state": str(rec.state),
            "title": rec.title,
            "author": rec.author,
            "voice": spec.voice,
            "speed": spec.speed,
            "lexicon": spec.lexicon,
            "lexicon_version": spec.lexicon_version,
            "created_at": rec.created_at,
            "started_at": started,
            "finished_at": rec.finished_at,
            "planned": rec.is_planned,
            "progress": {
                "segments_done": len(done),
                "segments_total": total,
                "percent": round(100.0 * len(done) / total, 1) if total else 100.0,
                "audio_seconds": round(rec.audio_seconds, 2),
                "eta_seconds": eta,
            },
            "chapters": chapters,
            "queue": waiting.book_wait(self.svc, rec, len(done)),
            "skipped": plan.get("skipped", []),
            "warnings": plan.get("warnings", []),
            "duration": manifest["duration"] if manifest else None,
            "manifest": manifest,
            "qa": book_qa_view(spec.qa, manifest, self.svc.settings.qa_threshold, str(rec.state)),
            "files": manifest["files"] + ["book.zip"] if manifest else [],
            "error": {"code": rec.error_code, "message": rec.error_message or ""} if rec.error_code else None,
            **revision_status(self, rec, len(done)),
        }

    # -- state changes ----------------------------------------------------------------------------

    def cancel(self, book_id: str, owner: str | None = None) -> None:
        """Cancel a book: workers stop before their next segment; finished books cannot be cancelled."""
        rec = self.record(book_id, owner)
        if rec.state in FINISHED:
            raise ConflictError(f"Book {book_id} is already {rec.state}.", state=str(rec.state))
        self.redis.hset(
            self.keys.book(book_id), mapping={"state": BookState.CANCELLED, "finished_at": time.time()}
        )
        self.redis.srem(self.keys.books_active(), book_id)
        dispatch.withdraw(self.svc, self.queue(book_id), book_id)

    def state(self, book_id: str) -> str:
        """The book's current state ("" if gone)."""
        return _text(self.redis.hget(self.keys.book(book_id), "state"))

    def start_batch(self, book_id: str, batch: int, worker: str) -> int:
        """Mark a batch as running on ``worker`` (and the book as rendering); return its attempt number."""
        self.redis.hset(self.keys.book_batches(book_id), str(batch), f"running:{worker}")
        attempts = int(self.redis.hincrby(self.keys.book_batch_attempts(book_id), str(batch), 1))
        self.redis.expire(self.keys.book_batch_attempts(book_id), self.ttl)
        # The record is written with every field, an unset time as "", so HSETNX would never set it.
        self.redis.eval(_START, 1, self.keys.book(book_id), repr(time.time()), str(BookState.RENDERING))
        return attempts

    def is_segment_done(self, book_id: str, index: int) -> bool:
        """True when segment ``index`` of the book has been rendered (or taken from its checkpoint)."""
        return bool(self.redis.sismember(self.keys.book_done(book_id), index))

    def segment_done(self, book_id: str, index: int, audio_seconds: float) -> int:
        """Record one segment as done (once); return how many are done."""
        if self.redis.sadd(self.keys.book_done(book_id), index):
            self.redis.hincrbyfloat(self.keys.book(book_id), "audio_seconds", audio_seconds)
            self.redis.expire(self.keys.book_done(book_id), self.ttl)
        return int(self.redis.scard(self.keys.book_done(book_id)))

    def count_render(self, book_id: str, index: int) -> None:
        """Count one real synthesis of segment ``index`` (checkpoint hits are not counted)."""
        self.redis.hincrby(self.keys.book_renders(book_id), str(index), 1)
        self.redis.expire(self.keys.book_renders(book_id), self.ttl)

    def renders(self, book_id: str) -> dict[int, int]:
        """How many times each segment was actually synthesised."""
        raw = self.redis.hgetall(self.keys.book_renders(book_id))
        return {int(_text(k)): int(_text(v)) for k, v in raw.items()}

    def hand_back_batch(self, book_id: str, batch: int) -> None:
        """Put a batch a worker gave up part-way back on the queue (its done segments are skipped)."""
        self.redis.hset(self.keys.book_batches(book_id), str(batch), "queued")
        self.send_batch(book_id, batch)

    def log_event(self, book_id: str, event: str, **fields: str | int | float) -> None:
        """Append one render event to the book's log stream (entry id: Redis's clock) and publish it."""
        key = self.keys.book_log(book_id)
        values = {"event": event, **{k: str(v) for k, v in fields.items()}}
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(key, values, maxlen=100_000, approximate=True)
        pipe.expire(key, self.ttl)
        pipe.publish(
            self.keys.book_events(book_id), json.dumps({"type": event, "book_id": book_id, **values})
        )
        pipe.execute()

    def events(self, book_id: str) -> list[tuple[str, dict[str, str]]]:
        """The book's render events in order: (entry id, fields)."""
        return [
            (_text(entry_id), {_text(k): _text(v) for k, v in values.items()})
            for entry_id, values in self.redis.xrange(self.keys.book_log(book_id))
        ]

    def finish_batch(self, book_id: str, batch: int) -> None:
        """Mark a batch done."""
        self.redis.hset(self.keys.book_batches(book_id), str(batch), "done")

    def try_assembly(self, book_id: str) -> bool:
        """Take the assembly lock if every segment is done and nobody holds it."""
        rec = self.record(book_id)
        if rec.state in FINISHED or not rec.is_planned:
            return False
        done = int(self.redis.scard(self.keys.book_done(book_id)))
        if done < rec.segments_total:
            log.debug("book %s: %d of %s segments done", book_id, done, rec.segments_total)
            return False
        # The value is a token naming this hold; the assembler renews the lock with it while it works.
        token = new_id()
        ttl = self.svc.settings.assembly_lock_ttl
        locked = bool(self.redis.set(self.keys.book_lock(book_id), token, nx=True, ex=ttl))
        log.info(
            "book %s: all %d segments done; assembly %s",
            book_id,
            done,
            "starts" if locked else "already taken",
        )
        return locked

    def assembly_token(self, book_id: str) -> str | None:
        """The token of the book's assembly lock, or None when nobody holds it."""
        return _text(self.redis.get(self.keys.book_lock(book_id))) or None

    def hold_assembly(self, book_id: str) -> str | None:
        """The token to assemble under: the lock's (taken for this assembly), or a fresh one; None if unobtainable.

        The caller of :meth:`try_assembly` (this worker's batch, or recovery on behalf of the assembly
        task it sends) holds the lock already; with no lock (it expired) the assembler takes it anew.
        """
        token = self.assembly_token(book_id)
        if token is not None:
            return token
        token = new_id()
        ttl = self.svc.settings.assembly_lock_ttl
        return token if self.redis.set(self.keys.book_lock(book_id), token, nx=True, ex=ttl) else None

    def renew_assembly(self, book_id: str, token: str) -> bool:
        """Extend the assembly lock by its TTL if ``token`` still holds it; False when it was lost."""
        ttl_ms = int(self.svc.settings.assembly_lock_ttl * 1000)
        return bool(self._renew_lock(keys=[self.keys.book_lock(book_id)], args=[token, ttl_ms]))

    def start_assembly(self, book_id: str) -> None:
        """Mark the book as being assembled (the caller holds its lock)."""
        self.redis.hset(self.keys.book(book_id), "state", BookState.ASSEMBLING)

    def succeed(self, book_id: str, manifest: dict[str, Any]) -> None:
        """Record the finished audiobook."""
        self.redis.hset(
            self.keys.book(book_id),
            mapping={
                "state": BookState.SUCCEEDED,
                "finished_at": time.time(),
                "manifest": json.dumps(manifest),
                "served_revision": int(manifest.get("revision", 1)),
            },
        )
        self.redis.srem(self.keys.books_active(), book_id)
        self.redis.delete(self.keys.book_lock(book_id))

    def fail(self, book_id: str, code: str, message: str) -> None:
        """Record a failure that retrying cannot fix."""
        self.redis.hset(
            self.keys.book(book_id),
            mapping={
                "state": BookState.FAILED,
                "finished_at": time.time(),
                "error_code": code,
                "error_message": message,
            },
        )
        self.redis.srem(self.keys.books_active(), book_id)
        dispatch.withdraw(self.svc, self.queue(book_id), book_id)

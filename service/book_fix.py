"""Fixing a finished book (issue 17 part 3): edits, a changed lexicon, voice or speed make a new revision.

``PATCH /v1/books/<id>`` is checked here against the text of the book's last good revision (a
``find`` that does not occur is a 400 naming the edit), claimed atomically (a book rendering is
a 409), and handed to a worker as the book's plan task. The worker (:func:`plan_revision`)
re-splits only the edited chapters with the engine's segmentation, names every segment by its
content digest, marks the segments whose checkpoint the last revision already rendered as done
(they are reused, not synthesised) and queues batches for the rest. The assembly then rebuilds
only the chapters whose audio changed (``service.book_render``) into the revision's own files
(``books/<id>/r<N>/``); the book serves the previous revision's files until the new one succeeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.exceptions import SpoolError
from engine.voices import check_speed
from service.books import (
    BATCH_SIZE,
    BookRecord,
    BookSpec,
    BookStore,
    plan_book,
    segment_digest,
    source_chapters,
)
from service.exceptions import BookBusyError, BookFixError
from service.keys import new_id
from service.states import FINISHED

if TYPE_CHECKING:
    from engine import Engine
    from service.services import Services

log = logging.getLogger("spool.books")

#: Most edits one fix may carry.
MAX_EDITS = 500

#: Longest ``find``, ``replace`` or segment ``text`` of one edit, in characters.
MAX_EDIT_CHARS = 20_000

_FIELDS = {"edits", "lexicon", "voice", "speed"}

# KEYS: book, active books, done set, batches, attempts, renders. ARGV: the revision expected,
# the new revision, the spec JSON, the fix JSON, the record's TTL (s). Starts the revision only if
# the book is still finished at the revision the fix was checked against; 1 if it did, else 0.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' then return 0 end
local revision = tonumber(redis.call('HGET', KEYS[1], 'revision') or '') or 1
if revision ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'revision', ARGV[2], 'spec', ARGV[3], 'fix', ARGV[4],
  'planned_at', '', 'planner', '', 'started_at', '', 'finished_at', '', 'error_code', '',
  'error_message', '', 'audio_seconds', '0.0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('SADD', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
return 1
"""


@dataclass(frozen=True)
class Edit:
    """One edit: ``find`` => ``replace`` in a chapter (1-based), or a segment's (0-based) new ``text``."""

    number: int  # its place in the request, 1-based, for messages
    chapter: int | None = None
    find: str = ""
    replace: str = ""
    segment: int | None = None
    text: str = ""


@dataclass(frozen=True)
class FixRequest:
    """What a fix changes: edits, and the lexicon (``lexicon_given``), voice or speed when given."""

    edits: tuple[Edit, ...] = ()
    lexicon: str | None = None
    lexicon_given: bool = False
    voice: str | None = None
    speed: float | None = None


def _string(item: dict[str, Any], name: str, number: int, *, empty: bool) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise BookFixError(f"Edit {number}: '{name}' must be a string.", edit=number, field=name)
    if not empty and not value:
        raise BookFixError(f"Edit {number}: '{name}' is empty; give the words to look for.", edit=number, field=name)
    if len(value) > MAX_EDIT_CHARS:
        raise BookFixError(
            f"Edit {number}: '{name}' is {len(value):,} characters; the limit is {MAX_EDIT_CHARS:,}.",
            edit=number,
            field=name,
        )
    return value


def _number(item: dict[str, Any], name: str, number: int) -> int:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BookFixError(f"Edit {number}: '{name}' must be a whole number.", edit=number, field=name)
    return value


def parse_edit(item: Any, number: int) -> Edit:
    """One edit of the request, checked for shape (its fit to the book is checked by :func:`start_fix`)."""
    if not isinstance(item, dict):
        raise BookFixError(
            f'Edit {number} must be an object: {{"chapter": N, "find": "...", "replace": "..."}} or '
            '{"segment": N, "text": "..."}.',
            edit=number,
        )
    keys = set(item)
    if keys == {"chapter", "find", "replace"}:
        return Edit(
            number,
            chapter=_number(item, "chapter", number),
            find=_string(item, "find", number, empty=False),
            replace=_string(item, "replace", number, empty=True),
        )
    if keys == {"segment", "text"}:
        return Edit(number, segment=_number(item, "segment", number), text=_string(item, "text", number, empty=True))
    raise BookFixError(
        f"Edit {number} has the fields {sorted(keys)}; an edit is either chapter, find and replace, or "
        "segment and text.",
        edit=number,
    )


def parse_fix(body: Any) -> FixRequest:
    """The fix in a PATCH body, checked for shape: ``edits``, ``lexicon``, ``voice``, ``speed``."""
    if not isinstance(body, dict):
        raise BookFixError('The body must be a JSON object, e.g. {"edits": [{"chapter": 1, "find": "..", "replace": ".."}]}.')
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BookFixError(
            f"Unknown field(s) {unknown}: a fix takes {sorted(_FIELDS)}.", fields=unknown
        )
    edits = body.get("edits", [])
    if not isinstance(edits, list):
        raise BookFixError("'edits' must be a list of edits.", field="edits")
    if len(edits) > MAX_EDITS:
        raise BookFixError(f"{len(edits)} edits; one fix takes at most {MAX_EDITS}.", field="edits")
    lexicon = body.get("lexicon")
    if lexicon is not None and not (isinstance(lexicon, str) and re.fullmatch(r"[0-9a-f]{32}", lexicon)):
        raise BookFixError(
            f"lexicon must be a lexicon id (32 hex digits, from POST /v1/lexicons) or null to drop it, "
            f"got {str(lexicon)[:64]!r}.",
            field="lexicon",
        )
    voice = body.get("voice")
    if voice is not None and not isinstance(voice, str):
        raise BookFixError("voice must be a voice name such as 'af_heart'.", field="voice")
    speed = body.get("speed")
    if speed is not None:
        speed = check_speed(speed)
    fix = FixRequest(
        tuple(parse_edit(item, n) for n, item in enumerate(edits, start=1)),
        lexicon=lexicon,
        lexicon_given="lexicon" in body,
        voice=voice.strip() if voice else None,
        speed=speed,
    )
    if not (fix.edits or fix.lexicon_given or fix.voice or fix.speed is not None):
        raise BookFixError(
            "Nothing to fix: give 'edits', a 'lexicon' (its current version is used), a 'voice' or a 'speed'."
        )
    return fix


def served_revision(rec: BookRecord) -> int:
    """The revision whose files the book serves (0 when none has succeeded)."""
    return rec.served_revision or (1 if rec.manifest else 0)


def _load(store: BookStore, book_id: str, revision: int, name: str) -> dict[str, Any]:
    return json.loads(store.svc.storage.get(store.keys.book_revision_file(book_id, revision, name)))


def _replacements(
    fix: FixRequest, source: dict[str, Any], plan: dict[str, Any]
) -> tuple[dict[int, list[tuple[int, int, str, int]]], list[dict[str, Any]]]:
    """Each chapter's (start, end, new text, edit) replacements, and what each edit matched."""
    chapters = source["chapters"]
    found: dict[int, list[tuple[int, int, str, int]]] = {}
    report = []
    for edit in fix.edits:
        if edit.segment is not None:
            count = len(plan["segments"])
            if not 0 <= edit.segment < count:
                raise BookFixError(
                    f"Edit {edit.number}: the book has segments 0 to {count - 1} (as in its log); "
                    f"there is no segment {edit.segment}.",
                    edit=edit.number,
                )
            seg = plan["segments"][edit.segment]
            found.setdefault(seg["c"], []).append((seg["start"], seg["end"], edit.text, edit.number))
            report.append(
                {"edit": edit.number, "segment": edit.segment, "chapter": seg["c"] + 1, "was": seg["text"], "matched": 1}
            )
            continue
        number = edit.chapter or 0
        if not 1 <= number <= len(chapters):
            raise BookFixError(
                f"Edit {edit.number}: the book has chapters 1 to {len(chapters)}; there is no chapter {number}.",
                edit=edit.number,
            )
        text = chapters[number - 1]["text"]
        spans = []
        at = text.find(edit.find)
        while at >= 0:
            spans.append(at)
            at = text.find(edit.find, at + len(edit.find))
        if not spans:
            raise BookFixError(
                f"Edit {edit.number}: {edit.find[:80]!r} does not occur in chapter {number} "
                f"({chapters[number - 1]['title']!r}); copy the words exactly as the chapter has them "
                "(case, punctuation and spaces count).",
                edit=edit.number,
                chapter=number,
            )
        found.setdefault(number - 1, []).extend((s, s + len(edit.find), edit.replace, edit.number) for s in spans)
        report.append({"edit": edit.number, "chapter": number, "find": edit.find, "matched": len(spans)})
    return found, report


def _apply(text: str, replacements: list[tuple[int, int, str, int]], chapter: int) -> str:
    """``text`` with the replacements made (they address the original text and must not overlap)."""
    ordered = sorted(replacements)
    for (_, end, _, left), (start, _, _, right) in zip(ordered, ordered[1:], strict=False):
        if start < end:
            raise BookFixError(
                f"Edits {left} and {right} change overlapping text in chapter {chapter}; make them one edit.",
                edits=[left, right],
            )
    pieces = []
    at = 0
    for start, end, new, _ in ordered:
        pieces += [text[at:start], new]
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


def start_fix(svc: Services, book_id: str, owner: str, fix: FixRequest) -> dict[str, Any]:
    """Check the fix against the book's last good revision and start the new revision; return its summary.

    BookBusyError (409) while the book renders or when it never succeeded; BookFixError (400) when
    an edit does not fit the text; the book and lexicon of another key are not found (404).
    """
    store = svc.books
    rec = store.record(book_id, owner)
    if rec.state not in FINISHED:
        raise BookBusyError(
            f"Book {book_id} is {rec.state} (revision {rec.revision}); fix it once it has finished: poll "
            f"GET /v1/books/{book_id} until its state is succeeded, then send the PATCH again.",
            state=str(rec.state),
            revision=rec.revision,
        )
    base = served_revision(rec)
    if not base:
        raise BookBusyError(
            f"Book {book_id} is {rec.state} and never succeeded, so there is no finished book to fix; "
            "submit it again (POST /v1/books).",
            state=str(rec.state),
        )
    source = _load(store, book_id, base, "source.json")
    plan = _load(store, book_id, base, "plan.json")
    found, report = _replacements(fix, source, plan)
    changed: dict[str, str] = {}
    for chapter, replacements in found.items():
        old = source["chapters"][chapter]["text"]
        new = _apply(old, replacements, chapter + 1)
        if not any(ch.isalnum() for ch in new):
            raise BookFixError(
                f"The edits leave chapter {chapter + 1} with no words to read; keep some text in it "
                "(to leave a chapter out, submit the book again without it).",
                chapter=chapter + 1,
            )
        if new != old:
            changed[str(chapter)] = new
    # The spec the base revision rendered with: kept in its plan from revision 2, for revision 1 in
    # spec.json (written by the first fix) or, before any fix, the record.
    if "spec" in plan:
        base_spec = plan["spec"]
    elif rec.revision == 1:
        base_spec = json.loads(rec.spec)
        store.svc.storage.put(
            store.keys.book_file(book_id, "spec.json"), json.dumps(base_spec).encode(), "application/json"
        )
    else:
        base_spec = _load(store, book_id, 1, "spec.json")
    spec = BookSpec(**(base_spec | {"chapters": tuple(base_spec.get("chapters") or ())}))
    new_spec = spec
    if fix.voice and fix.voice != spec.voice:
        voice, _ = svc.catalog.check_voice(fix.voice)
        new_spec = dataclasses.replace(new_spec, voice=voice)
    if fix.speed is not None:
        new_spec = dataclasses.replace(new_spec, speed=fix.speed)
    if fix.lexicon_given:
        version = svc.lexicons.get(owner, fix.lexicon).version if fix.lexicon else None
        new_spec = dataclasses.replace(new_spec, lexicon=fix.lexicon, lexicon_version=version)
    if not changed and new_spec == spec:
        raise BookFixError(
            "Nothing would change: the edits leave the text as it is and the lexicon (at its current "
            "version), voice and speed are the book's already.",
        )
    revision = rec.revision + 1
    token = new_id()
    doc = {"revision": revision, "base_revision": base, "base_spec": base_spec, "chapters": changed}
    store.svc.storage.put(
        store.keys.book_revision_file(book_id, revision, f"fix-{token}.json"),
        json.dumps(doc).encode(),
        "application/json",
    )
    summary = {
        "revision": revision,
        "base_revision": base,
        "requested_at": time.time(),
        "edits": report,
        "chapters_changed": sorted(int(c) + 1 for c in changed),
        "voice": new_spec.voice if new_spec.voice != spec.voice else None,
        "speed": new_spec.speed if new_spec.speed != spec.speed else None,
        "lexicon_changed": (new_spec.lexicon, new_spec.lexicon_version) != (spec.lexicon, spec.lexicon_version),
        "token": token,
    }
    keys = store.keys
    claimed = store.redis.eval(
        _CLAIM,
        6,
        keys.book(book_id),
        keys.books_active(),
        keys.book_done(book_id),
        keys.book_batches(book_id),
        keys.book_batch_attempts(book_id),
        keys.book_renders(book_id),
        str(rec.revision),
        str(revision),
        json.dumps(new_spec.__dict__ | {"chapters": list(new_spec.chapters)}),
        json.dumps(summary),
        str(store.ttl),
    )
    if not claimed:
        raise BookBusyError(
            f"Another change to book {book_id} started first; poll GET /v1/books/{book_id} until it has "
            "finished and send the PATCH again against the new revision.",
        )
    store.send_plan(book_id)
    log.info("book %s: revision %d queued (from %d): %d chapter(s) edited", book_id, revision, base, len(changed))
    return summary


def _runs(indices: list[int], size: int = BATCH_SIZE) -> list[list[int]]:
    """[first, end) batches over the given ascending segment indices: consecutive runs, ``size`` at most each."""
    batches: list[list[int]] = []
    for i in indices:
        if batches and batches[-1][1] == i and batches[-1][1] - batches[-1][0] < size:
            batches[-1][1] = i + 1
        else:
            batches.append([i, i + 1])
    return batches


def chapter_digest(digests: list[str], title: str, gap: float, last: bool, rate: int) -> str:
    """Name of a chapter's audio: its segments' digests, title, gap after it and rate (equal => same files)."""
    parts = [title, f"{gap:.4f}", "last" if last else "", str(rate), *digests]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def plan_revision(store: BookStore, engine: Engine, book_id: str, worker: str) -> int:
    """Plan a fixed book's new revision in a worker; return how many segments it renders.

    Edited chapters are split again (engine segmentation: unedited sentences keep their segments
    and so their digests); every other chapter keeps its segments. A segment whose digest the
    base revision rendered is marked done at once: its checkpoint is reused, never re-synthesised.
    """
    rec = store.record(book_id)
    if rec.state in FINISHED or rec.is_planned:
        return 0
    svc = store.svc
    store.redis.hset(store.keys.book(book_id), "planner", worker)
    summary = json.loads(rec.fix or "{}")
    revision = rec.revision
    doc = _load(store, book_id, revision, f"fix-{summary.get('token', '')}.json")
    base = int(doc["base_revision"])
    base_plan = _load(store, book_id, base, "plan.json")
    source = _load(store, book_id, base, "source.json")
    for chapter, text in doc["chapters"].items():
        source["chapters"][int(chapter)]["text"] = text
    spec = rec.render_spec
    chapters = source_chapters(source)
    segments: list[dict[str, Any]] = []
    planned = []
    for n, chapter in enumerate(chapters):
        if str(n) in doc["chapters"]:
            part = plan_book([chapter], spec.language)
            segs, entry = part["segments"], part["chapters"][0]
        else:
            entry = base_plan["chapters"][n]
            segs = base_plan["segments"][entry["first"] : entry["first"] + entry["count"]]
        first = len(segments)
        segments += [dict(s, i=first + k, c=n) for k, s in enumerate(segs)]
        planned.append(dict(entry, first=first, count=len(segs)))
    rv = dataclasses.replace(engine.check(spec.voice, spec.speed, spec.language), lexicon=store.lexicon(rec))
    old: set[str] = set()
    try:
        data = doc["base_spec"]
        was = BookSpec(**(data | {"chapters": tuple(data.get("chapters") or ())}))
        lexicon = svc.lexicons.snapshot(rec.owner, was.lexicon, was.lexicon_version or "") if was.lexicon else None
        orv = dataclasses.replace(engine.check(was.voice, was.speed, was.language), lexicon=lexicon)
        old = {segment_digest(s, orv.spec, orv.speed, orv.lang, engine.model_id, orv.lexicon) for s in base_plan["segments"]}
    except SpoolError as exc:
        # The base revision's lexicon version is gone: every segment is checked for a checkpoint instead.
        log.warning("book %s: cannot name revision %d's segments (%s); checking each", book_id, base, exc.message)
    todo = [
        s["i"]
        for s in segments
        if segment_digest(s, rv.spec, rv.speed, rv.lang, engine.model_id, rv.lexicon) not in old
    ]
    reused = sorted(set(range(len(segments))) - set(todo))
    plan = {
        "revision": revision,
        "base_revision": base,
        "spec": json.loads(rec.spec),
        "chapters": planned,
        "segments": segments,
        "batches": _runs(todo),
        "skipped": base_plan.get("skipped", []),
        "warnings": base_plan.get("warnings", []),
    }
    for name, body in (("source.json", source), ("plan.json", plan)):
        svc.storage.put(
            store.keys.book_revision_file(book_id, revision, name), json.dumps(body).encode(), "application/json"
        )
    keys = store.keys
    pipe = store.redis.pipeline()
    pipe.hset(
        keys.book(book_id),
        mapping={"segments_total": len(segments), "planned_at": repr(time.time()), "planner": ""},
    )
    if reused:
        pipe.sadd(keys.book_done(book_id), *reused)
        pipe.expire(keys.book_done(book_id), store.ttl)
    if plan["batches"]:
        pipe.hset(keys.book_batches(book_id), mapping={str(n): "queued" for n in range(len(plan["batches"]))})
        pipe.expire(keys.book_batches(book_id), store.ttl)
    pipe.execute()
    store.log_event(book_id, "revision", revision=revision, reused=len(reused), render=len(todo))
    log.info(
        "book %s revision %d planned: %d segments, %d reused, %d to render",
        book_id,
        revision,
        len(segments),
        len(reused),
        len(todo),
    )
    for n in range(len(plan["batches"])):
        store.send_batch(book_id, n)
    if not plan["batches"] and store.try_assembly(book_id):
        from service.book_render import assemble_book  # the assembly imports this module

        assemble_book(store, engine, book_id)
    return len(todo)

"""Book uploads parsed off the web process, in a child process with limits (issue 14, item 2).

The web request only checks the upload cheaply (``engine.book.check_upload``: size, type by suffix
and content, an EPUB's central directory read without inflating), stores the raw upload under the
book's prefix and records the book as ``parsing`` before it answers 202, so nothing accepted is lost.
A light worker (the ``SPOOL_PARSE_QUEUE`` queue; it loads no model) takes ``spool.book_parse`` and
runs ``service/parse_child.py`` with RLIMIT_AS = ``SPOOL_PARSE_MEMORY_MB`` and RLIMIT_CPU =
``SPOOL_PARSE_CPU_SECONDS``: an upload bomb ends that child, never the worker, and the book fails
with ``book_too_large``; a parser error fails it with ``invalid_book`` and the parser's message.
A parsed book stores ``source.json`` (and its cover), moves to ``queued`` and gets its plan task,
as books always did.

``plan_only=true`` uploads go the same way under ``previews/<id>/`` with a short-lived record
(``Keys.plan_request``); the web request waits on ``Keys.book_parsed`` (BLPOP) up to
``SPOOL_PLAN_WAIT`` seconds, then answers 202 with the plan's link instead.

Recovery (``service.recovery``) sends the parse again when its message was lost or its worker died,
counting ``parse_attempts`` against ``SPOOL_MAX_ATTEMPTS``.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import defaults
from service.books import BookNotFoundError, BookRecord, BookSpec
from service.exceptions import AttemptsExhaustedError, BookTooLargeError, BookUnreadableError, NotFoundError
from service.keys import new_id
from service.record import hash_mapping
from service.states import BookState
from service.task_names import BOOK_PARSE

if TYPE_CHECKING:
    from service.services import Services

log = logging.getLogger("spool.parse")

#: The program the parse runs in (``python -I -S parse_child.py JOB.json``).
CHILD = Path(__file__).with_name("parse_child.py")

#: Exit status of a child that ran out of address space (``parse_child.MEMORY_EXIT``).
MEMORY_EXIT = 17

#: Kinds of parse task: a book to render, or a ``plan_only`` request.
BOOK, PLAN = "book", "plan"

#: Longest source name kept (the suffix is kept whole: it names the format).
SOURCE_NAME_CHARS = 200

# KEYS: the record, the active-books set. ARGV: the book id, "1" to leave the active set, field/value pairs.
# Moves a record out of ``parsing`` only if it is still there (a cancel meanwhile wins).
_FROM_PARSING = """
if redis.call('HGET', KEYS[1], 'state') ~= 'parsing' then return 0 end
local pairs = {}
for i = 3, #ARGV do pairs[#pairs + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(pairs))
if ARGV[2] == '1' then redis.call('SREM', KEYS[2], ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class ParseLimits:
    """What one parse may use: address space, CPU seconds, and wall seconds before it is killed."""

    memory_bytes: int
    cpu_seconds: int

    @property
    def wall_seconds(self) -> float:
        """Wall-clock bound: twice the CPU limit and some slack (a busy machine gives the child less CPU)."""
        return 2.0 * self.cpu_seconds + 10.0

    @classmethod
    def from_settings(cls, settings: Any) -> ParseLimits:
        """The limits SPOOL_PARSE_MEMORY_MB and SPOOL_PARSE_CPU_SECONDS set."""
        return cls(int(settings.parse_memory_mb) * 1024 * 1024, int(settings.parse_cpu_seconds))


@dataclass
class ParseOutcome:
    """How one parse ended: the meta record (title, author, preview, ...) or an error code and message."""

    ok: bool
    code: str = ""
    message: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def source_name(filename: str) -> str:
    """The upload's file name as stored: its last path part, shortened before the suffix if long."""
    name = Path(filename).name
    if len(name) <= SOURCE_NAME_CHARS:
        return name
    suffix = Path(name).suffix[:16]
    return name[: SOURCE_NAME_CHARS - len(suffix)] + suffix


def upload_name(filename: str) -> str:
    """Storage name of a raw upload: ``upload`` and the format's suffix (the key alphabet is strict)."""
    return "upload" + Path(filename).suffix.lower()


def _too_large(limits: ParseLimits, what: str) -> ParseOutcome:
    return ParseOutcome(
        False,
        BookTooLargeError.code,
        f"Reading the book {what}: it is too large or built to exhaust the parser (a zip bomb). Split it, or "
        "ask the operator to raise SPOOL_PARSE_MEMORY_MB / SPOOL_PARSE_CPU_SECONDS "
        f"(now {limits.memory_bytes // (1024 * 1024)} MiB, {limits.cpu_seconds} s).",
    )


def run_parser(
    data: bytes, filename: str, options: dict[str, Any], limits: ParseLimits, workdir: Path
) -> ParseOutcome:
    """Parse ``data`` in a child process with ``limits``; its outputs (source.json, cover) land in ``workdir``."""
    upload = workdir / "upload"
    upload.write_bytes(data)
    job = {
        "upload": str(upload),
        "filename": filename,
        "memory_bytes": limits.memory_bytes,
        "cpu_seconds": limits.cpu_seconds,
        **options,
    }
    job_path = workdir / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    started = time.monotonic()
    errors_path = workdir / "stderr"
    with errors_path.open("wb") as errors:
        # -I -S: no environment, user or site packages: the child needs the standard library only.
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", str(CHILD), str(job_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            cwd=workdir,
            close_fds=True,
        )
        try:
            status: int | None = child.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            status = None
    took = time.monotonic() - started
    with errors_path.open("rb") as fh:
        fh.seek(max(0, errors_path.stat().st_size - 4000))
        tail = fh.read().decode("utf-8", "replace")
    meta_path = workdir / "meta.json"
    if status == 0 and meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("ok"):
            return ParseOutcome(True, meta=meta, seconds=took)
        return ParseOutcome(False, str(meta.get("code") or "invalid_book"), str(meta.get("message")), seconds=took)
    if status is None:
        outcome = _too_large(limits, f"took longer than {limits.wall_seconds:g} s")
    elif status == MEMORY_EXIT or "MemoryError" in tail or "Cannot allocate memory" in tail:
        outcome = _too_large(limits, f"needed more than {limits.memory_bytes // (1024 * 1024)} MiB of memory")
    elif status in (-signal.SIGXCPU, -signal.SIGKILL):
        outcome = _too_large(limits, f"took more than {limits.cpu_seconds} s of CPU time")
    else:
        log.warning("book parser exited with %s: %s", status, tail[-1500:])
        outcome = ParseOutcome(
            False,
            BookUnreadableError.code,
            f"The book could not be read: the parser stopped unexpectedly (exit status {status}). Check that "
            "the file opens in an e-book reader; if it does, report it with the file.",
        )
    outcome.seconds = took
    return outcome


def send_parse(svc: Services, item_id: str, kind: str = BOOK) -> None:
    """Queue the parse of a book (normal lane) or of a ``plan_only`` request (high: someone waits)."""
    lane = "high" if kind == PLAN else "normal"
    svc.send_task(BOOK_PARSE, [item_id, kind], queue=svc.settings.parse_queue, priority=defaults.PRIORITIES[lane])


def _options(spec: BookSpec) -> dict[str, Any]:
    return {"include_matter": spec.include_matter, "chapters": list(spec.chapters), "speed": spec.speed}


# --------------------------------------------------------------------------------------------- web


def accept_book(svc: Services, data: bytes, filename: str, spec: BookSpec, owner: str) -> str:
    """Store a checked upload, record the book as ``parsing`` and queue its parse; return its id.

    The upload is in storage and the record in Redis before this returns (and the 202 goes out).
    """
    book_id = new_id()
    name = source_name(filename)
    upload = upload_name(filename)
    svc.storage.put(svc.keys.book_file(book_id, upload), data, "application/octet-stream")
    now = time.time()
    record = BookRecord(
        id=book_id,
        owner=owner,
        state=BookState.PARSING,
        # Until the parse reads the book's own title: the one asked for, else the file's name.
        title=spec.title or Path(name).stem,
        author=spec.author or "",
        source=name,
        upload=upload,
        spec=json.dumps(spec.__dict__ | {"chapters": list(spec.chapters)}),
        queue=svc.settings.queue,
        created_at=now,
    )
    keys = svc.keys
    pipe = svc.redis.pipeline()
    pipe.hset(keys.book(book_id), mapping=hash_mapping(record.to_hash()))
    pipe.zadd(keys.books_by_created(), {book_id: now})
    pipe.zadd(keys.owner_books(owner), {book_id: now})
    pipe.sadd(keys.books_active(), book_id)
    pipe.expire(keys.book(book_id), svc.settings.job_ttl)
    pipe.execute()
    send_parse(svc, book_id, BOOK)
    log.info("book %s accepted (%d bytes, %s): queued for parsing", book_id, len(data), name)
    return book_id


def request_plan(svc: Services, data: bytes, filename: str, spec: BookSpec, owner: str) -> str:
    """Store a checked ``plan_only`` upload and queue its parse; return the plan request's id."""
    plan_id = new_id()
    upload = upload_name(filename)
    svc.storage.put(svc.keys.plan_file(plan_id, upload), data, "application/octet-stream")
    key = svc.keys.plan_request(plan_id)
    pipe = svc.redis.pipeline()
    pipe.hset(
        key,
        mapping={
            "owner": owner,
            "state": BookState.PARSING.value,
            "source": source_name(filename),
            "upload": upload,
            "spec": json.dumps(spec.__dict__ | {"chapters": list(spec.chapters)}),
            "created_at": repr(time.time()),
        },
    )
    pipe.expire(key, defaults.PLAN_TTL)
    pipe.execute()
    send_parse(svc, plan_id, PLAN)
    return plan_id


def wait_parsed(svc: Services, item_id: str, timeout: float) -> bool:
    """Block (BLPOP, no polling) until the parse of ``item_id`` has ended or ``timeout`` passed; True if ended."""
    if timeout <= 0:
        return False
    return svc.redis.blpop([svc.keys.book_parsed(item_id)], timeout=timeout) is not None


class PlanNotFoundError(NotFoundError):
    """No such plan (or book) for this API key."""

    code = "plan_not_found"


def plan_state(svc: Services, item_id: str, owner: str) -> dict[str, Any]:
    """Where a plan stands: ``{"state", "plan", "error"}`` for a ``plan_only`` request or a book of ``owner``."""
    raw = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in svc.redis.hgetall(svc.keys.plan_request(item_id)).items()
    }
    if raw.get("owner") == owner:
        error = {"code": raw["error_code"], "message": raw.get("error_message", "")} if raw.get("error_code") else None
        plan = json.loads(raw["plan"]) if raw.get("plan") else None
        return {"state": raw.get("state", ""), "plan": plan, "error": error}
    try:
        rec = svc.books.record(item_id, owner)
    except BookNotFoundError:
        raise PlanNotFoundError(
            f"No plan {item_id!r}: it does not exist, has expired (plans are kept {defaults.PLAN_TTL} s), "
            "or belongs to another API key.",
            plan_id=str(item_id),
        ) from None
    if rec.state == BookState.PARSING:
        return {"state": BookState.PARSING.value, "plan": None, "error": None}
    if rec.upload and rec.parsed_at is None:  # failed (or cancelled) before it was parsed
        error = {"code": rec.error_code or "cancelled", "message": rec.error_message or "The book was cancelled."}
        return {"state": str(rec.state), "plan": None, "error": error}
    try:
        plan = json.loads(svc.storage.get(svc.keys.book_file(item_id, "preview.json")))
    except NotFoundError:
        raise PlanNotFoundError(f"Book {item_id} was submitted before plans were kept; it has none.") from None
    return {"state": "ready", "plan": plan, "error": None}


# ------------------------------------------------------------------------------------------ worker


def parse_upload(svc: Services, item_id: str, kind: str, worker: str) -> str:
    """The parse task: parse a book's (or a plan request's) upload in a limited child; return how it ended."""
    if kind == PLAN:
        return _parse_plan(svc, item_id)
    return _parse_book(svc, item_id, worker)


def _from_parsing(svc: Services, book_id: str, finished: bool, fields: dict[str, Any]) -> bool:
    """Move a book out of ``parsing`` with ``fields`` if it is still there; True when it was."""
    args: list[Any] = [book_id, "1" if finished else "0"]
    for name, value in hash_mapping(fields).items():
        args += [name, value]
    keys = [svc.keys.book(book_id), svc.keys.books_active()]
    return bool(svc.redis.eval(_FROM_PARSING, 2, *keys, *args))


def fail_parse(svc: Services, book_id: str, code: str, message: str) -> bool:
    """Fail a book still ``parsing`` with ``code`` and ``message``; True when this call failed it."""
    failed = _from_parsing(
        svc,
        book_id,
        True,
        {
            "state": BookState.FAILED.value,
            "finished_at": time.time(),
            "error_code": code,
            "error_message": message,
            "parser": "",
        },
    )
    if failed:
        log.warning("book %s failed to parse: %s: %s", book_id, code, message)
        upload = _text(svc.redis.hget(svc.keys.book(book_id), "upload"))
        if upload:
            _drop_upload(svc, svc.keys.book_file(book_id, upload))
    return failed


def _drop_upload(svc: Services, key: str) -> None:
    """Delete a raw upload nothing needs any more (a failure here leaves it to the retention sweep)."""
    try:
        svc.storage.delete(key)
    except Exception:
        log.warning("could not delete the upload %s", key, exc_info=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _parse_book(svc: Services, book_id: str, worker: str) -> str:
    try:
        rec = svc.books.record(book_id)
    except BookNotFoundError:
        log.info("book %s is gone; nothing to parse", book_id)
        return "gone"
    if rec.state != BookState.PARSING:
        return str(rec.state)  # a redelivered message: parsed (or cancelled) already
    key = svc.keys.book(book_id)
    pipe = svc.redis.pipeline()
    pipe.hset(key, "parser", worker)
    pipe.hincrby(key, "parse_attempts", 1)
    attempts = int(pipe.execute()[1])
    if attempts > svc.settings.max_attempts:
        from service.recovery import attempts_message

        fail_parse(svc, book_id, AttemptsExhaustedError.code, attempts_message(f"Parsing book {book_id}", attempts - 1))
        return BookState.FAILED.value
    try:
        return _parse_book_upload(svc, rec)
    except Exception:
        # Let the reconciliation sweep send it again (within SPOOL_MAX_ATTEMPTS) rather than hold it.
        svc.redis.hset(key, "parser", "")
        raise


def _parse_book_upload(svc: Services, rec: BookRecord) -> str:
    book_id = rec.id
    spec = rec.render_spec
    upload_key = svc.keys.book_file(book_id, rec.upload)
    data = svc.storage.get(upload_key)
    with tempfile.TemporaryDirectory(prefix="spool-parse-") as tmp:
        workdir = Path(tmp)
        outcome = run_parser(data, rec.source, _options(spec), ParseLimits.from_settings(svc.settings), workdir)
        del data
        if not outcome.ok:
            fail_parse(svc, book_id, outcome.code, outcome.message)
            return BookState.FAILED.value
        meta = outcome.meta
        storage = svc.storage
        with (workdir / "source.json").open("rb") as fh:
            storage.put(svc.keys.book_file(book_id, "source.json"), fh, "application/json")
        if (workdir / "cover").exists():
            cover = (workdir / "cover").read_bytes()
            storage.put(svc.keys.book_file(book_id, "cover"), cover, meta.get("cover_type") or "image/jpeg")
    plan = {"object": "book.plan", "source": rec.source} | meta["preview"]
    svc.storage.put(svc.keys.book_file(book_id, "preview.json"), json.dumps(plan).encode(), "application/json")
    moved = _from_parsing(
        svc,
        book_id,
        False,
        {
            "state": BookState.QUEUED.value,
            "title": spec.title or meta.get("title") or rec.title,
            "author": spec.author if spec.author is not None else meta.get("author", ""),
            "cover_type": meta.get("cover_type") or "",
            "chapters_total": int(meta.get("chapters", 0)),
            "parsed_at": time.time(),
            "parser": "",
        },
    )
    if not moved:
        _drop_upload(svc, upload_key)
        return svc.books.state(book_id)  # cancelled while it was parsed
    svc.books.send_plan(book_id)
    _drop_upload(svc, upload_key)
    log.info("book %s parsed in %.2f s: %s chapters; queued for planning", book_id, outcome.seconds, meta.get("chapters"))
    return BookState.QUEUED.value


def _parse_plan(svc: Services, plan_id: str) -> str:
    key = svc.keys.plan_request(plan_id)
    raw = {_text(k): _text(v) for k, v in svc.redis.hgetall(key).items()}
    if raw.get("state") != BookState.PARSING.value:
        return raw.get("state") or "gone"  # expired, or a redelivered message
    data_key = svc.keys.plan_file(plan_id, raw["upload"])
    spec = BookSpec(**(json.loads(raw["spec"]) | {"chapters": tuple(json.loads(raw["spec"]).get("chapters") or ())}))
    data = svc.storage.get(data_key)
    with tempfile.TemporaryDirectory(prefix="spool-plan-") as tmp:
        outcome = run_parser(data, raw["source"], _options(spec), ParseLimits.from_settings(svc.settings), Path(tmp))
    del data
    if outcome.ok:
        plan = {"object": "book.plan", "source": raw["source"]} | outcome.meta["preview"]
        fields = {"state": "ready", "plan": json.dumps(plan)}
    else:
        fields = {"state": BookState.FAILED.value, "error_code": outcome.code, "error_message": outcome.message}
    done = svc.keys.book_parsed(plan_id)
    pipe = svc.redis.pipeline()
    pipe.hset(key, mapping=fields)
    pipe.expire(key, defaults.PLAN_TTL)
    pipe.rpush(done, fields["state"])
    pipe.expire(done, int(svc.settings.plan_wait) + 60)
    pipe.execute()
    _drop_upload(svc, data_key)
    log.info("plan %s parsed in %.2f s: %s", plan_id, outcome.seconds, fields["state"])
    return fields["state"]

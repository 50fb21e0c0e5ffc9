"""Every Redis key and storage key Spool uses, built and validated in one place.

No user text reaches a key: ids must match :data:`ID_RE`, owner names
:data:`OWNER_RE`, and storage key parts :data:`PART_RE`; Idempotency-Key values
are hashed first.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from service.exceptions import InvalidKeyError
from service.states import JOB_STATES

#: Job and book ids: 32 lower-case hex digits (a UUID4 without dashes).
ID_RE = re.compile(r"^[0-9a-f]{32}$")

#: Owner names (from API key names, or "public" when no keys are configured).
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Worker names: Celery node names such as ``cpu1@host``, with the process id appended.
WORKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")

#: One path component of a storage key: a file or directory name without traversal.
PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Top-level storage areas.
STORAGE_KINDS: tuple[str, ...] = ("jobs", "books", "segments", "previews", "health")

#: kombu's separator between a queue name and its priority step (``Channel.sep``).
BROKER_PRIORITY_SEP = "\x06\x16"


def new_id() -> str:
    """Return a fresh random id (job, book)."""
    return uuid.uuid4().hex


def is_id(value: object) -> bool:
    """True when ``value`` is a well-formed id."""
    return isinstance(value, str) and bool(ID_RE.match(value))


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a well-formed id, else raise InvalidKeyError."""
    if not is_id(value):
        raise InvalidKeyError(
            f"Invalid {what} {value!r}: expected 32 lower-case hex digits.", value=repr(value)
        )
    return value  # type: ignore[return-value]


def check_owner(value: object) -> str:
    """Return ``value`` if it is a valid owner name."""
    if not isinstance(value, str) or not OWNER_RE.match(value):
        raise InvalidKeyError(f"Invalid owner name {value!r}: use 1-64 letters, digits, '_', '.', '-'.")
    return value


def check_part(value: object) -> str:
    """Return ``value`` if it is a safe storage key component (no '/', no '..', no leading dot)."""
    if not isinstance(value, str) or not PART_RE.match(value) or ".." in value:
        raise InvalidKeyError(
            f"Invalid storage key part {value!r}: use 1-128 letters, digits, '_', '.', '-', starting with a "
            "letter or digit, without '..'.",
            part=repr(value),
        )
    return value


def check_state(state: str) -> str:
    """Return ``state`` if it is a job state."""
    if state not in JOB_STATES:
        raise InvalidKeyError(f"Unknown job state {state!r}; states: {', '.join(JOB_STATES)}.")
    return state


def storage_key(kind: str, *parts: str) -> str:
    """Build a storage key ``kind/part/part`` from validated parts (e.g. ``jobs/<id>/audio.mp3``)."""
    if kind not in STORAGE_KINDS:
        raise InvalidKeyError(f"Unknown storage area {kind!r}; areas: {', '.join(STORAGE_KINDS)}.")
    if not parts:
        raise InvalidKeyError("A storage key needs at least one part after its area.")
    return "/".join((kind, *(check_part(p) for p in parts)))


def check_storage_key(key: str) -> str:
    """Validate a complete storage key (as built by :func:`storage_key`) and return it."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"Storage key must be a string, got {type(key).__name__}.")
    kind, _, rest = key.partition("/")
    return storage_key(kind, *rest.split("/")) if rest else storage_key(kind)


def check_storage_prefix(prefix: str) -> str:
    """Validate a listing prefix: a storage key, or one ending in '/', or an area name."""
    if prefix in STORAGE_KINDS or prefix.rstrip("/") in STORAGE_KINDS:
        return prefix
    check_storage_key(prefix.rstrip("/"))
    return prefix


class Keys:
    """Builds the Redis keys of one deployment, all under ``prefix``."""

    def __init__(self, prefix: str = "spool:") -> None:
        if not re.match(r"^[A-Za-z0-9_.:-]{0,64}$", prefix):
            raise InvalidKeyError(f"Invalid key prefix {prefix!r}: use letters, digits, '_', '.', ':', '-'.")
        self.prefix = prefix

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # Jobs --------------------------------------------------------------------------------------
    def job(self, job_id: str) -> str:
        """Hash with a job's spec, state, progress and result."""
        return self._k("job", check_id(job_id, "job id"))

    def job_chunks(self, job_id: str) -> str:
        """Stream of the job's audio chunks (written by ``service.stream.ChunkStream``)."""
        return self._k("job", check_id(job_id, "job id"), "chunks")

    def job_events(self, job_id: str) -> str:
        """Pub/sub channel of the job's state, progress and chunk wake-ups."""
        return self._k("job", check_id(job_id, "job id"), "events")

    def jobs_by_created(self) -> str:
        """Sorted set of every job id, scored by creation time."""
        return self._k("jobs", "by-created")

    def jobs_in_state(self, state: str) -> str:
        """Sorted set of the job ids in one state, scored by creation time."""
        return self._k("jobs", "state", check_state(state))

    def queued(self, queue: str) -> str:
        """Sorted set of queued job ids on one broker queue, scored by priority then enqueue time."""
        if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", queue):
            raise InvalidKeyError(f"Invalid queue name {queue!r}.")
        return self._k("queue", queue)

    def idempotency(self, owner: str, key: str) -> str:
        """String holding the job id created for an owner's Idempotency-Key (the key is hashed)."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self._k("idem", check_owner(owner), digest)

    def owner_jobs(self, owner: str) -> str:
        """Sorted set of one owner's job ids, scored by creation time."""
        return self._k("owner", check_owner(owner), "jobs")

    # Lexicons (issue 17) ------------------------------------------------------------------------
    def lexicon(self, lexicon_id: str) -> str:
        """String (JSON) holding one lexicon: owner, name, language, current version and entries."""
        return self._k("lexicon", check_id(lexicon_id, "lexicon id"))

    def lexicon_versions(self, lexicon_id: str) -> str:
        """Hash of a lexicon's recent versions (version -> JSON), read by workers rendering a job or book."""
        return self._k("lexicon", check_id(lexicon_id, "lexicon id"), "versions")

    def owner_lexicons(self, owner: str) -> str:
        """Sorted set of one owner's lexicon ids, scored by creation time."""
        return self._k("owner", check_owner(owner), "lexicons")

    def render_stats(self) -> str:
        """Hash of measured render rates (seconds of wall time per character), used for ETAs."""
        return self._k("stats", "render")

    # Workers -----------------------------------------------------------------------------------
    def worker(self, name: str) -> str:
        """String (JSON, with a TTL) describing one live worker process: its heartbeat."""
        if not isinstance(name, str) or not WORKER_RE.match(name):
            raise InvalidKeyError(f"Invalid worker name {name!r}.")
        return self._k("worker", name)

    def worker_stopping(self, node: str) -> str:
        """Flag set while a worker node shuts down: its processes hand their jobs back after a segment."""
        if not isinstance(node, str) or not WORKER_RE.match(node):
            raise InvalidKeyError(f"Invalid worker node name {node!r}.")
        return self._k("stopping", node)

    def workers(self) -> str:
        """Sorted set of worker names scored by the time their heartbeat expires."""
        return self._k("workers")

    # Books (issue 6) ---------------------------------------------------------------------------
    def book(self, book_id: str) -> str:
        """Hash with a book's spec, state and totals."""
        return self._k("book", check_id(book_id, "book id"))

    def book_segments(self, book_id: str) -> str:
        """Hash (or set) of a book's segments and their states."""
        return self._k("book", check_id(book_id, "book id"), "segments")

    def book_chapters(self, book_id: str) -> str:
        """Hash of a book's chapters and their progress."""
        return self._k("book", check_id(book_id, "book id"), "chapters")

    def book_done(self, book_id: str) -> str:
        """Set of a book's rendered segment ids."""
        return self._k("book", check_id(book_id, "book id"), "done")

    def book_events(self, book_id: str) -> str:
        """Pub/sub channel of a book's progress."""
        return self._k("book", check_id(book_id, "book id"), "events")

    def book_lock(self, book_id: str) -> str:
        """Lock held while a book is assembled."""
        return self._k("book", check_id(book_id, "book id"), "lock")

    def book_batches(self, book_id: str) -> str:
        """Hash of a book's render batches: batch number -> ``queued``, ``running:<worker>`` or ``done``."""
        return self._k("book", check_id(book_id, "book id"), "batches")

    def book_renders(self, book_id: str) -> str:
        """Counter of segments actually synthesised for a book (checkpoint hits excluded)."""
        return self._k("book", check_id(book_id, "book id"), "renders")

    def books_active(self) -> str:
        """Set of book ids being rendered or assembled (scanned by the workers' recovery)."""
        return self._k("books", "active")

    def books_recovery(self) -> str:
        """Short lock so only one worker at a time re-queues a dead worker's book batches."""
        return self._k("books", "recovery")

    def book_batch_attempts(self, book_id: str) -> str:
        """Hash of a book's batches: batch number -> times it was started (capped by ``max_attempts``)."""
        return self._k("book", check_id(book_id, "book id"), "attempts")

    def reconcile_lock(self) -> str:
        """Short lock so only one worker at a time runs the reconciliation sweep."""
        return self._k("reconcile", "lock")

    def book_file(self, book_id: str, name: str) -> str:
        """Storage key of one of a book's files (plan, cover, outputs)."""
        return storage_key("books", check_id(book_id, "book id"), name)

    def book_revision_file(self, book_id: str, revision: int, name: str) -> str:
        """Storage key of a file of one revision of a book: revision 1 where books always kept them, then ``r<N>/``."""
        if revision <= 1:
            return self.book_file(book_id, name)
        return storage_key("books", check_id(book_id, "book id"), f"r{int(revision)}", name)

    def book_parsed(self, book_id: str) -> str:
        """List a parse worker pushes one outcome to when it has parsed an upload (``plan_only`` waits on it)."""
        return self._k("book", check_id(book_id, "book id"), "parsed")

    def plan_request(self, plan_id: str) -> str:
        """Hash of one ``plan_only`` request: owner, state, options, then the plan or the parser's error."""
        return self._k("plan", check_id(plan_id, "plan id"))

    def plan_file(self, plan_id: str, name: str) -> str:
        """Storage key of a ``plan_only`` request's upload (deleted once parsed)."""
        return storage_key("previews", check_id(plan_id, "plan id"), name)

    def segment_checkpoint(self, digest: str) -> str:
        """Storage key of one rendered segment, named by the hash of what it was rendered from."""
        return storage_key("segments", digest[:2], f"{digest}.npz")

    def books_by_created(self) -> str:
        """Sorted set of every book id, scored by creation time."""
        return self._k("books", "by-created")

    def owner_books(self, owner: str) -> str:
        """Sorted set of one owner's book ids, scored by creation time."""
        return self._k("owner", check_owner(owner), "books")

    def book_log(self, book_id: str) -> str:
        """Stream of a book's render events (segment done, batch handed back), in the order Redis saw them."""
        return self._k("book", check_id(book_id, "book id"), "log")

    def yielding(self, queue: str) -> str:
        """Sorted set of workers giving way to interactive work on one queue, scored by claim expiry."""
        if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", queue):
            raise InvalidKeyError(f"Invalid queue name {queue!r}.")
        return self._k("yielding", queue)

    # Fair dispatch of book batches (issue 19, service/dispatch.py) -----------------------------
    def _dispatch(self, queue: str, what: str) -> str:
        if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", queue):
            raise InvalidKeyError(f"Invalid queue name {queue!r}.")
        return self._k("dispatch", queue, what)

    def dispatch_ready(self, queue: str) -> str:
        """Sorted set (all scores 0, read by lex range) of the ready batches on a queue: ``<book>:<batch:06d>``."""
        return self._dispatch(queue, "ready")

    def dispatch_books(self, queue: str) -> str:
        """Sorted set of the books with ready batches on a queue, scored by the turn they were last served."""
        return self._dispatch(queue, "books")

    def dispatch_owners(self, queue: str) -> str:
        """Sorted set of the owners with ready batches on a queue, scored by the turn they were last served."""
        return self._dispatch(queue, "owners")

    def dispatch_book_owner(self, queue: str) -> str:
        """Hash of the books in a queue's rotation: book id -> owner."""
        return self._dispatch(queue, "book-owner")

    def dispatch_readied(self, queue: str) -> str:
        """Hash of the books in a queue's rotation: book id -> when batches were last made ready."""
        return self._dispatch(queue, "readied")

    def dispatch_turn(self, queue: str) -> str:
        """Counter of the turns handed out on a queue (the rotation's clock)."""
        return self._dispatch(queue, "turn")

    # Broker (kombu's own layout; read-only for /status) ----------------------------------------
    @staticmethod
    def broker_queue(queue: str, priority: int, broker_prefix: str = "") -> str:
        """The Redis list kombu keeps for one queue at one priority step."""
        name = queue if priority == 0 else f"{queue}{BROKER_PRIORITY_SEP}{priority}"
        return broker_prefix + name

    @staticmethod
    def broker_unacked(broker_prefix: str = "") -> str:
        """The hash kombu keeps of delivered, not yet acknowledged messages (delivery tag -> message)."""
        return broker_prefix + "unacked"

    # Storage -----------------------------------------------------------------------------------
    storage_key = staticmethod(storage_key)
    storage_key_for = staticmethod(storage_key)

    def job_audio(self, job_id: str, ext: str) -> str:
        """Storage key of a job's finished audio file."""
        return storage_key("jobs", check_id(job_id, "job id"), f"audio.{ext}")

    # Quotas, stream caps and retention (issue 14, item 5) ----------------------------------------
    def job_chunks_info(self, job_id: str) -> str:
        """Hash beside a job's chunk stream: PCM ``bytes`` it holds and ``trimmed_before`` (first kept seq)."""
        return self._k("job", check_id(job_id, "job id"), "chunks-info")

    def owner_active_jobs(self, owner: str) -> str:
        """Sorted set of an owner's unfinished job ids (scored by admission time), for the concurrency quota."""
        return self._k("quota", check_owner(owner), "jobs")

    def owner_chars(self, owner: str, day: str) -> str:
        """Counter of the characters an owner submitted on one UTC day (``YYYYMMDD``)."""
        if not re.match(r"^[0-9]{8}$", day):
            raise InvalidKeyError(f"Invalid day {day!r}: expected YYYYMMDD.")
        return self._k("quota", check_owner(owner), "chars", day)

    def owner_active_books(self, owner: str) -> str:
        """Sorted set of an owner's books in flight (scored by admission time), for the books quota."""
        return self._k("quota", check_owner(owner), "books")

    def owner_streams(self, owner: str) -> str:
        """Sorted set of an owner's open stream slots, scored by the time their lease runs out."""
        return self._k("streams", "owner", check_owner(owner))

    def all_streams(self) -> str:
        """Sorted set of every open stream slot of the deployment, scored by lease expiry."""
        return self._k("streams", "all")

    def book_checkpoints(self, book_id: str) -> str:
        """Set of the checkpoint storage keys a book used (for reference counting on its deletion)."""
        return self._k("book", check_id(book_id, "book id"), "checkpoints")

    def checkpoint_refs(self) -> str:
        """Hash: checkpoint storage key -> number of books that use it."""
        return self._k("segments", "refs")

    def checkpoint_deleting(self) -> str:
        """Hash: checkpoint storage key -> unix time until which a purge or sweep is deleting it."""
        return self._k("segments", "deleting")

    def sweep_lock(self) -> str:
        """Lock held by the worker running the retention sweep (expires after one sweep interval)."""
        return self._k("sweep", "lock")

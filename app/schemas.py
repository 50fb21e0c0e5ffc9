"""Request and response models of the HTTP API, declared once: they shape the JSON and generate ``/openapi.json``.

The pydantic models below are the API's shapes; ``app/apidoc.py`` turns them into the OpenAPI
document. Validation of a request body is done field by field by the ``check_*`` functions, which
raise a SpoolError naming the field, what was wrong and what is valid (messages a generic validator
cannot give); the app turns it into ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from config import defaults
from engine.audio import AUDIO_FORMATS, FORMATS, normalize_format
from engine.catalog import OPENAI_VOICES, VoiceCatalog, openai_voice
from engine.exceptions import InvalidSpeedError, InvalidTextError, UnknownVoiceError, UnsupportedFormatError
from engine.languages import check_language
from engine.markup import MARKUP_MODES
from engine.voices import SPEED_RANGE, check_speed
from service import jobs
from service.exceptions import InvalidRequestError, PayloadTooLargeError
from service.jobs import JobSpec, iso_time
from service.qa import check_qa_request, job_qa_view, parse_qa_flag
from service.states import BOOK_STATES, JOB_STATES
from service.webhooks import STATES as WEBHOOK_STATES

#: Spool's own ``model`` names for ``POST /v1/audio/speech``.
SPOOL_SPEECH_MODELS: tuple[str, ...] = ("kokoro", "kokoro-82m")

#: OpenAI's speech models (current names and dated snapshots); every one is served by Kokoro-82M.
OPENAI_SPEECH_MODELS: tuple[str, ...] = (
    "tts-1",
    "tts-1-hd",
    "tts-1-1106",
    "tts-1-hd-1106",
    "gpt-4o-mini-tts",
    "gpt-4o-mini-tts-2025-03-20",
    "gpt-4o-mini-tts-2025-12-15",
)

#: Every ``model`` name listed by ``GET /v1/models``.
SPEECH_MODELS: tuple[str, ...] = SPOOL_SPEECH_MODELS + OPENAI_SPEECH_MODELS

#: Dated snapshots OpenAI may publish later are accepted too, so a new SDK default does not break.
DATED_SPEECH_MODEL = r"^(gpt-4o-mini-tts|tts-1|tts-1-hd)-\d{4}-\d{2}-\d{2}$"

#: OpenAI's speed range; the engine's (SPEED_RANGE) is narrower and values outside it are refused.
OPENAI_SPEED_RANGE: tuple[float, float] = (0.25, 4.0)

#: ``stream_format`` values: raw audio bytes, or Server-Sent Events with base64 audio.
STREAM_FORMATS_OPENAI: tuple[str, ...] = ("audio", "sse")

#: Longest ``instructions`` accepted (OpenAI's limit).
MAX_INSTRUCTIONS_CHARS = 4096

#: What Spool does with ``instructions``, said in the docs and in the ``X-Spool-Instructions`` header.
INSTRUCTIONS_NOTE = "ignored: Kokoro-82M has no style prompt; choose the delivery with voice and speed"

#: Longest webhook URL accepted.
MAX_URL_CHARS = 2048

_SPEED_LOW, _SPEED_HIGH = SPEED_RANGE


class JobRequest(BaseModel):
    """The body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        max_length=defaults.MAX_TEXT_CHARS,
        description="Text to speak (limit set by SPOOL_MAX_TEXT_CHARS).",
    )
    voice: str = Field(
        defaults.VOICE, description="Voice name, blend such as 'af_bella(2)+af_sky(1)', or 'piper:NAME'."
    )
    speed: float = Field(defaults.SPEED, ge=_SPEED_LOW, le=_SPEED_HIGH)
    format: Literal[FORMATS] = defaults.FORMAT  # type: ignore[valid-type]
    language: str | None = Field(
        None,
        description="Language code (en-us, en-gb, es, fr-fr, hi, it, ja, pt-br, cmn); null uses the voice's own.",
    )
    priority: Literal[defaults.CLIENT_PRIORITIES] = defaults.PRIORITY  # type: ignore[valid-type]
    webhook_url: str | None = Field(
        None, json_schema_extra={"format": "uri"}, description="POSTed the job's JSON when it finishes."
    )
    lexicon: str | None = Field(
        None, pattern="^[0-9a-f]{32}$", description="Id of one of your lexicons (POST /v1/lexicons) to apply."
    )
    markup: Literal[MARKUP_MODES] = Field(  # type: ignore[valid-type]
        "none", description="Inline markup in the text: 'ssml' (a subset), 'ipa-links' ([word](/ipa/)) or none."
    )
    qa: bool = Field(
        False,
        description="Automatic QA: once rendered, each segment is transcribed (Whisper tiny.en) and the ones "
        "whose word error rate exceeds SPOOL_QA_THRESHOLD are listed in the job's qa. English only; "
        "400 qa_not_installed where the deployment lacks the QA packages.",
    )


#: Fields ``POST /v1/jobs`` accepts.
JOB_FIELDS: tuple[str, ...] = tuple(JobRequest.model_fields)


class VoiceRef(BaseModel):
    """A voice given as an object, as OpenAI's custom voices are (``{"id": "af_heart"}``)."""

    id: str = Field(description="A Spool voice or an OpenAI voice name.")


class SpeechRequest(BaseModel):
    """The body of ``POST /v1/audio/speech``: OpenAI's fields (others are ignored) and Spool's extensions."""

    model: Literal[SPEECH_MODELS] | Annotated[str, StringConstraints(pattern=DATED_SPEECH_MODEL)] = Field(  # type: ignore[valid-type]
        "kokoro", description="Every model is served by Kokoro-82M; GET /v1/models lists them."
    )
    input: str = Field(min_length=1, description="Text to speak (limit set by SPOOL_MAX_TEXT_CHARS).")
    voice: str | VoiceRef = Field(
        defaults.VOICE,
        description="A Spool voice or blend, or an OpenAI name ("
        + ", ".join(f"{k} = {v}" for k, v in OPENAI_VOICES.items())
        + "); a string or {\"id\": ...}.",
    )
    instructions: str | None = Field(
        None, max_length=MAX_INSTRUCTIONS_CHARS, description=f"Accepted and {INSTRUCTIONS_NOTE}."
    )
    response_format: Literal[FORMATS] = "mp3"  # type: ignore[valid-type]
    speed: float = Field(
        1.0,
        ge=_SPEED_LOW,
        le=_SPEED_HIGH,
        description=f"OpenAI takes {OPENAI_SPEED_RANGE[0]:g}-{OPENAI_SPEED_RANGE[1]:g}; Kokoro speaks at "
        f"{_SPEED_LOW:g}-{_SPEED_HIGH:g} and other values are refused (400, param speed), never clamped.",
    )
    stream_format: Literal[STREAM_FORMATS_OPENAI] = Field(  # type: ignore[valid-type]
        "audio",
        description="audio: the file's bytes as they render; sse: speech.audio.delta events (base64 audio), "
        "then speech.audio.done with usage (input_tokens = input characters, output_tokens = audio chunks).",
    )
    language: str | None = Field(None, description="Spool extension: language code; null uses the voice's own.")
    stream: bool = Field(
        True,
        description="Spool extension: false waits for the whole file (with Content-Length and "
        "X-Audio-Duration) instead of streaming it as it renders.",
    )


class ModelCard(BaseModel):
    """One model, as OpenAI's ``GET /v1/models`` lists it."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time (0: Spool does not date its models).")
    owned_by: str


class ModelList(BaseModel):
    """The models ``POST /v1/audio/speech`` accepts."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class JobListQuery(BaseModel):
    """The query of ``GET /v1/jobs``."""

    state: Literal[JOB_STATES] | None = None  # type: ignore[valid-type]
    limit: int = Field(defaults.PAGE_SIZE, ge=1, le=defaults.MAX_PAGE_SIZE)
    cursor: str | None = Field(None, description="next_cursor of the previous page.")


class AudioQuery(BaseModel):
    """The query of ``GET /v1/jobs/<id>/audio``."""

    redirect: bool | None = Field(
        None, description="Redirect to a presigned storage URL when the storage offers one."
    )


class Progress(BaseModel):
    """How far a job has got."""

    segments_done: int
    segments_total: int | None
    audio_seconds: float
    percent: float


class JobError(BaseModel):
    """Why a job failed."""

    code: str
    message: str | None


class JobResult(BaseModel):
    """The audio of a succeeded job."""

    size: int | None
    duration: float | None
    format: str
    content_type: str | None
    url: str | None = Field(json_schema_extra={"format": "uri"})
    render_seconds: float | None = Field(None, exclude_if=lambda value: value is None)


class JobLinks(BaseModel):
    """Absolute URLs of a job's resources."""

    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self")
    audio: str
    stream: str
    events: str


class JobWebhook(BaseModel):
    """Delivery of a job's webhook (see docs/security.md for the signature)."""

    state: Literal[WEBHOOK_STATES] = Field(  # type: ignore[valid-type]
        description="pending until the job finishes; refused when the URL failed the check at send time."
    )
    attempts: int = Field(description="Deliveries tried so far.")
    last_status: int | None = Field(description="HTTP status of the last attempt (null: no answer).")


class QaFlagged(BaseModel):
    """A segment QA flagged: what it should say, what the recogniser heard, and where it is."""

    chapter: int | None = Field(None, description="Books: the chapter's number (1-based).", exclude_if=lambda v: v is None)
    chapter_title: str | None = Field(None, description="Books: the chapter's title.", exclude_if=lambda v: v is None)
    segment: int = Field(description="The segment's index (within its chapter for books).")
    text: str = Field(description="The segment's text.")
    heard: str = Field(description="What the recogniser heard (empty: nothing, e.g. silence).")
    wer: float = Field(description="Word error rate of what was heard against the text.")
    start: float = Field(description="Seconds from the start of the audio (of the chapter, for books).")
    book_start: float | None = Field(
        None, description="Books: seconds from the start of the book (book.m4b).", exclude_if=lambda v: v is None
    )
    duration: float = Field(description="Seconds of the segment's audio.")


class QaReport(BaseModel):
    """Automatic QA of a job or book (requested with qa=true); see docs/performance.md for its cost."""

    state: Literal["pending", "running", "done", "unavailable", "failed"] = Field(
        description="pending until the audio is rendered; unavailable or failed (with message): not checked."
    )
    threshold: float = Field(description="Word error rate above which a segment is flagged (SPOOL_QA_THRESHOLD).")
    model: str | None = Field(None, description="The recogniser.")
    segments_checked: int | None = None
    segments_flagged: int | None = None
    flagged: list[QaFlagged] | None = None
    audio_seconds: float | None = None
    qa_seconds: float | None = Field(None, description="Seconds the worker spent transcribing.")
    message: str | None = Field(None, description="Why QA did not run (unavailable, failed).")


class QueueWait(BaseModel):
    """Why a queued job or an unfinished book waits, and for how long (null once it runs or is done)."""

    position: int | None = Field(
        description="Jobs: 1 = next; counts only the jobs ahead in its lane and the lanes above (book "
        "work never). Books: null (books share the workers round-robin by key)."
    )
    ahead_segments: int = Field(
        description="Segments that render before it: jobs: those of the jobs ahead and what the busy workers "
        "finish first (a book segment each); books: the interactive jobs queued and the other books' turns "
        "until it is done."
    )
    eta_seconds: float | None = Field(
        description="Seconds until it is done, at the measured seconds per segment (with no live worker: "
        "as if one started now; books: null)."
    )
    reason: str = Field(description="Why it waits, in words.")


class Job(BaseModel):
    """A job as the API shows it."""

    id: str
    object: Literal["job"] = "job"
    kind: Literal["job", "speech"]
    state: Literal[JOB_STATES]  # type: ignore[valid-type]
    voice: str
    speed: float
    format: Literal[FORMATS]  # type: ignore[valid-type]
    language: str | None
    priority: str
    text_chars: int
    text_preview: str
    progress: Progress
    queue_position: int | None = Field(description="1 = next to run (the same as queue.position).")
    eta_seconds: float | None
    queue: QueueWait | None = Field(None, description="While queued: why it waits and for how long.")
    cancel_requested: bool
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    started_at: str | None = Field(json_schema_extra={"format": "date-time"})
    finished_at: str | None = Field(json_schema_extra={"format": "date-time"})
    attempts: int
    lexicon: str | None = Field(None, description="The lexicon applied, if any.")
    lexicon_version: str | None = Field(None, description="Its version when the job was submitted.")
    markup: str = Field("none", description="How inline markup in the text was read.")
    qa: QaReport | None = Field(None, description="Automatic QA (null: not requested).")
    error: JobError | None
    result: JobResult | None
    webhook: JobWebhook | None = Field(None, description="Null when the job has no webhook_url.")
    links: JobLinks


class JobList(BaseModel):
    """One page of jobs."""

    object: Literal["list"] = "list"
    data: list[Job]
    has_more: bool
    next_cursor: str | None


class ErrorBody(BaseModel):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable error name.")
    message: str = Field(description="What is wrong and how to fix it.")
    details: dict[str, Any] | None = None
    request_id: str | None = None


class Error(BaseModel):
    """Every error response."""

    error: ErrorBody


class OpenAIErrorBody(BaseModel):
    """What went wrong, in OpenAI's shape (the official SDKs read ``message``, ``type``, ``param``, ``code``)."""

    message: str = Field(description="What is wrong and how to fix it.")
    #: "requests" on a 429 (a quota or limit), as OpenAI types its own rate limits.
    type: Literal["invalid_request_error", "server_error", "requests"]
    param: str | None = Field(description="The request field at fault, when one is.")
    code: str = Field(description="Spool's stable machine-readable error name.")
    details: dict[str, Any] | None = None
    request_id: str | None = None


class OpenAIError(BaseModel):
    """Every error response of the OpenAI-compatible routes."""

    error: OpenAIErrorBody


class Health(BaseModel):
    """Whether Redis and the storage answer."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    storage: str | None


class Readiness(BaseModel):
    """Whether a worker with a loaded engine is there to take a job now."""

    ready: bool
    workers_ready: list[str]
    message: str


class Status(BaseModel):
    """Readiness, queue depths, live workers and jobs by state."""

    ready: bool
    queues: dict[str, dict[str, Any]]
    in_flight: int
    workers: list[dict[str, Any]]
    jobs: dict[str, int]


# -- books ---------------------------------------------------------------------------------------


class LexiconEntry(BaseModel):
    """One pronunciation: a word or phrase and its IPA phonemes (Kokoro's symbols) or an alias."""

    model_config = ConfigDict(extra="forbid")

    grapheme: str = Field(max_length=100, description="The word or phrase, as written.")
    phonemes: str | None = Field(None, max_length=400, description="IPA in Kokoro's phoneme set, e.g. hɜːmˈaɪəni.")
    alias: str | None = Field(None, max_length=400, description="Words said instead (a respelling).")
    case_sensitive: bool = Field(False, description="Match only this exact letter case.")
    whole_word: bool = Field(True, description="Match only whole words (false: also inside words).")


class LexiconRequest(BaseModel):
    """The JSON body of ``POST /v1/lexicons`` and ``PUT /v1/lexicons/<id>`` (a W3C PLS document also works)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=100)
    lang: str | None = Field(None, description="Language of the entries (informative).")
    entries: list[LexiconEntry] = Field(max_length=10_000)


class Lexicon(BaseModel):
    """A stored lexicon."""

    id: str
    object: Literal["lexicon"] = "lexicon"
    name: str
    lang: str | None
    version: str = Field(description="Digest of the entries; jobs and books record the one they used.")
    versions: list[str] = Field(description="Kept versions, newest first.")
    entry_count: int
    created_at: float
    updated_at: float
    entries: list[LexiconEntry] | None = Field(None, description="Absent in lists.")


class LexiconList(BaseModel):
    """The caller's lexicons, newest first (without their entries)."""

    object: Literal["list"] = "list"
    data: list[Lexicon]


class BookRequest(BaseModel):
    """The multipart form of ``POST /v1/books``."""

    file: str = Field(json_schema_extra={"format": "binary"}, description="The book: .epub, .txt or .md.")
    voice: str = Field(defaults.VOICE, description="A voice or blend, as for jobs.")
    speed: float = Field(defaults.SPEED, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    language: str | None = Field(None, description="Language (default: the voice's).")
    gap: float = Field(1.5, ge=0.0, le=10.0, description="Seconds of silence between chapters.")
    chapters: str | None = Field(
        None, description="Chapters to render, e.g. 1,3-5 (numbers as the plan shows)."
    )
    title: str | None = None
    author: str | None = None
    include_matter: bool = Field(False, description="Also read the sections the plan lists as skipped.")
    lexicon: str | None = Field(None, description="Id of one of your lexicons to apply (see /v1/lexicons).")
    qa: bool = Field(False, description="Automatic QA of the assembled audio (as for jobs); the report is in qa and manifest.json.")
    plan_only: bool = Field(False, description="Answer the chapter plan (200) and render nothing.")


class BookSection(BaseModel):
    """A section of a book: a chapter that is read, or matter that is skipped (with why)."""

    title: str
    kind: Literal["body", "front", "back"]
    words: int
    parents: list[str] = Field(
        description="Titles of the TOC entries it sits under (parts), outermost first."
    )
    reason: str | None = Field(description="Why it is front or back matter; null for chapters.")


class PlannedSection(BookSection):
    """A section in a plan preview."""

    index: int
    number: int | None = Field(description="Its number for `chapters` (null for matter not included).")
    minutes: float = Field(description="Estimated minutes of audio at the requested speed.")
    selected: bool
    skipped: bool


class BookSelection(BaseModel):
    """What a render with these options would read."""

    chapters: int
    words: int
    minutes: float


class BookPlan(BaseModel):
    """The chapter plan of an uploaded book (``plan_only=true``)."""

    object: Literal["book.plan"]
    source: str
    title: str
    author: str
    language: str | None
    format: str
    outline: str = Field(
        description="Where the chapters came from: nav, ncx, headings, documents, chapter lines."
    )
    words: int
    selected: BookSelection
    sections: list[PlannedSection]
    skipped: list[PlannedSection]
    warnings: list[str]


class BookPlanPending(BaseModel):
    """A plan_only upload not parsed within SPOOL_PLAN_WAIT seconds: fetch the plan from ``links.plan``."""

    id: str
    object: Literal["book.plan.pending"]
    state: Literal["parsing"]
    links: dict[str, str] = Field(description="plan: GET it until it answers 200 (or the parser's 4xx).")


class BookChapter(BaseModel):
    """One chapter being rendered."""

    number: int
    title: str
    parents: list[str]
    state: Literal["pending", "rendering", "done"]
    segments_done: int
    segments_total: int


class BookProgress(BaseModel):
    """How far the render is."""

    segments_done: int
    segments_total: int = Field(description="0 until a worker has planned the book.")
    percent: float
    audio_seconds: float
    eta_seconds: float | None


class BookFailure(BaseModel):
    """Why a book failed."""

    code: str
    message: str


class BookEdit(BaseModel):
    """One edit of a fix: ``find`` => ``replace`` in a chapter, or a segment's new ``text``."""

    chapter: int | None = Field(None, ge=1, description="Chapter number (1-based, as in the book's chapters).")
    find: str | None = Field(None, min_length=1, description="Text that must occur in the chapter; every occurrence is replaced.")
    replace: str | None = Field(None, description="What replaces it (may be empty).")
    segment: int | None = Field(None, ge=0, description="Segment index (0-based, as in the book's log).")
    text: str | None = Field(None, description="The segment's new text.")


class BookFixRequest(BaseModel):
    """PATCH /v1/books/<id>: edits and/or a changed lexicon, voice or speed; at least one."""

    edits: list[BookEdit] = Field(default_factory=list, max_length=500)
    lexicon: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="Lexicon id (its current version is used); null drops the book's lexicon.",
    )
    voice: str | None = Field(None, description="A new voice: every segment re-renders.")
    speed: float | None = Field(None, ge=0.5, le=2.0, description="A new speed: every segment re-renders.")


class BookFixEdit(BaseModel):
    """What one edit of a fix matched."""

    edit: int = Field(description="Its place in the request (1-based).")
    chapter: int
    matched: int = Field(description="How many times its text occurred (all were replaced).")
    find: str | None = None
    segment: int | None = None
    was: str | None = Field(None, description="For a segment edit: the segment's text before.")


class BookFix(BaseModel):
    """The fix that started a revision."""

    revision: int
    base_revision: int = Field(description="The revision the edits were made against.")
    requested_at: float
    edits: list[BookFixEdit]
    chapters_changed: list[int]
    voice: str | None = None
    speed: float | None = None
    lexicon_changed: bool = False


class Book(BaseModel):
    """An audiobook: state, progress, chapters, what was skipped, and the files once done."""

    id: str
    object: Literal["book"]
    state: Literal[BOOK_STATES] = Field(  # type: ignore[valid-type]
        description="parsing: stored, a light worker reads the upload; then queued, rendering, assembling, "
        "and one of succeeded, failed (error says why: invalid_book, book_too_large, ...), cancelled."
    )
    title: str
    author: str
    voice: str
    speed: float
    lexicon: str | None = Field(None, description="The lexicon applied, if any.")
    lexicon_version: str | None = Field(None, description="Its version when the book was submitted.")
    created_at: float
    started_at: float | None
    finished_at: float | None
    planned: bool = Field(description="True once a worker has split the chapters into segments.")
    progress: BookProgress
    queue: QueueWait | None = Field(
        None, description="Until it is assembled: whom it shares the workers with, and its ETA."
    )
    chapters: list[BookChapter]
    skipped: list[BookSection]
    warnings: list[str]
    duration: float | None
    manifest: dict[str, Any] | None
    qa: QaReport | None = Field(None, description="Automatic QA (null: not requested); also manifest.json's qa.")
    files: list[str]
    error: BookFailure | None
    revision: int = Field(1, description="1 at the first render, one more for every accepted PATCH.")
    served_revision: int | None = Field(
        None, description="The revision whose files are downloaded (the last that succeeded); null before any."
    )
    segments_rendered: int = Field(0, description="Segments synthesised for this revision.")
    segments_reused: int = Field(0, description="Segments of this revision taken from existing checkpoints.")
    fix: BookFix | None = Field(None, description="The fix that started this revision (null for revision 1).")
    note: str | None = Field(None, description="Which revision is served while a newer one renders or after it failed.")
    links: dict[str, str]


class BookList(BaseModel):
    """The caller's recent books, newest first."""

    object: Literal["list"]
    data: list[Book]


def dump(model: BaseModel) -> dict[str, Any]:
    """A response model as the JSON object it is sent as (absent optional extras left out)."""
    return model.model_dump(by_alias=True)


class TextTooLongError(PayloadTooLargeError):
    """The text is longer than ``SPOOL_MAX_TEXT_CHARS``."""

    code = "text_too_long"


def check_text(text: object, max_chars: int, field: str = "text") -> str:
    """Return the text if it is a non-blank string within the limit."""
    if text is None:
        raise InvalidTextError(f"'{field}' is required: the text to speak.", field=field)
    if not isinstance(text, str):
        raise InvalidTextError(f"'{field}' must be a string, got {type(text).__name__}.", field=field)
    if not text.strip():
        raise InvalidTextError(f"'{field}' is empty or only whitespace: give the text to speak.", field=field)
    if not any(ch.isalnum() for ch in text):
        # Only emoji, symbols or punctuation: the job would render silence.
        raise InvalidTextError(
            f"'{field}' has no letters or digits, so there is nothing to speak: give words to read.",
            field=field,
        )
    if len(text) > max_chars:
        raise TextTooLongError(
            f"'{field}' is {len(text):,} characters long; the limit is {max_chars:,}. Split it into several "
            "jobs, or submit it as a book (POST /v1/books).",
            field=field,
            length=len(text),
            limit=max_chars,
        )
    return text


def check_format(value: object, field: str = "format") -> str:
    """Return the canonical format name."""
    if value is None:
        return defaults.FORMAT
    try:
        return normalize_format(value)  # type: ignore[arg-type]
    except UnsupportedFormatError as exc:
        exc.details.setdefault("field", field)
        raise


def check_priority(value: object) -> str:
    """Return a priority name the client may use."""
    if value is None:
        return defaults.PRIORITY
    if value not in defaults.CLIENT_PRIORITIES:
        raise InvalidRequestError(
            f"Invalid priority {value!r}: use one of {', '.join(defaults.CLIENT_PRIORITIES)}.",
            field="priority",
            priorities=list(defaults.CLIENT_PRIORITIES),
        )
    return str(value)


def check_webhook_url(value: object) -> str | None:
    """Return an absolute http(s) URL, or None when none is given."""
    if value is None or value == "":
        return None
    message = "Invalid webhook_url: give an absolute http:// or https:// URL, e.g. https://example.com/hook."
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        raise InvalidRequestError(message, field="webhook_url")
    try:
        parsed = urlparse(value.strip())
        port_ok = parsed.port is None or 0 < parsed.port < 65536
    except ValueError:
        raise InvalidRequestError(message, field="webhook_url") from None
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or not port_ok
        or any(ch.isspace() for ch in value.strip())
    ):
        raise InvalidRequestError(message, field="webhook_url")
    return value.strip()


def check_speed_value(value: object, field: str = "speed") -> float:
    """Return the speed (default 1.0) if it is a number in range."""
    if value is None:
        return defaults.SPEED
    try:
        return check_speed(value)
    except Exception as exc:
        getattr(exc, "details", {}).setdefault("field", field)
        raise


def require_object(body: Any) -> Mapping[str, Any]:
    """The parsed JSON must be an object."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError(
            f'The JSON body must be an object such as {{"text": "Hello."}}, got {type(body).__name__}.'
        )
    return body


def parse_job_request(body: Any, catalog: VoiceCatalog, max_text_chars: int) -> JobSpec:
    """Validate a ``POST /v1/jobs`` body into a JobSpec."""
    body = require_object(body)
    unknown = sorted(set(body) - set(JOB_FIELDS))
    if unknown:
        raise InvalidRequestError(
            f"Unknown field(s) {', '.join(map(repr, unknown))}; valid fields: {', '.join(JOB_FIELDS)}.",
            fields=unknown,
            valid=list(JOB_FIELDS),
        )
    text = check_text(body.get("text"), max_text_chars)
    voice, voice_lang = catalog.check_voice(body.get("voice", defaults.VOICE))
    language = check_language(body.get("language"))
    return JobSpec(
        text=text,
        voice=voice,
        speed=check_speed_value(body.get("speed")),
        format=check_format(body.get("format")),
        language=language,
        priority=check_priority(body.get("priority")),
        webhook_url=check_webhook_url(body.get("webhook_url")),
        lexicon=check_lexicon_id(body.get("lexicon")),
        markup=check_markup(body.get("markup")),
        qa=check_qa_request(parse_qa_flag(body.get("qa")), language or voice_lang),
    )


def check_lexicon_id(value: object, field: str = "lexicon") -> str | None:
    """A lexicon id (32 hex digits) or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        raise InvalidRequestError(
            f"{field} must be a lexicon id (32 hex digits, from POST /v1/lexicons), got {str(value)[:64]!r}.",
            field=field,
        )
    return value


def check_markup(value: object, field: str = "markup") -> str:
    """An inline markup mode (default none)."""
    if value is None:
        return "none"
    if value not in MARKUP_MODES:
        raise InvalidRequestError(
            f"{field} must be one of {', '.join(MARKUP_MODES)}, got {str(value)[:64]!r}.", field=field
        )
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class ParsedSpeech:
    """A validated ``POST /v1/audio/speech`` body."""

    spec: JobSpec
    #: False only for Spool's ``"stream": false``: answer with the whole file when it is ready.
    stream: bool
    #: ``audio`` (the file's bytes as they render) or ``sse`` (OpenAI's speech events).
    stream_format: str
    model: str
    #: OpenAI's style prompt, accepted and not applied (see INSTRUCTIONS_NOTE).
    instructions: str | None


def check_speech_model(value: object) -> str:
    """Return the model name if it is one Spool serves (OpenAI's names and their dated snapshots)."""
    if value is None:
        return SPOOL_SPEECH_MODELS[0]
    if isinstance(value, str) and (value in SPEECH_MODELS or re.match(DATED_SPEECH_MODEL, value)):
        return value
    raise InvalidRequestError(
        f"Unknown model {value!r}: use one of {', '.join(SPEECH_MODELS)} (all are served by Kokoro-82M; "
        "GET /v1/models lists them).",
        field="model",
        models=list(SPEECH_MODELS),
    )


def check_speech_voice(value: object, catalog: VoiceCatalog) -> str:
    """Return the Spool voice for a voice string, an ``{"id": ...}`` object, or an OpenAI voice name."""
    if value is None:
        return defaults.VOICE
    if isinstance(value, Mapping):
        if set(value) != {"id"}:
            raise UnknownVoiceError(
                'A voice object must be {"id": "NAME"} with a Spool or OpenAI voice name, e.g. {"id": "alloy"}.',
                field="voice",
            )
        value = value["id"]
    voice = openai_voice(value) or value
    try:
        voice, _ = catalog.check_voice(voice)
    except UnknownVoiceError as exc:
        exc.message = (
            f"{exc.message} OpenAI voices (each spoken by the Kokoro voice named): "
            + ", ".join(f"{k} ({v})" for k, v in OPENAI_VOICES.items())
            + "; GET /v1/voices lists every Kokoro voice."
        )
        exc.details.update(field="voice", openai_voices=list(OPENAI_VOICES))
        raise
    return voice


def check_speech_speed(value: object) -> float:
    """Return the speed if the engine can speak it; OpenAI's wider range is refused, never clamped."""
    low, high = OPENAI_SPEED_RANGE
    if isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high:
        if not _SPEED_LOW <= value <= _SPEED_HIGH:
            raise InvalidSpeedError(
                f"speed {value:g} is within OpenAI's {low:g}-{high:g} range, but Kokoro-82M speaks only "
                f"from {_SPEED_LOW:g} to {_SPEED_HIGH:g} times normal speed: send a speed in "
                f"{_SPEED_LOW:g}-{_SPEED_HIGH:g} (Spool does not clamp it, so you never get another speed "
                "than you asked for).",
                field="speed",
                speed=value,
                range=[_SPEED_LOW, _SPEED_HIGH],
            )
    return check_speed_value(value)


def check_instructions(value: object) -> str | None:
    """Return OpenAI's ``instructions`` string (accepted, not applied), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"'instructions' must be a string, got {type(value).__name__}.", field="instructions"
        )
    if len(value) > MAX_INSTRUCTIONS_CHARS:
        raise InvalidRequestError(
            f"'instructions' is {len(value):,} characters long; the limit is {MAX_INSTRUCTIONS_CHARS:,}.",
            field="instructions",
        )
    return value


def check_stream_options(stream: object, stream_format: object) -> tuple[bool, str]:
    """Return (stream, stream_format) from Spool's ``stream`` and OpenAI's ``stream_format``."""
    if stream is None:
        stream = True
    if not isinstance(stream, bool):
        raise InvalidRequestError(
            "'stream' must be true (the default: audio as it renders) or false (the whole file).",
            field="stream",
        )
    if stream_format is None:
        stream_format = "audio"
    if stream_format not in STREAM_FORMATS_OPENAI:
        raise InvalidRequestError(
            f"Invalid stream_format {stream_format!r}: use one of {', '.join(STREAM_FORMATS_OPENAI)}.",
            field="stream_format",
            valid=list(STREAM_FORMATS_OPENAI),
        )
    if stream_format == "sse" and not stream:
        raise InvalidRequestError(
            "stream_format 'sse' streams events, and 'stream': false asks for the whole file: drop one of them.",
            field="stream",
        )
    return stream, str(stream_format)


def parse_speech_request(body: Any, catalog: VoiceCatalog, max_text_chars: int) -> ParsedSpeech:
    """Validate an OpenAI speech body (fields OpenAI may add later are ignored, as OpenAI's clients expect)."""
    body = require_object(body)
    model = check_speech_model(body.get("model"))
    text = check_text(body.get("input"), max_text_chars, field="input")
    voice = check_speech_voice(body.get("voice"), catalog)
    stream, stream_format = check_stream_options(body.get("stream"), body.get("stream_format"))
    spec = JobSpec(
        text=text,
        voice=voice,
        speed=check_speech_speed(body.get("speed")),
        format=check_format(body.get("response_format", "mp3"), field="response_format"),
        language=check_language(body.get("language")),
        priority="high",  # a caller is waiting on the connection
    )
    return ParsedSpeech(spec, stream, stream_format, model, check_instructions(body.get("instructions")))


def parse_limit(value: str | None) -> int:
    """Page size from the ``limit`` query parameter."""
    if value is None or value == "":
        return defaults.PAGE_SIZE
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if not 1 <= limit <= defaults.MAX_PAGE_SIZE:
        raise InvalidRequestError(
            f"Invalid limit {value!r}: use a whole number from 1 to {defaults.MAX_PAGE_SIZE}.", field="limit"
        )
    return limit


def job_to_dict(
    job: jobs.Job,
    *,
    links: Mapping[str, str],
    queue_position: int | None = None,
    eta_seconds: float | None = None,
    qa_threshold: float = defaults.QA_THRESHOLD,
    queue: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The public JSON form of a job."""
    total = job.segments_total
    percent = (
        100.0 if job.state == "succeeded" else (round(100.0 * job.segments_done / total, 1) if total else 0.0)
    )
    result = None
    if job.state == "succeeded" and job.result_key:
        render_seconds = job.extra.get("render_seconds")
        result = JobResult(
            size=job.result_size,
            duration=job.result_duration,
            format=job.format,
            content_type=job.result_content_type or AUDIO_FORMATS[job.format].content_type,
            url=links.get("audio"),
            render_seconds=float(render_seconds) if render_seconds else None,
        )
    error = JobError(code=job.error_code, message=job.error_message) if job.error_code else None
    # Fields the record has under the same name are shown as they are; the rest are computed here.
    same = {name: getattr(job, name) for name in Job.model_fields if hasattr(job, name)}
    body = Job(
        **same
        | {
            "state": str(job.state),
            "text_preview": job.text[:120],
            "progress": Progress(
                segments_done=job.segments_done,
                segments_total=total,
                audio_seconds=round(job.audio_seconds, 3),
                percent=percent,
            ),
            "queue_position": queue_position,
            "eta_seconds": eta_seconds,
            "queue": QueueWait.model_validate(queue) if queue else None,
            "cancel_requested": job.cancel_requested and not job.is_terminal,
            "created_at": iso_time(job.created_at),
            "started_at": iso_time(job.started_at),
            "finished_at": iso_time(job.finished_at),
            "error": error,
            "result": result,
            "webhook": JobWebhook(
                state=job.webhook_state, attempts=job.webhook_attempts, last_status=job.webhook_last_status
            )
            if job.webhook_state
            else None,
            "links": JobLinks.model_validate(links),
            "qa": job_qa_view(job, qa_threshold),
        }
    )
    return dump(body)


__all__ = [
    "FORMATS",
    "JOB_FIELDS",
    "ModelList",
    "OpenAIError",
    "ParsedSpeech",
    "SpeechRequest",
    "job_to_dict",
    "parse_job_request",
    "parse_speech_request",
]

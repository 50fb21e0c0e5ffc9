"""Audiobook endpoints: upload a book, follow its chapters, download the results, cancel."""

from __future__ import annotations

import math
import threading
from pathlib import Path

from flask import Blueprint, Response, jsonify, request, url_for

from app import services
from app.apidoc import operation
from app.auth import current_owner
from app.schemas import Book, BookList, BookPlan, BookPlanPending, BookRequest, check_lexicon_id
from config import defaults
from engine.audiobook import DEFAULT_CHAPTER_GAP
from engine.book import BOOK_FORMATS, check_upload, parse_chapter_list
from engine.exceptions import BookError, InvalidSpeedError
from engine.languages import normalize_lang
from engine.voices import check_speed
from service.book_parse import accept_book, plan_state, request_plan, wait_parsed
from service.books import BookSpec, BookStore
from service.exceptions import (
    BookTooLargeError,
    BookUnreadableError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from service.keys import PART_RE
from service.logging import bind_job
from service.qa import check_qa_request, parse_qa_flag
from service.retention import purge_book
from service.states import FINISHED

bp = Blueprint("books", __name__, url_prefix="/v1/books")

#: Longest pause accepted between chapters, in seconds.
MAX_CHAPTER_GAP = 10.0

_TRUE = {"1", "true", "yes", "on"}

#: plan_only requests of this process waiting for their parse (beyond it they get 202 at once).
_plan_waiters = threading.BoundedSemaphore(defaults.PLAN_WAITERS)

#: The error a failed parse is answered with, by its code (the parser's message goes with it).
_PARSE_ERRORS = {e.code: e for e in (BookError, BookTooLargeError, BookUnreadableError)}


def _store() -> BookStore:
    return BookStore(services())


def _links(book_id: str) -> dict[str, str]:
    return {
        "self": url_for("books.get_book", book_id=book_id, _external=True),
        "plan": url_for("books.get_plan", book_id=book_id, _external=True),
        "zip": url_for("books.get_file", book_id=book_id, name="book.zip", _external=True),
    }


def _plan_response(plan_id: str, owner: str):  # type: ignore[no-untyped-def]
    """The plan (200), the parser's error (4xx, as the upload itself would get), or 202 while it is parsed."""
    found = plan_state(services(), plan_id, owner)
    if found["plan"] is not None:
        return jsonify(found["plan"])
    if found["error"] is not None:
        error = _PARSE_ERRORS.get(found["error"]["code"], BookUnreadableError)
        if found["error"]["code"] not in _PARSE_ERRORS:  # cancelled, attempts exhausted: not the file's fault
            raise ConflictError(found["error"]["message"], state=found["state"], code=found["error"]["code"])
        raise error(found["error"]["message"])
    link = url_for("books.get_plan", book_id=plan_id, _external=True)
    response = jsonify({"id": plan_id, "object": "book.plan.pending", "state": "parsing", "links": {"plan": link}})
    response.status_code = 202
    response.headers["Location"] = link
    response.headers["Retry-After"] = "2"
    return response


def _spec_from_form(catalog) -> BookSpec:  # type: ignore[no-untyped-def]
    """Read and check the form fields of an upload."""
    form = request.form
    voice = (form.get("voice") or defaults.VOICE).strip()
    _, voice_lang = catalog.check_voice(voice)
    try:
        speed = check_speed(float(form.get("speed", defaults.SPEED)))
    except ValueError:
        raise InvalidSpeedError(
            f"speed must be a number from 0.5 to 2.0, got {form.get('speed')!r}."
        ) from None
    try:
        gap = float(form.get("gap", DEFAULT_CHAPTER_GAP))
    except ValueError:
        gap = math.nan
    if not (0.0 <= gap <= MAX_CHAPTER_GAP):
        raise InvalidRequestError(
            f"gap must be seconds from 0 to {MAX_CHAPTER_GAP:g}, got {form.get('gap')!r}."
        )
    chapters = parse_chapter_list(form.get("chapters"))
    lexicon = check_lexicon_id(form.get("lexicon"))
    language = normalize_lang(form.get("language") or None, voice_lang)
    return BookSpec(
        voice=voice,
        speed=speed,
        language=language,
        gap=gap,
        title=(form.get("title") or "").strip() or None,
        author=form.get("author").strip() if form.get("author") is not None else None,
        chapters=tuple(chapters or ()),
        include_matter=(form.get("include_front_matter") or form.get("include_matter") or "").lower()
        in _TRUE,
        lexicon=lexicon,
        lexicon_version=services().lexicons.get(current_owner(), lexicon).version if lexicon else None,
        qa=check_qa_request(parse_qa_flag(form.get("qa")), language),
    )


@bp.post("")
@operation(
    tag="books",
    operation_id="createBook",
    form=BookRequest,
    responses={
        200: (BookPlan, "With plan_only=true: the chapter plan; nothing is rendered."),
        202: (
            Book,
            "Stored (state parsing); a light worker parses it, a worker plans it, then every worker renders "
            "it. With plan_only=true, a BookPlanPending: the plan was not ready within SPOOL_PLAN_WAIT "
            "seconds; fetch it from links.plan.",
        ),
    },
    response_headers={202: ("Location",)},
    errors={
        400: "Not multipart, no file, an empty or damaged book (not a zip, no container.xml or package, "
        "an archive past the limits: members, inflated size, compression ratio), or an invalid field; "
        "with plan_only=true also what the parser found wrong.",
        413: "The file is larger than SPOOL_MAX_UPLOAD_BYTES; with plan_only=true also book_too_large.",
    },
)
def create_book():  # type: ignore[no-untyped-def]
    """Upload an EPUB, .txt or .md book (multipart field ``file``) and start rendering it.

    The web process only checks the upload cheaply (size, type by suffix and content, an EPUB's
    directory read without inflating it) and stores it; a light worker parses it in a child process
    with memory and CPU limits, so a book that fails there fails with ``invalid_book`` or
    ``book_too_large`` (state ``failed``). With ``plan_only=true`` nothing is rendered: the answer
    (200) is the chapter plan, every section with its words, estimated minutes and, for skipped
    matter, the reason; if the parse takes longer than SPOOL_PLAN_WAIT seconds, 202 with the plan's link.
    """
    svc = services()
    if not (request.mimetype or "").startswith("multipart/form-data"):
        raise InvalidRequestError(
            "Upload the book as multipart/form-data with the file in the field 'file' "
            "(curl -F file=@book.epub -F voice=af_heart ...)."
        )
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise InvalidRequestError("No file: send the book in the multipart field 'file'.")
    suffix = Path(upload.filename).suffix.lower()
    if suffix not in BOOK_FORMATS:
        raise InvalidRequestError(
            f"Unsupported book type {suffix or upload.filename!r}: upload {', '.join(sorted(BOOK_FORMATS))}.",
            filename=upload.filename,
        )
    data = upload.read(svc.settings.max_upload_bytes + 1)
    if len(data) > svc.settings.max_upload_bytes:
        raise PayloadTooLargeError(f"The book is larger than {svc.settings.max_upload_bytes:,} bytes.")
    spec = _spec_from_form(svc.catalog)
    check_upload(upload.filename, data)  # 400 invalid_book; nothing parsed or inflated: that is a worker's
    store = _store()
    owner = current_owner()
    if (request.form.get("plan_only") or "").lower() in _TRUE:
        # A preview: what would be read and what left out, before committing hours of rendering.
        plan_id = request_plan(svc, data, upload.filename, spec, owner)
        del data
        if _plan_waiters.acquire(blocking=False):
            try:
                wait_parsed(svc, plan_id, svc.settings.plan_wait)
            finally:
                _plan_waiters.release()
        return _plan_response(plan_id, owner)
    token = svc.quotas.admit_book(owner)  # 429 when the key already has its books in flight
    try:
        book_id = accept_book(svc, data, upload.filename, spec, owner)
    except BaseException:
        svc.quotas.release_book(owner, token)
        raise
    svc.quotas.bind_book(owner, token, book_id)
    bind_job(book_id)
    body = store.payload(book_id) | {"links": _links(book_id)}
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = _links(book_id)["self"]
    return response


@bp.get("")
@operation(tag="books", operation_id="listBooks", responses={200: (BookList, "The caller's recent books.")})
def list_books():  # type: ignore[no-untyped-def]
    """The caller's recent books, newest first."""
    store = _store()
    owner = current_owner()
    data = []
    for book_id in store.list(owner):
        try:
            data.append(store.payload(book_id, owner) | {"links": _links(book_id)})
        except NotFoundError:
            continue
    return jsonify({"object": "list", "data": data})


@bp.get("/<book_id>")
@operation(
    tag="books", operation_id="getBook", responses={200: (Book, "The book.")}, errors={404: "No such book."}
)
def get_book(book_id: str):  # type: ignore[no-untyped-def]
    """A book's state, progress with ETA, chapters and files."""
    bind_job(book_id)
    return jsonify(_store().payload(book_id, current_owner()) | {"links": _links(book_id)})


@bp.get("/<book_id>/plan")
@operation(
    tag="books",
    operation_id="getBookPlan",
    responses={
        200: (BookPlan, "The chapter plan (of a plan_only request, or of a submitted book once parsed)."),
        202: (BookPlanPending, "Still being parsed; ask again after Retry-After seconds."),
    },
    response_headers={202: ("Location", "Retry-After")},
    errors={
        400: "The parser could not read the book (invalid_book, book_unreadable), with its message.",
        404: "No such plan or book (plans of plan_only requests are kept an hour).",
        409: "The book was cancelled (or gave up) before it was parsed.",
        413: "Parsing ran past its memory or CPU limit (book_too_large).",
    },
)
def get_plan(book_id: str):  # type: ignore[no-untyped-def]
    """The chapter plan of a ``plan_only`` upload (or of a submitted book), once a worker has parsed it."""
    bind_job(book_id)
    return _plan_response(book_id, current_owner())


@bp.delete("/<book_id>")
@operation(
    tag="books",
    operation_id="cancelBook",
    responses={
        200: (Book, "Cancelled: workers stop before their next segment."),
        204: "Finished: its files, unshared checkpoints and state are deleted.",
    },
    errors={404: "No such book."},
)
def cancel_book(book_id: str):  # type: ignore[no-untyped-def]
    """Cancel a book in flight (workers stop before their next segment), or delete a finished one (204)."""
    store = _store()
    owner = current_owner()
    rec = store.record(book_id, owner)
    if rec.state in FINISHED:
        purge_book(services(), rec.id, owner)
        return Response(status=204)
    store.cancel(book_id, owner)
    return jsonify(store.payload(book_id) | {"links": _links(book_id)})


@bp.get("/<book_id>/files/<name>")
@operation(
    tag="books",
    operation_id="getBookFile",
    responses={200: "The file (book.m4b, a chapter MP3, book.srt, book.vtt, manifest.json, book.zip)."},
    errors={404: "No such book or file.", 409: "The book has not succeeded yet."},
)
def get_file(book_id: str, name: str):  # type: ignore[no-untyped-def]
    """Download one output (book.m4b, a chapter MP3, book.srt, book.vtt, manifest.json, book.zip)."""
    svc = services()
    store = _store()
    payload = store.payload(book_id, current_owner())
    # A fixed book serves its last good revision while the next one renders (or after it failed).
    if not payload["served_revision"]:
        raise ConflictError(f"Book {book_id} is {payload['state']}; files exist once it has succeeded.")
    allowed = set(payload["files"]) | {"manifest.json"}
    if name not in allowed or not PART_RE.match(name):
        raise NotFoundError(f"Book {book_id} has no file {name!r}; files: {', '.join(sorted(allowed))}.")
    key = svc.keys.book_revision_file(book_id, payload["served_revision"], name)
    info = svc.storage.info(key)
    headers = {
        "Content-Length": str(info.size),
        "Content-Type": info.content_type or "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    return Response(svc.storage.iter_range(key, 0, info.size - 1), headers=headers, direct_passthrough=True)


@bp.get("/<book_id>/zip")
@operation(
    tag="books",
    operation_id="getBookZip",
    responses={200: "Every output of the book in one zip."},
    errors={404: "No such book.", 409: "The book has not succeeded yet."},
)
def get_zip(book_id: str):  # type: ignore[no-untyped-def]
    """Every output of the book in one zip."""
    return get_file(book_id, "book.zip")

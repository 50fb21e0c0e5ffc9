"""Audiobook endpoints: upload a book, follow its chapters, download the results, cancel."""

from __future__ import annotations

import math
from pathlib import Path

from flask import Blueprint, Response, jsonify, request, url_for

from app import services
from app.apidoc import operation
from app.auth import current_owner
from app.schemas import Book, BookList, BookPlan, BookRequest, check_lexicon_id
from config import defaults
from engine.audiobook import DEFAULT_CHAPTER_GAP
from engine.book import BOOK_FORMATS, load_book, parse_chapter_list
from engine.exceptions import InvalidSpeedError
from engine.languages import normalize_lang
from engine.voices import check_speed
from service.books import BookSpec, BookStore
from service.exceptions import ConflictError, InvalidRequestError, NotFoundError, PayloadTooLargeError
from service.keys import PART_RE
from service.logging import bind_job
from service.qa import check_qa_request, parse_qa_flag
from service.retention import purge_book
from service.states import FINISHED

bp = Blueprint("books", __name__, url_prefix="/v1/books")

#: Longest pause accepted between chapters, in seconds.
MAX_CHAPTER_GAP = 10.0

_TRUE = {"1", "true", "yes", "on"}


def _store() -> BookStore:
    return BookStore(services())


def _links(book_id: str) -> dict[str, str]:
    return {
        "self": url_for("books.get_book", book_id=book_id, _external=True),
        "zip": url_for("books.get_file", book_id=book_id, name="book.zip", _external=True),
    }


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
        202: (Book, "Stored; a worker plans it, then every worker renders it."),
    },
    response_headers={202: ("Location",)},
    errors={
        400: "Not multipart, no file, an unreadable or empty book, or an invalid field.",
        413: "The file is larger than SPOOL_MAX_UPLOAD_BYTES.",
    },
)
def create_book():  # type: ignore[no-untyped-def]
    """Upload an EPUB, .txt or .md book (multipart field ``file``) and start rendering it.

    With ``plan_only=true`` nothing is rendered: the answer (200) is the chapter plan, every
    section with its words, estimated minutes and, for skipped matter, the reason.
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
    book = load_book(upload.filename, data=data, filename=upload.filename)
    if (request.form.get("plan_only") or "").lower() in _TRUE:
        # A preview: what would be read and what left out, before committing hours of rendering.
        chapters = list(spec.chapters) or None
        preview = book.preview(include_matter=spec.include_matter, chapters=chapters, speed=spec.speed)
        return jsonify({"object": "book.plan", "source": Path(upload.filename).name[:200]} | preview)
    store = _store()
    owner = current_owner()
    token = svc.quotas.admit_book(owner)  # 429 when the key already has its books in flight
    try:
        book_id = store.create(book, spec, owner, source_name=Path(upload.filename).name[:200])
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

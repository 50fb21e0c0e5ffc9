"""``PATCH /v1/books/<id>``: fix a finished book (edits, lexicon, voice, speed) as a new revision.

Its own blueprint under the books prefix, so the books module stays as it is; the work is in
``service.book_fix``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, url_for

from app import services
from app.api import json_body
from app.apidoc import operation
from app.auth import current_owner
from app.schemas import Book, BookFixRequest
from service.book_fix import parse_fix, start_fix
from service.logging import bind_job

bp = Blueprint("book_fix", __name__, url_prefix="/v1/books")


@bp.patch("/<book_id>")
@operation(
    tag="books",
    operation_id="fixBook",
    body=BookFixRequest,
    responses={202: (Book, "The new revision is queued; the previous one is served until it succeeds.")},
    response_headers={202: ("Location",)},
    errors={
        400: "A malformed fix, an edit whose text does not occur (named), overlapping edits, or nothing to change.",
        404: "No such book (or lexicon) for this API key.",
        409: "The book is rendering (wait until it has finished), or it never succeeded.",
        415: "The body is not JSON.",
    },
)
def fix_book(book_id: str):  # type: ignore[no-untyped-def]
    """Fix a finished book: edits, a changed lexicon, voice or speed; only changed segments re-render.

    The answer's ``fix`` says what each edit matched; the book's ``revision`` goes up by one, and
    its files stay those of ``served_revision`` until the new revision succeeds.
    """
    svc = services()
    bind_job(book_id)
    fix = parse_fix(json_body(svc.settings.max_body_bytes))
    owner = current_owner()
    start_fix(svc, book_id, owner, fix)
    link = url_for("books.get_book", book_id=book_id, _external=True)
    body = svc.books.payload(book_id, owner) | {
        "links": {"self": link, "zip": url_for("books.get_file", book_id=book_id, name="book.zip", _external=True)}
    }
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = link
    return response

"""``/v1/lexicons``: each API key's pronunciation lexicons (JSON or W3C PLS), and their use by jobs.

A body is JSON (``{"name", "lang", "entries": [{"grapheme", "phonemes" | "alias", ...}]}``), a PLS
document (``Content-Type: application/pls+xml``), or a multipart upload of either in the field
``file``. ``GET /v1/lexicons/<id>?format=pls`` exports PLS. Another key's lexicon is a 404.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from app import services
from app.api import json_body
from app.apidoc import operation
from app.auth import current_owner
from app.schemas import Lexicon as LexiconModel
from app.schemas import LexiconList, LexiconRequest
from config import defaults
from engine.catalog import VoiceCatalog
from engine.exceptions import InvalidTextError, LexiconError
from engine.lexicon import Lexicon
from engine.markup import parse_markup
from service.exceptions import InvalidRequestError, PayloadTooLargeError
from service.jobs import JobSpec
from service.lexicons import LexiconStore, summary

bp = Blueprint("lexicons", __name__, url_prefix="/v1/lexicons")

#: Content types read as W3C PLS.
PLS_TYPES = ("application/pls+xml", "application/xml", "text/xml")

_ERRORS = {
    400: "Malformed JSON or PLS, a bad entry, or IPA with symbols Kokoro has no token for (named, with positions).",
    413: "Body larger than the lexicon limit.",
}


def _store() -> LexiconStore:
    return services().lexicons


def _lexicon_from_request() -> Lexicon:
    """The lexicon in the body: JSON, PLS, or a multipart ``file`` of either."""
    limit = defaults.LEXICON_MAX_BYTES
    mimetype = request.mimetype or ""
    if mimetype.startswith("multipart/form-data"):
        upload = request.files.get("file")
        if upload is None:
            raise InvalidRequestError("No file: send the lexicon (.pls or .json) in the multipart field 'file'.")
        data = upload.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLargeError(f"The lexicon is larger than {limit:,} bytes.", limit=limit)
        name = request.form.get("name") or (upload.filename or "").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if data.lstrip()[:1] in (b"{", b"["):
            try:
                parsed = json.loads(data)
            except ValueError as exc:
                raise LexiconError(f"The uploaded lexicon is not valid JSON: {exc}.") from None
            lexicon = Lexicon.from_dict(parsed)
            return lexicon if lexicon.name else dataclasses.replace(lexicon, name=name[:100])
        return Lexicon.from_pls(data, name=name[:100])
    if mimetype in PLS_TYPES:
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(f"The lexicon is larger than {limit:,} bytes.", limit=limit)
        return Lexicon.from_pls(request.get_data(cache=False)[: limit + 1], name=(request.args.get("name") or "")[:100])
    return Lexicon.from_dict(json_body(limit))


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    """The lexicon's JSON with its link; a 201 also names it in ``Location``."""
    link = url_for("lexicons.get_lexicon", lexicon_id=body["id"], _external=True)
    response = jsonify(body | {"links": {"self": link}})
    response.status_code = status
    if status == 201:
        response.headers["Location"] = link
    return response


@bp.post("")
@operation(
    tag="lexicons",
    operation_id="createLexicon",
    body=LexiconRequest,
    responses={201: (LexiconModel, "Stored (IPA checked against Kokoro's phoneme set).")},
    response_headers={201: ("Location",)},
    errors=_ERRORS | {409: "This API key has the most lexicons allowed."},
)
def create_lexicon():  # type: ignore[no-untyped-def]
    """Store a lexicon (JSON, or a W3C PLS document with Content-Type application/pls+xml)."""
    record = _store().create(current_owner(), _lexicon_from_request())
    return _answer(summary(record), 201)


@bp.get("")
@operation(tag="lexicons", operation_id="listLexicons", responses={200: (LexiconList, "Your lexicons.")})
def list_lexicons():  # type: ignore[no-untyped-def]
    """The caller's lexicons, newest first (entries left out)."""
    data = [summary(r, entries=False) for r in _store().list(current_owner())]
    return jsonify({"object": "list", "data": data})


@bp.get("/<lexicon_id>")
@operation(
    tag="lexicons",
    operation_id="getLexicon",
    responses={200: (LexiconModel, "The lexicon; with ?format=pls a W3C PLS document instead.")},
    errors={404: "No such lexicon for this API key."},
)
def get_lexicon(lexicon_id: str):  # type: ignore[no-untyped-def]
    """A lexicon with its entries (``?format=pls``: as a W3C PLS document)."""
    record = _store().get(current_owner(), lexicon_id)
    if request.args.get("format") == "pls":
        return Response(record.lexicon.to_pls(), mimetype="application/pls+xml")
    return _answer(summary(record))


@bp.put("/<lexicon_id>")
@operation(
    tag="lexicons",
    operation_id="replaceLexicon",
    body=LexiconRequest,
    responses={200: (LexiconModel, "Replaced: a new version (older ones are kept for queued work).")},
    errors=_ERRORS | {404: "No such lexicon for this API key."},
)
def replace_lexicon(lexicon_id: str):  # type: ignore[no-untyped-def]
    """Replace a lexicon's entries (JSON or PLS); its version changes."""
    store = _store()
    owner = current_owner()
    store.get(owner, lexicon_id)  # a missing one is a 404 before the body is read
    return _answer(summary(store.replace(owner, lexicon_id, _lexicon_from_request())))


@bp.delete("/<lexicon_id>")
@operation(
    tag="lexicons",
    operation_id="deleteLexicon",
    responses={204: "Deleted."},
    errors={404: "No such lexicon for this API key."},
)
def delete_lexicon(lexicon_id: str):  # type: ignore[no-untyped-def]
    """Delete a lexicon and its kept versions."""
    _store().delete(current_owner(), lexicon_id)
    return Response(status=204)


def prepare_pronunciation(spec: JobSpec, owner: str, catalog: VoiceCatalog) -> JobSpec:
    """Resolve the job's lexicon to its current version and check its markup (4xx with line and column)."""
    svc = services()
    if spec.lexicon:
        spec = dataclasses.replace(spec, lexicon_version=svc.lexicons.get(owner, spec.lexicon).version)
    if spec.markup != "none":
        marked = parse_markup(spec.text, spec.markup, vocab=svc.lexicons.vocab.get())
        if not marked.text.strip():
            raise InvalidTextError("The marked-up text has no words to speak; put text inside <speak>.")
        for name in marked.voice_names:
            try:
                catalog.check_voice(name)
            except Exception as exc:
                getattr(exc, "details", {}).setdefault("field", "markup")
                raise
    return spec

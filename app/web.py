"""The player page: ``/`` serves ``web/index.html``, ``/web/<file>`` its script and style sheet.

Also ``GET /v1/voices``, the voice list the page's picker needs (names, language,
gender, a preview sentence per language), read from the assets without loading a model.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, abort, jsonify, send_from_directory

from app import services
from engine.catalog import OPENAI_VOICES
from engine.voices import LANGUAGE_NAMES

bp = Blueprint("web", __name__)

#: Directory of the page's files: ``SPOOL_WEB_DIR`` or ``web/`` next to the packages.
WEB_DIR = Path(os.environ.get("SPOOL_WEB_DIR") or Path(__file__).resolve().parents[1] / "web")

#: Files the page is made of; nothing else under the directory is served.
WEB_FILES: frozenset[str] = frozenset({"index.html", "player.js", "books.js", "style.css", "favicon.svg"})

#: Seconds browsers may cache the script and style sheet before revalidating.
ASSET_MAX_AGE = 300

#: Voice shown first in the picker.
DEFAULT_VOICE = "af_heart"

#: A short sentence per language for the voice preview button.
PREVIEW_TEXT: dict[str, str] = {
    "en-us": "Hello! This is how I sound when I read to you.",
    "en-gb": "Hello! This is how I sound when I read to you.",
    "es": "¡Hola! Así sueno cuando te leo en voz alta.",
    "fr-fr": "Bonjour ! Voici ma voix quand je vous fais la lecture.",
    "hi": "नमस्ते! जब मैं आपको पढ़कर सुनाती हूँ, तो ऐसी सुनाई देती हूँ।",
    "it": "Ciao! Ecco come suono quando ti leggo ad alta voce.",
    "ja": "こんにちは。これが私の声です。",
    "pt-br": "Olá! É assim que eu soo quando leio para você.",
    "cmn": "你好！这就是我朗读时的声音。",
}


def _send(name: str, max_age: int) -> Response:
    """One of the page's files, with a validator so repeat visits cost a 304."""
    if name not in WEB_FILES or not (WEB_DIR / name).is_file():
        abort(404)
    response = send_from_directory(WEB_DIR, name, max_age=max_age, conditional=True)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/")
def index() -> Response:
    """The player page."""
    response = _send("index.html", 0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/web/<path:name>")
def asset(name: str) -> Response:
    """The page's script, style sheet and icon."""
    return _send(name, ASSET_MAX_AGE)


@bp.get("/v1/voices")
def voices():  # type: ignore[no-untyped-def]
    """Every installed voice with its language, gender and a preview sentence."""
    catalog = services().catalog
    aliases: dict[str, list[str]] = {}
    for openai_name, kokoro_name in OPENAI_VOICES.items():
        aliases.setdefault(kokoro_name, []).append(openai_name)
    data = []
    for info in catalog.store.info():
        data.append(
            {
                "name": info.name,
                "display_name": info.display_name,
                "language": info.language,
                "language_name": info.language_name,
                "gender": info.gender,
                "engine": "kokoro",
                "openai_names": aliases.get(info.name, []),
                "preview_text": PREVIEW_TEXT.get(info.language, PREVIEW_TEXT["en-us"]),
            }
        )
    for name in catalog.piper_voices():
        _, language = catalog.check_voice(name)
        data.append(
            {
                "name": name,
                "display_name": name.split(":", 1)[1],
                "language": language,
                "language_name": LANGUAGE_NAMES.get(language, language),
                "gender": "unknown",
                "engine": "piper",
                "openai_names": [],
                "preview_text": PREVIEW_TEXT.get(language, PREVIEW_TEXT["en-us"]),
            }
        )
    installed = {entry["name"] for entry in data}
    openai_voices = {name: voice for name, voice in OPENAI_VOICES.items() if voice in installed}
    return jsonify({"object": "list", "default": DEFAULT_VOICE, "openai_voices": openai_voices, "data": data})

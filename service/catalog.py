"""What this deployment can render, known without loading a model: voices, languages, formats.

The web process validates requests against it so a bad voice or language is a
400 at submission instead of a failed job later. Voice names come from the
assets directory's voice files (read by ``engine.voices.VoiceStore``) and its
Piper models; the ONNX model itself is never opened here.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.audio import FORMATS, normalize_format
from engine.exceptions import UnknownVoiceError, UnsupportedLanguageError
from engine.voices import LANGUAGE_BY_PREFIX, LANGUAGE_NAMES, VoiceStore, check_speed

#: Canonical language codes (the ones Kokoro voices carry).
LANGUAGES: tuple[str, ...] = tuple(LANGUAGE_BY_PREFIX.values())

#: Other spellings accepted for a language, mapped to its canonical code.
LANGUAGE_ALIASES: dict[str, str] = {
    "en": "en-us",
    "en_us": "en-us",
    "american": "en-us",
    "en_gb": "en-gb",
    "en-uk": "en-gb",
    "fr": "fr-fr",
    "fr_fr": "fr-fr",
    "pt": "pt-br",
    "pt_br": "pt-br",
    "zh": "cmn",
    "zh-cn": "cmn",
    "es-es": "es",
    "it-it": "it",
    "ja-jp": "ja",
    "hi-in": "hi",
}

#: Prefix of Piper voice names (``piper:en_US-joe-medium``).
PIPER_PREFIX = "piper:"

__all__ = ["Catalog", "FORMATS", "LANGUAGES", "check_speed", "normalize_format", "normalize_language"]


def normalize_language(lang: str | None) -> str | None:
    """Return the canonical code of a language (``en`` -> ``en-us``), None for "the voice's own"."""
    if lang is None:
        return None
    if not isinstance(lang, str):
        raise UnsupportedLanguageError(
            f"Language must be a string such as 'en-us', got {type(lang).__name__}.", language=repr(lang)
        )
    code = lang.strip().lower()
    if not code:
        return None
    code = LANGUAGE_ALIASES.get(code, code)
    if code not in LANGUAGES:
        valid = ", ".join(f"{c} ({LANGUAGE_NAMES[c]})" for c in LANGUAGES)
        raise UnsupportedLanguageError(
            f"Unsupported language {lang!r}. Use one of: {valid}; or leave it out to use the voice's own.",
            language=lang,
            languages=list(LANGUAGES),
        )
    return code


class Catalog:
    """Voice names and Piper models of an assets directory, loaded once on first use."""

    def __init__(self, assets_dir: str | Path) -> None:
        self.assets_dir = Path(assets_dir).expanduser()
        self._store: VoiceStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> VoiceStore:
        """The Kokoro voice tables (about 28 MB for all 54 voices)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = VoiceStore.load(self.assets_dir / "voices")
        return self._store

    def piper_voices(self) -> list[str]:
        """Names of the installed Piper voices, as ``piper:<model>``."""
        directory = self.assets_dir / "piper"
        if not directory.is_dir():
            return []
        return sorted(
            PIPER_PREFIX + p.name[: -len(".onnx")]
            for p in directory.glob("*.onnx")
            if (directory / (p.name + ".json")).is_file()
        )

    def voice_names(self) -> list[str]:
        """Every voice a request may name (blends of Kokoro voices are accepted too)."""
        return [*self.store.names(), *self.piper_voices()]

    def check_voice(self, voice: object) -> tuple[str, str]:
        """Validate a voice name or blend; return (the voice as given, stripped; its language)."""
        if not isinstance(voice, str) or not voice.strip():
            raise UnknownVoiceError(
                "Voice must be a name such as 'af_heart' or a blend such as 'af_bella(2)+af_sky(1)'.",
                voice=repr(voice),
            )
        voice = voice.strip()
        if voice.startswith(PIPER_PREFIX):
            installed = self.piper_voices()
            if voice not in installed:
                raise UnknownVoiceError(
                    f"Unknown Piper voice {voice!r}; installed: {', '.join(installed) or 'none'}.",
                    voice=voice,
                )
            locale = voice[len(PIPER_PREFIX) :].split("-", 1)[0].replace("_", "-").lower()
            return voice, LANGUAGE_ALIASES.get(locale, locale)
        return voice, self.store.resolve(voice).lang

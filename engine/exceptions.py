"""Every error Spool raises, under one base class.

Messages say what is wrong and how to fix it, because they reach users
verbatim (CLI output, HTTP error bodies).
"""

from __future__ import annotations


class SpoolError(Exception):
    """Base of all Spool errors; ``code`` is a stable machine-readable name."""

    code = "spool_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-friendly description of the error."""
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class EngineError(SpoolError):
    """A failure inside the speech engine."""

    code = "engine_error"


class AssetError(EngineError):
    """A model, vocabulary or voice file is missing or corrupt."""

    code = "asset_error"


class UnknownVoiceError(EngineError):
    """The voice name or blend is not one the engine has."""

    code = "unknown_voice"


class InvalidSpeedError(EngineError):
    """The speed is outside the supported range."""

    code = "invalid_speed"


class UnsupportedLanguageError(EngineError):
    """The language code is not one Kokoro has voices for."""

    code = "unsupported_language"


class InvalidTextError(EngineError):
    """The text is empty or cannot be spoken."""

    code = "invalid_text"


class UnsupportedFormatError(EngineError):
    """The audio format is not one Spool can encode."""

    code = "unsupported_format"


class BookError(EngineError):
    """A book file is malformed, encrypted, empty or too large."""

    code = "invalid_book"


class InvalidVoiceSpecError(UnknownVoiceError):
    """A voice blend is malformed (bad syntax, or a zero, negative or non-numeric weight)."""

    code = "invalid_voice_spec"


class LexiconError(EngineError):
    """A pronunciation lexicon (JSON or W3C PLS) is malformed, too large, or has a bad entry."""

    code = "invalid_lexicon"


class InvalidPhonemesError(LexiconError):
    """IPA phonemes hold symbols Kokoro has no token for."""

    code = "invalid_phonemes"


class MarkupError(EngineError):
    """Inline markup (SSML or ``[word](/ipa/)`` links) is malformed; details give the line and column."""

    code = "invalid_markup"

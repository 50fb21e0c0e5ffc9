"""The languages Spool speaks: one table of codes, names, voice letters, espeak voices and other spellings.

Everything that reads or checks a language (the G2P, voice names, the web API, books) uses this table,
so every entry point accepts the same spellings.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.exceptions import UnsupportedLanguageError


@dataclass(frozen=True)
class Language:
    """One language: canonical code, English name, Kokoro voice-name letter, espeak voice, other spellings."""

    code: str
    name: str
    letter: str
    espeak: str
    aliases: tuple[str, ...] = ()


#: The languages Kokoro v1.0 has voices for.
TABLE: tuple[Language, ...] = (
    Language("en-us", "English (US)", "a", "en-us", ("en", "american")),
    Language("en-gb", "English (UK)", "b", "en-gb", ("en-uk", "british")),
    Language("es", "Spanish", "e", "es", ("es-es",)),
    Language("fr-fr", "French", "f", "fr-fr", ("fr",)),
    Language("hi", "Hindi", "h", "hi", ("hi-in",)),
    Language("it", "Italian", "i", "it", ("it-it",)),
    Language("ja", "Japanese", "j", "ja", ("ja-jp",)),
    Language("pt-br", "Portuguese (Brazil)", "p", "pt-br", ("pt",)),
    Language("cmn", "Mandarin Chinese", "z", "cmn", ("zh", "zh-cn", "cmn-cn")),
)

#: Canonical codes, in table order.
LANGUAGES: tuple[str, ...] = tuple(lang.code for lang in TABLE)

#: English names by code, for listings.
LANGUAGE_NAMES: dict[str, str] = {lang.code: lang.name for lang in TABLE}

#: Language of a Kokoro voice, by the first letter of its name (``af_heart`` -> ``en-us``).
LANGUAGE_BY_PREFIX: dict[str, str] = {lang.letter: lang.code for lang in TABLE}

#: The espeak-ng voice used for each language.
ESPEAK_LANGUAGE: dict[str, str] = {lang.code: lang.espeak for lang in TABLE}

#: Other spellings accepted for each language (lower-cased, ``_`` read as ``-``); voice letters count too.
LANGUAGE_ALIASES: dict[str, str] = {
    alias: lang.code for lang in TABLE for alias in (*lang.aliases, lang.letter)
}


def normalize_lang(lang: str | None, default: str = "en-us") -> str:
    """Return the canonical language code (``en`` -> ``en-us``, ``zh`` -> ``cmn``) or raise."""
    if lang is None or (isinstance(lang, str) and not lang.strip()):
        return default
    if not isinstance(lang, str):
        raise UnsupportedLanguageError(
            f"Language must be a string such as 'en-us', got {type(lang).__name__}.", language=repr(lang)
        )
    code = lang.strip().lower().replace("_", "-")
    code = LANGUAGE_ALIASES.get(code, code)
    if code not in LANGUAGES:
        valid = ", ".join(f"{c} ({LANGUAGE_NAMES[c]})" for c in LANGUAGES)
        raise UnsupportedLanguageError(
            f"Unsupported language {lang!r}. Use one of: {valid} (also accepted: en, fr, pt, zh); "
            "or leave it out to use the voice's own.",
            language=lang,
            languages=list(LANGUAGES),
        )
    return code


def locale_language(locale: str) -> str:
    """The language of a locale such as ``en_US`` (Piper voice names), canonical when it is one of ours."""
    code = locale.replace("_", "-").lower()
    return LANGUAGE_ALIASES.get(code, code)


def check_language(lang: object) -> str | None:
    """A request's language, canonical; None (absent or blank) means the voice's own."""
    if lang is None or (isinstance(lang, str) and not lang.strip()):
        return None
    return normalize_lang(lang)  # type: ignore[arg-type]  (a non-string is refused there)

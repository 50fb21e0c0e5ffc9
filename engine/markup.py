"""Inline markup, off unless a request asks for it: a small SSML subset, or ``[word](/ipa/)`` links.

:func:`parse_markup` reads a text in mode ``"ssml"`` or ``"ipa-links"`` into :class:`Markup`: the text
with every markup character blanked (same length, so every offset is an offset of the original),
plus what the markup asks for: pronunciation overrides over spans of the content, breaks at
positions, voice spans and sentence or paragraph cuts. :func:`markup_segments` splits that into
ordinary :class:`engine.segment.Segment` objects: their spans index the original text and cover
all of its content (markup excluded), their ``spoken`` has the overrides in it.

SSML elements (anything else is a :class:`MarkupError` with its line and column):

``<speak>`` root (added when missing); ``<break time="500ms|2s" strength="...">`` silence;
``<phoneme alphabet="ipa" ph="...">`` IPA for its words; ``<sub alias="...">`` says the alias;
``<say-as interpret-as="characters|spell-out|cardinal|number|ordinal|date|telephone" format="mdy">``;
``<p>`` and ``<s>`` end a paragraph or sentence; ``<emphasis>`` is read as plain text (Kokoro has no
emphasis control); ``<voice name="bm_george">`` speaks its content with another voice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from xml.parsers import expat

from engine.exceptions import InvalidPhonemesError, MarkupError
from engine.lexicon import check_ipa, override

__all__ = [
    "MARKUP_MODES",
    "MAX_BREAK_SECONDS",
    "Markup",
    "markup_segments",
    "parse_markup",
]

#: Accepted values of a request's ``markup`` field.
MARKUP_MODES = ("none", "ssml", "ipa-links")
#: Longest single ``<break>``, in seconds.
MAX_BREAK_SECONDS = 10.0
#: Seconds of silence for each SSML break strength.
BREAK_STRENGTHS = {"none": 0.0, "x-weak": 0.1, "weak": 0.2, "medium": 0.4, "strong": 0.7, "x-strong": 1.2}
#: ``interpret-as`` values of ``<say-as>`` Spool reads.
SAY_AS = ("characters", "spell-out", "cardinal", "number", "ordinal", "date", "telephone")
#: Every SSML element Spool reads, with the attributes each accepts.
ELEMENTS: dict[str, frozenset[str]] = {
    "speak": frozenset({"version", "xmlns", "xml:lang", "xmlns:xsi", "xsi:schemaLocation"}),
    "break": frozenset({"time", "strength"}),
    "phoneme": frozenset({"alphabet", "ph"}),
    "sub": frozenset({"alias"}),
    "say-as": frozenset({"interpret-as", "format", "detail"}),
    "p": frozenset(),
    "s": frozenset(),
    "emphasis": frozenset({"level"}),
    "voice": frozenset({"name"}),
}
#: Elements whose content is replaced by what they say (they cannot nest).
_OVERRIDES = ("phoneme", "sub", "say-as")

_TIME = re.compile(r"\s*(\d{1,6}(?:\.\d{1,3})?)\s*(ms|s)\s*$")
_LINK = re.compile(r"\[([^\[\]\n]{1,200})\]\(/([^()/\n]{1,400})/\)")
_LINK_START = re.compile(r"\[[^\[\]\n]{0,200}\]\(")
_MONTHS = ("January February March April May June July August September October November December").split()


@dataclass(frozen=True)
class Override:
    """Content ``[start, end)`` said another way: ``kind`` phoneme (``value`` IPA), sub (alias), say-as."""

    start: int
    end: int
    kind: str
    value: str
    format: str = ""


@dataclass
class Markup:
    """A text with its markup read: ``text`` is the original with markup blanked (same length)."""

    text: str
    overrides: list[Override] = field(default_factory=list)
    breaks: list[tuple[int, float]] = field(default_factory=list)
    voices: list[tuple[int, int, str]] = field(default_factory=list)
    cuts: list[tuple[int, str]] = field(default_factory=list)  # (position, "sentence" | "paragraph")

    @property
    def voice_names(self) -> list[str]:
        """Every voice the markup switches to, once each."""
        return list(dict.fromkeys(v for _, _, v in self.voices))


def _line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of offset ``pos`` in ``text``."""
    pos = max(0, min(pos, len(text)))
    return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _error(text: str, pos: int, what: str, **details: object) -> MarkupError:
    """A MarkupError saying where (line, column) and what is wrong."""
    line, column = _line_col(text, pos)
    return MarkupError(
        f"Markup error at line {line}, column {column}: {what}", line=line, column=column, **details
    )


def parse_markup(text: str, mode: str, *, vocab: Iterable[str] | None = None) -> Markup:
    """Read ``text``'s markup (``mode`` one of :data:`MARKUP_MODES`); IPA is checked when ``vocab`` is given."""
    if mode not in MARKUP_MODES:
        raise MarkupError(f"markup must be one of {', '.join(MARKUP_MODES)}, not {mode!r}.")
    known = set(vocab) if vocab is not None else None
    if mode == "none":
        return Markup(text)
    if mode == "ipa-links":
        return _parse_links(text, known)
    return _SSMLReader(text, known).read()


def _check(text: str, pos: int, ipa: str, known: set[str] | None, *, inline: bool = False) -> str:
    """IPA checked against the vocabulary (when known); a bad symbol is a MarkupError at ``pos``.

    ``inline``: the IPA starts at ``pos`` in the text, so the error points at the first bad symbol.
    """
    if known is None:
        return ipa.strip()
    try:
        return check_ipa(ipa, known)
    except InvalidPhonemesError as exc:
        bad = exc.details.get("bad_symbols") or []
        at = pos + bad[0]["position"] if inline and bad else pos
        raise _error(text, at, exc.message, bad_symbols=bad) from None


def _parse_links(text: str, known: set[str] | None) -> Markup:
    """``[word](/ipa/)`` links: the word stays, the rest of the link is blanked."""
    masked = list(text)
    overrides: list[Override] = []
    at = 0
    for m in _LINK.finditer(text):
        stray = _LINK_START.search(text, at, m.start())
        if stray:
            raise _error(text, stray.start(), "a '[word](' link is not closed as '[word](/ipa/)'.")
        ipa = _check(text, m.start(2), m.group(2), known, inline=True)
        if not m.group(1).strip():
            raise _error(text, m.start(), "a '[word](/ipa/)' link needs a word inside the brackets.")
        for i in (*range(m.start(), m.start(1)), *range(m.end(1), m.end())):
            masked[i] = " "
        overrides.append(Override(m.start(1), m.end(1), "phoneme", ipa))
        at = m.end()
    stray = _LINK_START.search(text, at)
    if stray:
        raise _error(text, stray.start(), "a '[word](' link is not closed as '[word](/ipa/)'.")
    return Markup("".join(masked), overrides)


class _SSMLReader:
    """One pass of expat over the text; offsets are kept in characters of the original."""

    def __init__(self, text: str, known: set[str] | None) -> None:
        self.original = text
        head = text.lstrip()
        self.wrapped = not (head.startswith("<speak") or head.startswith("<?xml"))
        self.shift = len("<speak>") if self.wrapped else 0
        self.source = f"<speak>{text}</speak>" if self.wrapped else text
        self.raw = self.source.encode("utf-8")
        self.known = known
        self.masked = [" "] * len(text)
        self.markup = Markup("")
        self.stack: list[tuple[str, int, dict[str, str]]] = []
        self._byte = 0
        self._char = 0

    # -- offsets --------------------------------------------------------------------------------

    def _pos(self, byte_index: int) -> int:
        """Character offset in the original text of a byte offset in the parsed source (monotonic)."""
        if byte_index < self._byte:  # never happens with expat's increasing indexes; stay correct anyway
            self._byte = self._char = 0
        self._char += len(self.raw[self._byte : byte_index].decode("utf-8", "replace"))
        self._byte = byte_index
        return max(0, min(len(self.original), self._char - self.shift))

    def _here(self) -> int:
        return self._pos(self.parser.CurrentByteIndex)

    def _fail(self, pos: int, what: str, **details: object) -> MarkupError:
        return _error(self.original, pos, what, **details)

    # -- expat handlers -------------------------------------------------------------------------

    def read(self) -> Markup:
        parser = expat.ParserCreate()
        self.parser = parser
        parser.buffer_text = False
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.data
        parser.StartDoctypeDeclHandler = self.doctype
        parser.EntityDeclHandler = self.doctype
        parser.ProcessingInstructionHandler = None
        try:
            parser.Parse(self.raw, True)
        except expat.ExpatError as exc:
            pos = self._pos(max(parser.ErrorByteIndex, 0))
            if pos > 0 and self.original[pos - 1 : pos] == "&":
                pos -= 1  # expat points past a bare ampersand
            reason = expat.errors.messages.get(exc.code, str(exc)) if hasattr(exc, "code") else str(exc)
            hint = " (write & as &amp; and < as &lt;)" if "token" in reason or "entity" in reason else ""
            raise self._fail(pos, f"the SSML is not well-formed: {reason}{hint}.") from None
        self.markup.text = "".join(self.masked)
        return self.markup

    def doctype(self, *_args: object) -> None:
        raise self._fail(self._here(), "DOCTYPE and entity declarations are not accepted in SSML.")

    def data(self, data: str) -> None:
        pos = self._here()
        if not self.stack:
            return
        end = min(len(self.masked), pos + len(data))
        self.masked[pos:end] = list(data[: end - pos])

    def start(self, name: str, attrs: dict[str, str]) -> None:
        pos = self._here()
        if name not in ELEMENTS:
            raise self._fail(pos, f"<{name}> is not supported; use {', '.join(f'<{e}>' for e in ELEMENTS)}.")
        unknown = sorted(set(attrs) - ELEMENTS[name])
        if unknown:
            allowed = ", ".join(sorted(ELEMENTS[name])) or "none"
            raise self._fail(pos, f"<{name}> has no attribute {', '.join(unknown)} (allowed: {allowed}).")
        if name == "speak" and self.stack:
            raise self._fail(pos, "<speak> is the root element only.")
        if name != "speak" and not self.stack:
            raise self._fail(pos, f"<{name}> must be inside <speak>.")
        if name in _OVERRIDES and any(e in _OVERRIDES for e, _, _ in self.stack):
            raise self._fail(
                pos, f"<{name}> cannot be inside <{self.stack[-1][0]}>; they replace their content."
            )
        if name == "phoneme":
            if attrs.get("alphabet", "ipa").lower() != "ipa":
                raise self._fail(
                    pos, f'<phoneme> alphabet {attrs["alphabet"]!r} is not supported; use alphabet="ipa".'
                )
            if "ph" not in attrs:
                raise self._fail(pos, '<phoneme> needs ph="..." (IPA).')
            attrs = {**attrs, "ph": _check(self.original, pos, attrs["ph"], self.known)}
        elif name == "sub" and not attrs.get("alias", "").strip():
            raise self._fail(pos, '<sub> needs alias="..." (the words to say).')
        elif name == "say-as" and attrs.get("interpret-as") not in SAY_AS:
            raise self._fail(pos, f"<say-as> interpret-as must be one of {', '.join(SAY_AS)}.")
        elif name == "voice" and not attrs.get("name", "").strip():
            raise self._fail(pos, '<voice> needs name="..." (a Spool voice such as bm_george).')
        elif name == "break":
            self.markup.breaks.append((pos, self._break_seconds(pos, attrs)))
        elif name in ("p", "s"):
            self.markup.cuts.append((pos, "paragraph" if name == "p" else "sentence"))
        self.stack.append((name, pos, attrs))

    def end(self, name: str) -> None:
        pos = self._here()
        _, start, attrs = self.stack.pop()
        if name in _OVERRIDES:
            if not "".join(self.masked[start:pos]).strip():
                raise self._fail(start, f"<{name}> needs content (the words it applies to).")
            kind = "say-as" if name == "say-as" else name
            value = {"phoneme": attrs.get("ph", ""), "sub": attrs.get("alias", "")}.get(
                name, attrs.get("interpret-as", "")
            )
            self.markup.overrides.append(Override(start, pos, kind, value, attrs.get("format", "")))
        elif name == "voice":
            self.markup.voices.append((start, pos, attrs["name"].strip()))
        elif name in ("p", "s"):
            self.markup.cuts.append((pos, "paragraph" if name == "p" else "sentence"))

    def _break_seconds(self, pos: int, attrs: dict[str, str]) -> float:
        if "time" in attrs:
            m = _TIME.match(attrs["time"])
            if not m:
                raise self._fail(pos, f'<break time={attrs["time"]!r}> must be like "500ms" or "1.5s".')
            seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        else:
            strength = attrs.get("strength", "medium")
            if strength not in BREAK_STRENGTHS:
                raise self._fail(pos, f"<break strength> must be one of {', '.join(BREAK_STRENGTHS)}.")
            seconds = BREAK_STRENGTHS[strength]
        if seconds > MAX_BREAK_SECONDS:
            raise self._fail(pos, f"a <break> is at most {MAX_BREAK_SECONDS:g} s, not {seconds:g} s.")
        return seconds


# --------------------------------------------------------------------------- segments


def _natural_boundary(text: str) -> str:
    """The pause a piece ending here would get: after . ! ? a sentence, after , ; : a clause, else none."""
    tail = text.rstrip().rstrip("\"'”’)]»")
    if tail[-1:] in (".", "!", "?", "…", "。", "！", "？"):
        return "sentence"
    if tail[-1:] in (",", ";", ":", "—", "–", "、", "，"):
        return "clause"
    return "word"


def say_as(kind: str, content: str, fmt: str, lang: str) -> str:
    """Words for ``<say-as>`` content (English words for numbers; other languages read digits themselves)."""
    from engine.normalize import _cardinal, _digits, _ordinal, is_british, is_english

    words = " ".join(content.split())
    english = is_english(lang)
    digits = re.sub(r"[^\d]", "", words)
    if kind in ("characters", "spell-out"):
        return " ".join(ch.upper() if ch.isalpha() else ch for ch in words if not ch.isspace())
    if kind == "telephone":
        return _digits(digits) if english and digits else " ".join(digits or words)
    if kind in ("cardinal", "number", "ordinal") and english:
        m = re.fullmatch(r"-?\d[\d,]*", words)
        if m:
            n = int(words.replace(",", ""))
            return _ordinal(n, is_british(lang)) if kind == "ordinal" else _cardinal(n, is_british(lang))
    if kind == "date" and english:
        parts = [int(p) for p in re.findall(r"\d+", words)]
        order = (fmt or "ymd" if len(parts) == 3 and parts[0] > 31 else fmt or "mdy").lower()
        if len(parts) == len(order) and set(order) <= set("ymd"):
            got = dict(zip(order, parts, strict=True))
            month, day, year = got.get("m"), got.get("d"), got.get("y")
            if month and 1 <= month <= 12:
                text = _MONTHS[month - 1] + (f" {_ordinal(day)}" if day else "")
                return text + (f", {year}" if year and day else f" {year}" if year else "")
    return words


def _spoken_override(o: Override, content: str, lang: str, spoken: Callable[[str], str]) -> str:
    """What an override says: an IPA marker, the alias's words or the say-as words."""
    if o.kind == "phoneme":
        return override(" ".join(content.split()), o.value)
    if o.kind == "sub":
        return spoken(o.value)
    return spoken(say_as(o.value, content, o.format, lang))


def markup_segments(
    markup: Markup,
    *,
    lang: str,
    split: Callable[..., list],
    normalize_text: Callable[[str], str],
    first_max_phonemes: int,
    max_phonemes: int,
) -> list:
    """Segments of a marked-up text: cut at breaks, voice changes and ``<p>``/``<s>``, overrides spoken.

    ``split`` is :func:`engine.segment.split_text`; ``normalize_text`` gives a piece's spoken form.
    """
    from engine.segment import Segment, has_speech

    text = markup.text
    n = len(text)
    pauses: dict[int, float] = {}
    for at, seconds in markup.breaks:
        pauses[at] = pauses.get(at, 0.0) + seconds
    kinds: dict[int, str] = {}
    for at, kind in markup.cuts:
        if kinds.get(at) != "paragraph":
            kinds[at] = kind
    points = set(pauses) | set(kinds)
    for start, end, _ in markup.voices:
        points.update((start, end))
    points = sorted(p for p in points if 0 < p < n)
    bounds = [0, *points, n]
    overrides = sorted(markup.overrides, key=lambda o: o.start)

    segments: list[Segment] = []
    lead_pause = pauses.get(0, 0.0)  # breaks before any speech: silence before the first segment
    for bs, be in zip(bounds, bounds[1:], strict=False):
        piece = text[bs:be]
        if piece.strip():
            voices = [(e - s, v) for s, e, v in markup.voices if s <= bs and be <= e]
            voice = min(voices)[1] if voices else None
            found = split(
                _glued(piece, bs, overrides),
                lang=lang,
                first_max_phonemes=first_max_phonemes if not segments else max_phonemes,
                max_phonemes=max_phonemes,
            )
            for seg in found:
                a, b = seg.start + bs, seg.end + bs
                lead = not segments or segments[-1].boundary == "word"
                segments.append(
                    Segment(len(segments), a, b, text[a:b], seg.spoken, seg.boundary, lead, voice=voice)
                )
            # The last piece of a block ends where the markup cut it: a <p>/<s> says how, else its text.
            segments[-1] = replace(segments[-1], boundary=kinds.get(be) or _natural_boundary(piece))
        if be in pauses and be < n:
            if segments:
                segments[-1] = replace(segments[-1], pause_after=segments[-1].pause_after + pauses[be])
            else:
                lead_pause += pauses[be]
    if not segments:
        return split(text, lang=lang, first_max_phonemes=first_max_phonemes, max_phonemes=max_phonemes)
    last = segments[-1]
    segments[-1] = replace(last, boundary="end", pause_after=last.pause_after + pauses.get(n, 0.0))
    if lead_pause:
        segments[0] = replace(segments[0], pause_before=lead_pause)
    if overrides:
        segments = [_with_overrides(s, text, overrides, lang, normalize_text) for s in segments]
    return [s if has_speech(s.spoken) or not s.spoken else replace(s, spoken="") for s in segments]


def _glued(piece: str, offset: int, overrides: list[Override]) -> str:
    """The piece with the spaces between an override's words made underscores: no segment cuts there."""
    chars: list[str] | None = None
    for o in overrides:
        lo, hi = max(o.start, offset) - offset, min(o.end, offset + len(piece)) - offset
        if lo >= hi:
            continue
        content = piece[lo:hi]
        first = lo + len(content) - len(content.lstrip())
        last = lo + len(content.rstrip())
        for i in range(first, last):
            if piece[i].isspace():
                chars = chars if chars is not None else list(piece)
                chars[i] = "_"
    return piece if chars is None else "".join(chars)


def _with_overrides(
    seg, text: str, overrides: list[Override], lang: str, normalize_text: Callable[[str], str]
):
    """The segment with its spoken text rebuilt around the overrides that start in it."""
    inside = [o for o in overrides if o.start < seg.end and seg.start < o.end]
    if not inside:
        return seg
    parts: list[str] = []
    at = seg.start
    for o in inside:
        if o.start >= seg.start:
            parts.append(normalize_text(text[at : o.start]))
            parts.append(_spoken_override(o, text[o.start : o.end], lang, normalize_text))
        # An override begun in an earlier segment was said there: skip the rest of its content.
        at = max(at, min(o.end, seg.end))
    parts.append(normalize_text(text[at : seg.end]))
    return replace(seg, spoken=" ".join(" ".join(p for p in parts if p.strip()).split()))

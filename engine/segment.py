"""Text to segments: paragraphs, sentences and clauses sized for Kokoro, with exact spans.

A segment is the unit of synthesis: one model call, one audio chunk. Segments are
kept well under the model's 510-token limit because memory and time per audio
second grow with segment length, and the first few are kept short so the first
audio arrives quickly (budgets grow 40, 80, 160, 180 estimated phonemes by default).

The coverage invariant: segments are in order and do not overlap, each
``segment.text == text[segment.start:segment.end]``, no span starts or ends with
whitespace, and every non-whitespace character of the input lies in exactly one
span. Text with nothing to say (emoji, stray symbols) is attached to a neighbour.
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache

from engine.exceptions import EngineError, InvalidTextError
from engine.normalize import bound_spans, normalize

__all__ = [
    "BOUNDARIES",
    "DEFAULT_BUDGET_GROWTH",
    "DEFAULT_FIRST_MAX_PHONEMES",
    "DEFAULT_MAX_PHONEMES",
    "DEFAULT_MIN_PHONEMES",
    "MIN_BUDGET_PHONEMES",
    "MODEL_MAX_PHONEMES",
    "STREAM_BUDGET_GROWTH",
    "Segment",
    "estimate_phonemes",
    "has_speech",
    "renumber",
    "split_segment",
    "split_text",
]

#: Hard limit of the Kokoro model: phoneme tokens per call (511 fails inside the encoder).
MODEL_MAX_PHONEMES = 510
#: Default budget of estimated phonemes per segment (about 30 words, 12 s of audio, 500 MB peak).
DEFAULT_MAX_PHONEMES = 180
#: Default budget of the first segment (a 4-8 word clause) so the first audio arrives fast.
DEFAULT_FIRST_MAX_PHONEMES = 40
#: Segments below this many estimated phonemes are merged with a neighbour when a split allows it.
DEFAULT_MIN_PHONEMES = 12
#: Each following segment's budget is this many times the previous one's until it reaches the max,
#: so each segment renders while the one before it plays (real-time factor about 2 on 2 CPU cores).
DEFAULT_BUDGET_GROWTH = 2.0
#: Budget growth of a job's stream (``Engine.segments``): slower than the default, so each next
#: segment renders on one thread while the audio before it plays (no underrun; issue 15).
STREAM_BUDGET_GROWTH = 1.5
#: The smallest budget accepted: below it single long words could not fit.
MIN_BUDGET_PHONEMES = 24

#: The pause classes a segment can end with, shortest first. "word": cut inside a phrase, at a plain
#: word gap (only where a clause did not fit its budget), so the next segment carries straight on.
BOUNDARIES = ("word", "clause", "sentence", "paragraph", "end")


@dataclass(frozen=True)
class Segment:
    """One span of the input text, its speakable form, and the kind of pause after it.

    ``trim_lead`` is True when nothing should be heard before this segment's speech: it opens the
    text, or it continues a phrase the previous segment cut at a word.
    """

    index: int
    start: int
    end: int
    text: str
    spoken: str
    boundary: str
    trim_lead: bool = False
    #: Inline markup only: the voice that speaks this segment (None: the request's), and seconds of
    #: silence from ``<break>`` before and after it (on top of the boundary's pause).
    voice: str | None = None
    pause_before: float = 0.0
    pause_after: float = 0.0

    def __post_init__(self) -> None:
        if self.boundary not in BOUNDARIES:
            raise EngineError(
                f"Segment boundary {self.boundary!r} is not one of {', '.join(BOUNDARIES)}; use one of those."
            )
        if not 0 <= self.start <= self.end or self.end - self.start != len(self.text):
            raise EngineError(
                f"Segment span [{self.start}, {self.end}) does not match its text "
                f"of length {len(self.text)}; "
                "build segments with split_text or split_segment."
            )


# --------------------------------------------------------------------------- estimates


def has_speech(spoken: str) -> bool:
    """Return True when ``spoken`` has a letter or digit, i.e. something to synthesise."""
    return any(c.isalnum() for c in spoken)


_PUNCT = -1  # sentinel cost: punctuation, counted per run


@lru_cache(maxsize=4096)
def _char_cost(ch: str) -> int:
    """Estimated phonemes of one character, in tenths; ``_PUNCT`` for punctuation and symbols."""
    code = ord(ch)
    if ch.isascii():
        if ch.isalpha():
            return 12
        if ch.isdigit():
            return 70
        return 0 if ch.isspace() else _PUNCT
    if 0x0900 <= code <= 0x097F:  # Devanagari: letters and vowel signs are both phonemes
        return 15
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
        return 30  # kana: a mora, one or two phonemes
    if (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x3FFFF
    ):
        return 60  # ideograph: a syllable with tone, or a multi-mora reading
    if 0xAC00 <= code <= 0xD7AF:
        return 40
    cat = unicodedata.category(ch)
    if cat == "Nd":
        return 70
    if cat[0] == "L":
        # Latin with accents reads like Latin; other scripts may be spelled out letter by letter.
        return 12 if "LATIN" in unicodedata.name(ch, "") else 80
    if cat[0] == "N":
        return 70
    if cat[0] == "M":
        return 5
    if cat[0] in "PS":
        return _PUNCT
    return 0


def estimate_phonemes(spoken: str) -> int:
    """Return a slightly high estimate of the Kokoro phoneme tokens of normalised text.

    English letters map to phonemes about one to one (stress marks make up for
    silent letters), short all-capital words are spelled out, digits expand to
    words, other scripts cost more per character. Each gap between words counts
    one, a run of punctuation at most three. The engine re-checks after real G2P.
    """
    tokens = spoken.split()
    tenths = 10 * max(0, len(tokens) - 1)
    for token in tokens:
        letters = token.strip(".,;:!?'\"()…—-")
        if 2 <= len(letters) <= 6 and letters.isascii() and letters.isalpha() and letters.isupper():
            tenths += 25 * len(letters) + 10 * min(3, len(token) - len(letters))
            continue
        run = 0
        for ch in token:
            cost = _char_cost(ch)
            if cost == _PUNCT:
                run += 1
                continue
            if run:
                tenths += 10 * min(run, 3)
                run = 0
            tenths += cost
        tenths += 10 * min(run, 3)
    return math.ceil(tenths / 10)


# --------------------------------------------------------------------------- sentences

_TERMINATORS = ".!?…‼⁇⁈⁉。！？｡।॥"
# Full stops of scripts without spaces: a sentence ends even when text follows directly.
_TIGHT_TERMINATORS = frozenset("。！？｡")
_CLOSERS = "\"'”’»)]}」』）〕】›"
_TERMINATOR_RUN = re.compile("[" + re.escape(_TERMINATORS) + "][" + re.escape(_TERMINATORS + _CLOSERS) + "]*")
_WS_RUN = re.compile(r"\s+")
_NONSPACE = re.compile(r"\S+")
_BULLET = re.compile(r"[-*•–—·]\s|\d{1,3}[.)]\s|[A-Za-z][.)]\s")
_PARAGRAPH_CHARS = frozenset("\x0c\x1c\x1d\x1e\u2029")

# Abbreviations whose dot never ends a sentence (a title before a name, "e.g.").
_NEVER_FINAL = frozenset(
    "mr mrs ms mx dr prof rev fr gen col capt lt sgt gov sen rep pres hon st mt ft vs e.g i.e cf approx "
    "viz a.k.a incl excl esp".split()
)
# Abbreviations that are not a sentence end when a number follows ("No. 5", "Jan. 3").
_NUMBER_PREFIXES = frozenset(
    "no nos p pp fig figs vol vols ch chap art sec op ca c v tel ext ed eq ref jan feb mar apr jun jul aug "
    "sep sept oct nov dec approx".split()
)
# A single capital before a dot is an initial ("J. K. Rowling") unless it numbers a chapter.
_ROMAN_HOLDERS = frozenset("chapter part book volume act scene section appendix canto".split())
_OPENERS = "\"'“‘«([{¿¡「『（〔【‹"


def _line_breaks(run: str) -> int:
    """Count line breaks in a whitespace run (CRLF counts once)."""
    return sum(
        1
        for line in run.splitlines(keepends=True)
        if line and line != line.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    )


def _is_paragraph_gap(gap: str) -> bool:
    """Return True when a whitespace run separates paragraphs (a blank line, a page or paragraph mark)."""
    return _line_breaks(gap) >= 2 or any(c in _PARAGRAPH_CHARS for c in gap)


def _word_before(text: str, pos: int) -> str:
    """Return the non-space run ending at ``pos``, without opening quotes and brackets."""
    start = pos
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:pos].lstrip(_OPENERS)


def _ends_sentence(text: str, m: re.Match[str], inside: bytearray) -> bool:
    """Decide whether the terminator run ``m`` ends a sentence."""
    start, end = m.span()
    run = m.group(0)
    if any(c in _TIGHT_TERMINATORS for c in run):
        return True
    if end < len(text) and not text[end].isspace():
        return False  # "3.14", "e.g.", "example.com", "U.S.A"
    if inside[end]:
        return False  # inside "Dr. Smith", "No. 5", "10 a.m. tomorrow"
    nxt_match = _NONSPACE.search(text, end)
    if nxt_match is None:
        return True
    nxt = nxt_match.group(0).lstrip(_OPENERS) or nxt_match.group(0)
    if nxt[0].islower():
        return False  # "Wait... what", '"Really?" she asked'
    if run.rstrip(_CLOSERS) != ".":
        return True
    raw_word = _word_before(text, start)
    word = raw_word.lower()
    if word in _NEVER_FINAL:
        return False
    if nxt[0].isdigit() and word in _NUMBER_PREFIXES:
        return False
    if len(raw_word) == 1 and raw_word.isupper() and nxt[0].isupper():
        # An initial ("J. K. Rowling") unless it numbers something ("Chapter I. The Pool").
        # Walk back over the spaces in place: slicing the text up to here per initial was quadratic.
        prior_end = start - 1
        while prior_end > 0 and text[prior_end - 1].isspace():
            prior_end -= 1
        prior = _word_before(text, prior_end).lower()
        return prior in _ROMAN_HOLDERS
    return True


def _line_ends_sentence(text: str, run_start: int, run_end: int, line_start: int) -> bool:
    """Decide whether a single line break ends a sentence (a heading, a list item, a short line)."""
    prev_line = text[line_start:run_start].strip()
    if not prev_line or run_end >= len(text):
        return False
    if prev_line[-1] in ",;:-–—(&/":
        return False  # the sentence goes on
    if _BULLET.match(text, run_end):
        return True
    first = text[run_end]
    if first.islower():
        return False  # hard-wrapped prose
    return len(prev_line) <= 50


def _sentences(text: str, inside: bytearray) -> list[tuple[int, int, str]]:
    """Split text into (start, end, boundary) sentences; boundary is "sentence" or "paragraph"."""
    cuts: set[int] = set()
    for m in _TERMINATOR_RUN.finditer(text):
        if _ends_sentence(text, m, inside):
            cuts.add(m.end())
    # Start of the current line: one past the last "\n" or "\r" of an earlier whitespace run (both
    # are whitespace, so no other place holds one). Tracked here: an rfind back from every
    # line break rescanned the whole text before it when one of the two never occurs (quadratic).
    line_start = 0
    for m in _WS_RUN.finditer(text):
        gap = m.group(0)
        breaks = _line_breaks(gap)
        if _is_paragraph_gap(gap) or (
            breaks == 1 and _line_ends_sentence(text, m.start(), m.end(), line_start)
        ):
            cuts.add(m.start())
        last_break = max(gap.rfind("\n"), gap.rfind("\r"))
        if last_break != -1:
            line_start = m.start() + last_break + 1
    cuts.add(len(text))
    sentences: list[tuple[int, int, str]] = []
    pos = 0
    for cut in sorted(cuts):
        start, end = pos, cut
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        pos = cut
        if start < end:
            sentences.append((start, end, "sentence"))
    result = []
    for i, (start, end, _) in enumerate(sentences):
        if i + 1 < len(sentences) and _is_paragraph_gap(text[end : sentences[i + 1][0]]):
            result.append((start, end, "paragraph"))
        else:
            result.append((start, end, "sentence"))
    return result


# --------------------------------------------------------------------------- units and gaps


@dataclass
class _Unit:
    """A piece that is never split except by force: a word, a CJK character, a hard-split chunk."""

    start: int
    end: int
    est: int = 0


# Gap costs: lower is a better place to end a segment.
_GAP_STRONG = 2  # ; : — –
_GAP_COMMA_CONJ = 4  # ", and"
_GAP_COMMA = 6
_GAP_PAREN = 10
_GAP_CONJ = 30  # "... and"
_GAP_WORD = 50
_GAP_WEAK = 70  # after "the", "of", "to"
_GAP_BOUND = 200  # inside "$3 billion", "Dr. Smith"
_GAP_HARD = 1000  # inside a word
_GROUP_COST = 20
_TINY_COST = 40
# Slack in a segment costs a little: the first segments fill their small budgets, the slack goes last.
_BALANCE_COST = 10.0

_CONJUNCTIONS = frozenset(
    "and but or nor so yet because although though while whereas which who whom whose where when whenever "
    "since unless until if then after before however therefore y o pero et ou mais e ma".split()
)
_WEAK_ENDS = frozenset(
    "the a an of to in on at by for with from into onto my your his her its our their this these those "
    "is was are were be been not very mr mrs ms dr st".split()
)
_STRONG_PUNCT = frozenset(";:—–；：")
_COMMAS = frozenset(",，、")


def _is_cjk(ch: str) -> bool:
    """Return True for characters of scripts written without spaces (Han, kana, Hangul)."""
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF
        or 0x31F0 <= code <= 0x31FF
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF66 <= code <= 0xFF9F
        or 0xAC00 <= code <= 0xD7AF
        or 0x20000 <= code <= 0x3FFFF
    )


def _is_attached(ch: str) -> bool:
    """Return True for characters that belong to the character before them (marks, joiners)."""
    return (
        unicodedata.category(ch)[0] == "M"
        or ch in "\u200c\u200d\ufe0e\ufe0f"
        or 0x1F3FB <= ord(ch) <= 0x1F3FF
    )


def _runs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split [start, end) into word-like runs: non-space runs, cut between CJK characters and after dashes."""
    pieces: list[tuple[int, int]] = []
    for m in _NONSPACE.finditer(text, start, end):
        a, b = m.span()
        cut = a
        for i in range(a + 1, b):
            prev, ch = text[i - 1], text[i]
            if _is_attached(ch) or (unicodedata.category(ch)[0] == "P" and ch not in "—–"):
                continue  # marks stay on their letter; punctuation on the word before it
            if _is_cjk(ch) or _is_cjk(prev) or prev in "—–":
                if text[cut:i].strip(_OPENERS):
                    pieces.append((cut, i))
                    cut = i
        pieces.append((cut, b))
    return pieces


def _attach(text: str, cut: int, low: int, end: int) -> int:
    """Move a cut off a mark or joiner: back to its letter (not below ``low``), else forward past it."""
    while low < cut < end and _is_attached(text[cut]):
        cut -= 1  # never separate a mark from its letter
    while cut < end and _is_attached(text[cut]):
        cut += 1
    return cut


def _units(text: str, start: int, end: int) -> list[_Unit]:
    """Return the units of [start, end): runs with unspeakable runs glued to a speaking neighbour."""
    runs = _runs(text, start, end)
    units: list[_Unit] = []
    pending_start: int | None = None  # unspeakable openers waiting for the next speaking run
    for a, b in runs:
        piece = text[a:b]
        if has_speech(piece):
            units.append(_Unit(pending_start if pending_start is not None else a, b))
            pending_start = None
        elif pending_start is not None:
            continue  # joins the openers already waiting for the next speaking run
        elif units and not all(c in _OPENERS for c in piece):
            units[-1].end = b
        else:
            pending_start = a
    if pending_start is not None:
        if units:
            units[-1].end = runs[-1][1]
        else:
            units.append(_Unit(pending_start, runs[-1][1]))
    return units


def _gap_cost(text: str, left: _Unit, right: _Unit, inside: bytearray, hard: bool) -> int:
    """Cost of ending a segment between two adjacent units."""
    if hard:
        return _GAP_HARD
    if inside[left.end]:
        return _GAP_BOUND
    tail = text[left.start : left.end].rstrip(_CLOSERS)
    head = text[right.start : right.end]
    last = tail[-1:] if tail else ""
    word = tail.lower().strip(_OPENERS + ".,;:!?")
    next_word = head.lower().strip(_OPENERS + ".,;:!?")
    if tail.lower().rstrip(".") in _NEVER_FINAL and tail.endswith("."):
        return _GAP_BOUND
    if last in _STRONG_PUNCT or head[:1] in "—–":
        return _GAP_STRONG
    if last in _COMMAS:
        return _GAP_COMMA_CONJ if next_word in _CONJUNCTIONS else _GAP_COMMA
    if last in ")）" or head[:1] in "(（":
        return _GAP_PAREN
    if last in _TERMINATORS:
        return _GAP_STRONG  # a dot that did not end a sentence still marks a phrase ("etc.", "Inc.")
    if next_word in _CONJUNCTIONS:
        return _GAP_CONJ
    if word in _WEAK_ENDS:
        return _GAP_WEAK
    return _GAP_WORD


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class _Budgets:
    """Per-segment budgets: the first short, each next one ``growth`` times larger up to the max."""

    first: int
    maximum: int
    growth: float

    def __call__(self, index: int) -> int:
        if index <= 0:
            return self.first
        if self.growth <= 1.0 or index >= 64:
            return self.maximum
        return int(min(self.maximum, self.first * self.growth**index))

    @property
    def cap(self) -> int:
        """The first index whose budget is the maximum."""
        index = 0
        while self(index) < self.maximum:
            index += 1
        return index


def _check_budget(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise EngineError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")


# --------------------------------------------------------------------------- splitting


class _Splitter:
    """Plans segments for one text: per-unit estimates, gap costs, the optimal cut of each sentence."""

    def __init__(self, text: str, lang: str, measure: Callable[[str], int], min_size: int) -> None:
        self.text = text
        self.lang = lang
        self.measure = measure
        self.min_size = min_size
        self.inside = bytearray(len(text) + 1)
        for start, end in bound_spans(text, lang):
            for pos in range(start + 1, end):
                self.inside[pos] = 1

    def size(self, start: int, end: int) -> int:
        """Measure of the spoken form of text[start:end]."""
        return self.measure(_spoken(self.text[start:end], self.lang))

    def speaks(self, start: int, end: int) -> bool:
        """Return True when text[start:end] has something to say once normalised."""
        return has_speech(_spoken(self.text[start:end], self.lang))

    # -- forced splits

    def speaking_from(self, start: int, end: int) -> int:
        """The last cut ``s`` in [start, end) whose rest text[s:end] still speaks (``start`` if none does).

        Suffixes only gain speech as they grow, so the answer is found by galloping back from the end
        and bisecting the last step: its cost grows with the silent tail, not with the whole span.
        """
        if end - start < 1:
            return start
        step, good, bad = 1, None, end
        while good is None:
            probe = max(start, end - step)
            if self.speaks(probe, end):
                good = probe
            elif probe == start:
                return start
            else:
                bad, step = probe, step * 2
        lo, hi = good + 1, bad - 1  # good speaks, bad does not: the boundary lies between
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.speaks(mid, end):
                good, lo = mid, mid + 1
            else:
                hi = mid - 1
        return good

    def fitting_window(
        self, pos: int, end: int, limit: int, guess: int, size: Callable[[int, int], int]
    ) -> tuple[int, int]:
        """Bounds (fits, over) of the longest prefix of [pos, end) within ``limit``.

        text[pos:fits] fits and text[pos:over] does not (``over`` is ``end`` + 1 when all of it fits).
        An exponential search from ``guess`` characters (the previous piece's length), steps 1, 2, 4, ...
        up or down: each piece is measured only within a window near its own size, never the whole
        rest of the word.
        """
        probe = min(pos + max(guess, 8), end)
        if size(pos, probe) > limit:
            over, step = probe, 1
            while True:
                probe = over - step
                if probe <= pos:
                    return pos, over
                if size(pos, probe) <= limit:
                    return probe, over
                over, step = probe, step * 2
        fits, step = probe, 1
        while fits < end:
            probe = min(fits + step, end)
            if size(pos, probe) <= limit:
                fits, step = probe, step * 2
            elif probe < end and size(pos, probe + 1) <= limit:
                fits = probe + 1  # an odd cut ("a.a.a" reads letter by letter) is not the end yet
            else:
                return fits, probe
        return end, end + 1

    def hard_split(
        self, start: int, end: int, budget: Callable[[int], int], first: int
    ) -> list[tuple[int, int]]:
        """Cut [start, end) between any graphemes into fitting pieces; piece k gets budget(first + k).

        Linear in the span (up to a log factor): each piece is measured only near its own size (see
        ``fitting_window``), and the word's silent tail is found once, not per piece.
        """
        text = self.text
        alnum = [i for i in range(start, end) if text[i].isalnum()]
        speaking: int | None = None  # the last cut whose rest still speaks, found on first need
        sizes: dict[tuple[int, int], int] = {}

        def size(a: int, b: int) -> int:
            if (a, b) not in sizes:
                sizes[(a, b)] = self.size(a, b)
            return sizes[(a, b)]

        pieces: list[tuple[int, int]] = []
        pos = start
        guess = 0  # length of the previous piece: where the next one's search starts
        while pos < end:
            limit = budget(first + len(pieces))
            # Every piece keeps a letter or digit: a cut goes after the first one still ahead and no
            # later than just before the last one, so no piece is left silent.
            k = bisect_left(alnum, pos)
            low = alnum[k] + 1 if k < len(alnum) else pos + 1
            high = alnum[-1] if k + 1 < len(alnum) else pos
            if high < low:
                # No letter or digit on one side: cut anywhere (symbols like "%" still speak).
                low, high = pos + 1, end - 1
            if high >= low:
                fits, over = self.fitting_window(pos, end, limit, guess, size)
            else:
                fits, over = end, end + 1
            if over > end:
                best = end
            else:
                # The longest prefix that fits (size is near-monotonic), searched between the bounds.
                hi = min(high, over - 1)
                best, lo = (fits, fits + 1) if low <= fits <= hi else (low - 1, low)
                while lo <= hi:
                    mid = (lo + hi) // 2
                    if size(pos, mid) <= limit:
                        best, lo = mid, mid + 1
                    else:
                        hi = mid - 1
                while best >= low and size(pos, best) > limit:
                    best -= 1
                if best < low:
                    best = low  # one character over budget beats no progress
                else:
                    # Prefer a cut after a joint ("-", "/", ".") in the last stretch of the piece;
                    # only the nearest few joints are measured.
                    floor = max(low, pos + (best - pos) * 3 // 5)
                    tries = 4
                    for i in range(best, floor - 1, -1):
                        if text[i - 1] in "-/._@:&?=+,;":
                            if size(pos, i) <= limit:
                                best = i
                                break
                            tries -= 1
                            if tries == 0:
                                break
                best = _attach(text, best, low, end)
                if best < end and not (alnum and best <= alnum[-1]):
                    # No letter or digit is left after the cut: check that the rest still speaks
                    # ("£" alone would not), else move the cut back to where it does.
                    if speaking is None:
                        speaking = self.speaking_from(start, end)
                    if best > speaking and pos < speaking and self.speaks(pos, speaking):
                        best = _attach(text, speaking, low, end)
            piece_end = best
            while piece_end > pos and text[piece_end - 1].isspace():
                piece_end -= 1
            if piece_end > pos:
                pieces.append((pos, piece_end))
                guess = piece_end - pos
            pos = best
            while pos < end and text[pos].isspace():
                pos += 1
        return pieces

    def prepare(
        self, units: list[_Unit], budget: Callable[[int], int], first: int
    ) -> tuple[list[_Unit], list[bool]]:
        """Estimate units, hard-splitting any too big for where it stands; return units, hard-gap flags."""
        out: list[_Unit] = []
        hard: list[bool] = []  # hard[i]: the gap after out[i] is inside a word
        for unit in units:
            limit = budget(first + len(out))
            est = self.size(unit.start, unit.end)
            if est <= limit:
                out.append(_Unit(unit.start, unit.end, est))
                hard.append(False)
                continue
            pieces = self.hard_split(unit.start, unit.end, budget, first + len(out))
            for a, b in pieces:
                out.append(_Unit(a, b, self.size(a, b)))
                hard.append(True)
            hard[-1] = False
        return out, hard

    # -- the optimal cut

    def plan(
        self, units: list[_Unit], hard: list[bool], budgets: _Budgets, first: int
    ) -> list[tuple[int, int]]:
        """Cut units into groups (index ranges) that fit their budgets at the lowest total cost."""
        n = len(units)
        cap = budgets.cap
        gaps = [
            _gap_cost(self.text, units[i], units[i + 1], self.inside, hard[i]) if i + 1 < n else 0
            for i in range(n)
        ]
        spaced = [i > 0 and units[i].start > units[i - 1].end for i in range(n)]
        start_state = min(first, cap)
        inf = float("inf")
        # best[i][s]: lowest cost of cutting units[:i] with the next segment index state s.
        best: list[dict[int, tuple[float, int, int]]] = [dict() for _ in range(n + 1)]
        best[0][start_state] = (0.0, -1, -1)
        for i in range(n):
            for state, (cost, _, _) in list(best[i].items()):
                limit = budgets(state)
                size = 0
                next_state = min(state + 1, cap)
                for j in range(i, n):
                    size += units[j].est + (1 if j > i and spaced[j] else 0)
                    if size > limit:
                        break
                    step = _GROUP_COST + gaps[j] + _BALANCE_COST * (1.0 - size / limit) ** 2
                    if size < self.min_size and not (i == 0 and j == n - 1):
                        step += _TINY_COST
                    total = cost + step
                    if total < best[j + 1].get(next_state, (inf, 0, 0))[0]:
                        best[j + 1][next_state] = (total, i, state)
        if not best[n]:
            # Cannot happen after prepare(); keep every unit on its own as a safe answer.
            return [(i, i + 1) for i in range(n)]
        state = min(best[n], key=lambda s: best[n][s][0])
        groups: list[tuple[int, int]] = []
        pos = n
        while pos > 0:
            _, prev, prev_state = best[pos][state]
            groups.append((prev, pos))
            pos, state = prev, prev_state
        groups.reverse()
        return groups

    def fit(self, units: list[_Unit], budget: Callable[[int], int], first: int) -> list[tuple[int, int]]:
        """Pack units greedily by their real spoken size; the safety net when estimates did not add up."""
        spans: list[tuple[int, int]] = []
        i = 0
        while i < len(units):
            limit = budget(first + len(spans))
            j = i + 1
            while j < len(units) and self.size(units[i].start, units[j].end) <= limit:
                j += 1
            start, end = units[i].start, units[j - 1].end
            if j == i + 1 and self.size(start, end) > limit:
                spans.extend(self.hard_split(start, end, budget, first + len(spans)))
            else:
                spans.append((start, end))
            i = j
        return spans

    def split(self, start: int, end: int, budgets: _Budgets, first: int) -> list[tuple[int, int]]:
        """Return the spans of [start, end) as segments numbered from ``first``."""
        if self.size(start, end) <= budgets(first):
            return [(start, end)]
        raw = _units(self.text, start, end)
        if not raw:
            return [(start, end)]
        units, hard = self.prepare(raw, budgets, first)
        spans: list[tuple[int, int]] = []
        for a, b in self.plan(units, hard, budgets, first):
            group_start, group_end = units[a].start, units[b - 1].end
            index = first + len(spans)
            if self.size(group_start, group_end) <= budgets(index):
                spans.append((group_start, group_end))
            else:
                spans.extend(self.fit(units[a:b], budgets, index))
        return self.absorb_silent(spans, budgets, first)

    def absorb_silent(
        self, spans: list[tuple[int, int]], budgets: Callable[[int], int], first: int
    ) -> list[tuple[int, int]]:
        """Merge forced pieces with nothing to say ("££") into a neighbour when every budget still holds."""
        i = 0
        while i < len(spans):
            if len(spans) == 1 or has_speech(_spoken(self.text[spans[i][0] : spans[i][1]], self.lang)):
                i += 1
                continue
            for j in (i - 1, i + 1):
                if not 0 <= j < len(spans):
                    continue
                lo, hi = min(i, j), max(i, j)
                trial = spans[:lo] + [(spans[lo][0], spans[hi][1])] + spans[hi + 1 :]
                if all(self.size(a, b) <= budgets(first + k) for k, (a, b) in enumerate(trial)):
                    spans = trial
                    i = max(0, lo - 1)
                    break
            else:
                i += 1
        return spans


@lru_cache(maxsize=8192)
def _spoken(text: str, lang: str) -> str:
    """The spoken form of a span: normalised, whitespace collapsed."""
    return " ".join(normalize(text, lang).split())


def _merge_silent(text: str, lang: str, sentences: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Attach sentences with nothing to say to the one before (or, at the start, after) them."""
    merged: list[tuple[int, int, str]] = []
    leading: int | None = None
    for start, end, boundary in sentences:
        if has_speech(_spoken(text[start:end], lang)):
            if leading is not None:
                start, leading = leading, None
            merged.append((start, end, boundary))
        elif merged:
            prev_start, _, _ = merged[-1]
            merged[-1] = (prev_start, end, boundary)
        elif leading is None:
            leading = start
    if leading is not None:
        # Nothing at all to say: one segment covering the whole text, spoken empty.
        return []
    return merged


def split_text(
    text: str,
    *,
    lang: str = "en-us",
    max_phonemes: int = DEFAULT_MAX_PHONEMES,
    first_max_phonemes: int = DEFAULT_FIRST_MAX_PHONEMES,
    min_phonemes: int = DEFAULT_MIN_PHONEMES,
    growth: float = DEFAULT_BUDGET_GROWTH,
) -> list[Segment]:
    """Split ``text`` into segments that each fit their phoneme budget, covering every character.

    Paragraphs (blank lines) split into sentences, long sentences at clause
    boundaries, then at words, and a word longer than the budget anywhere. The
    first segment's budget is ``first_max_phonemes``; each next one is ``growth``
    times the one before, up to ``max_phonemes`` (``growth <= 1``: straight to the
    max). Each segment's ``spoken`` is ``normalize(segment.text, lang)`` with
    whitespace collapsed, except that it is ``""`` when there is nothing to say:
    that happens only when the whole input is emoji, symbols or punctuation, and
    then one segment covers it all. Callers skip segments whose ``spoken`` is empty.
    Raises ``InvalidTextError`` for empty or whitespace-only text.
    """
    if not isinstance(text, str):
        raise InvalidTextError(f"Text must be a string, not {type(text).__name__}; pass the words to speak.")
    if not text.strip():
        raise InvalidTextError("The text is empty or only whitespace; pass at least one word to speak.")
    _check_budget("max_phonemes", max_phonemes, MIN_BUDGET_PHONEMES, MODEL_MAX_PHONEMES)
    _check_budget("first_max_phonemes", first_max_phonemes, MIN_BUDGET_PHONEMES, max_phonemes)
    _check_budget("min_phonemes", min_phonemes, 0, first_max_phonemes)
    if not isinstance(growth, (int, float)) or math.isnan(growth) or growth < 0:
        raise EngineError(f"growth must be a non-negative number; got {growth!r}.")

    budgets = _Budgets(first_max_phonemes, max_phonemes, float(growth))
    splitter = _Splitter(text, lang, estimate_phonemes, min_phonemes)
    sentences = _merge_silent(text, lang, _sentences(text, splitter.inside))
    if not sentences:
        start = len(text) - len(text.lstrip())
        end = len(text.rstrip())
        return [Segment(0, start, end, text[start:end], "", "end", True)]

    segments: list[Segment] = []
    for number, (start, end, boundary) in enumerate(sentences):
        spans = splitter.split(start, end, budgets, len(segments))
        for k, (a, b) in enumerate(spans):
            kind = boundary if k == len(spans) - 1 else _cut_kind(text, a, b)
            if number == len(sentences) - 1 and k == len(spans) - 1:
                kind = "end"
            spoken = _spoken(text[a:b], lang)
            lead = not segments or segments[-1].boundary == "word"
            segments.append(
                Segment(len(segments), a, b, text[a:b], spoken if has_speech(spoken) else "", kind, lead)
            )
    return segments


def _cut_kind(text: str, start: int, end: int) -> str:
    """Boundary of a cut inside a sentence: "clause" at punctuation or a dash, else "word"."""
    last = text[start:end].rstrip().rstrip(_CLOSERS)[-1:]
    head = text[end:].lstrip()[:1]
    if last and (last in _COMMAS or last in _STRONG_PUNCT or last in _TERMINATORS or last in ")）"):
        return "clause"
    if head and head in "—–(（":
        return "clause"
    return "word"


def split_segment(segment: Segment, max_chars: int, *, lang: str = "en-us") -> list[Segment]:
    """Split one segment into pieces whose ``spoken`` is at most ``max_chars`` characters.

    For the engine, when real G2P of a segment came out over the model's limit.
    Cuts prefer clause boundaries, then words; a word longer than ``max_chars``
    is cut inside. Spans stay exact (relative to the original text). Piece ``k``
    gets index ``segment.index + k``: callers renumber the whole list with
    ``renumber``. All pieces but the last end in a "clause" boundary (at punctuation)
    or a "word" one; the last keeps the segment's own. The first piece keeps the
    segment's ``trim_lead``; a later one trims its lead after a "word" cut. Pass the
    same ``lang`` the segment was made with.
    """
    if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars < 1:
        raise EngineError(f"max_chars must be a positive whole number; got {max_chars!r}.")
    if len(segment.spoken) <= max_chars:
        return [segment]
    splitter = _Splitter(segment.text, lang, len, 0)
    budgets = _Budgets(max_chars, max_chars, 1.0)
    spans = splitter.split(0, len(segment.text), budgets, 0)
    pieces: list[Segment] = []
    for k, (a, b) in enumerate(spans):
        spoken = _spoken(segment.text[a:b], lang)
        pieces.append(
            Segment(
                segment.index + k,
                segment.start + a,
                segment.start + b,
                segment.text[a:b],
                spoken if has_speech(spoken) else "",
                segment.boundary if k == len(spans) - 1 else _cut_kind(segment.text, a, b),
                segment.trim_lead if k == 0 else pieces[-1].boundary == "word",
            )
        )
    return pieces


def renumber(segments: Iterable[Segment], start: int = 0) -> list[Segment]:
    """Return the segments with consecutive indexes from ``start`` (after ``split_segment``)."""
    return [
        replace(seg, index=start + i) if seg.index != start + i else seg for i, seg in enumerate(segments)
    ]

"""Every pattern applied to user text runs in linear time: worst cases that made the old ones blow up.

Each shape below is one that backtracked badly before (measured on the old code: from 10 s
to hours at these sizes; see the timings in the commit history). Now each call takes a
fraction of a second. The limit is generous on purpose: a quadratic or cubic pattern
misses it by orders of magnitude at 50,000 characters, a slow machine does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import segment
from engine.exceptions import InvalidVoiceSpecError
from engine.normalize import bound_spans, normalize
from engine.segment import split_text
from engine.voices import MAX_VOICE_SPEC_CHARS, parse_blend

#: Seconds one call may take.
LIMIT_S = 1.0

#: Size of the hand-made worst cases.
N = 50_000

#: split_text plans every word of a sentence (linear, but about 20 µs a character here), so its
#: cases are smaller; the old patterns were cubic there, far past the limit at this size too.
N_SPLIT = 20_000


def _elapsed(call: Callable[[], object]) -> float:
    """Seconds ``call`` takes; measured again once if over the limit, so a busy machine does not fail it."""
    best = float("inf")
    for _ in range(2):
        segment._spoken.cache_clear()  # the second try must redo the work, not read it back
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
        if best < LIMIT_S:
            break
    return best


#: Name -> text that normalize() once took superlinear time on.
NORMALIZE_CASES: dict[str, str] = {
    # spaced_thousands: every split of the groups around the required "0dd" one was tried (cubic).
    # (A 5-digit tail: the phone pass, which runs first, would take "000 000 0001".)
    "spaced_thousands": "1" + " 000" * (N // 4 - 2) + " 00001",
    # _NUM's unbounded ",ddd" groups, retried after every comma when no "%"/unit/ordinal follows.
    "comma_groups": "1" + ",000" * (N // 4 - 1) + "x",
    # The bare-host URL alternative, retried at every label of a host that never reaches a TLD.
    "dotted_host": "a." * (N // 2) + "!",
    "hyphenated_host": "a-" * (N // 2) + "!",
    "dotted_abbreviations": "No." * (N // 3) + "1",
    # The version look-ahead rescanned the rest of the word for each shorter "1.2.3".
    "version": "1." * (N // 2 - 2) + "1x1",
    # Leading \s* of the spaced operators (=, +, <=, >=, ×), retried from every space of a run.
    "spaces": " " * N + "x",
    "tabs_and_newlines": "\t\n" * (N // 2) + "x",
    # Markdown link: every "[" scanned to the same missing "]".
    "open_brackets": "[" * N + "x",
}


@pytest.mark.parametrize("text", NORMALIZE_CASES.values(), ids=NORMALIZE_CASES.keys())
def test_normalize_worst_cases_run_in_linear_time(text: str) -> None:
    assert _elapsed(lambda: normalize(text)) < LIMIT_S


#: Name -> text that bound_spans() once took superlinear time on (it runs the passes on the raw text).
SPANS_CASES: dict[str, str] = {
    "spaced_thousands": "1" + " 000" * (N // 4 - 2) + " 0001",
    "comma_groups": "1" + ",000" * (N // 4 - 1) + "x",
    # Every "#" matches, and each used to rescan the rest of the word after it.
    "hash_digits": "#1" * (N // 2),
}


@pytest.mark.parametrize("text", SPANS_CASES.values(), ids=SPANS_CASES.keys())
def test_bound_spans_worst_cases_run_in_linear_time(text: str) -> None:
    assert _elapsed(lambda: bound_spans(text)) < LIMIT_S


#: Name -> text that split_text() once took superlinear time on (through bound_spans and the
#: sentence scan). Words are kept short here: HARD_SPLIT_CASES below are the long words.
SPLIT_CASES: dict[str, str] = {
    "spaced_thousands": "1" + " 000" * (N_SPLIT // 4 - 2) + " 0001",
    "open_brackets": ("[" * 49 + " ") * (N_SPLIT // 50),
}


@pytest.mark.parametrize("text", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_split_text_worst_cases_run_in_linear_time(text: str) -> None:
    assert _elapsed(lambda: split_text(text)) < LIMIT_S


#: Name -> one word of N characters that hard_split cuts into pieces. It used to measure the whole
#: rest of the word for every piece (quadratic: 1.5 s at 12,000 letters, 17.7 s at 12,000 digits,
#: so about 26 s and 5 min at 50,000). Now 0.2-0.6 s each at 50,000, most of it the planning that
#: every split_text call does (about 10 µs a character), so these get a limit of their own.
HARD_SPLIT_CASES: dict[str, str] = {
    "letters": "a" * N,
    "digits": "1" * N,
    "joints": "ab-" * (N // 3),
    "dotted_letters": "a." * (N // 2),
    "url": "https://" + "ab/cd." * (N // 6),
    "marks": "a\u0301" * (N // 2),
    "one_letter_then_marks": "a" + "\u0301" * (N - 1),
    "silent_tail": "a" * (N // 2) + "\u200d" * (N // 2),
    "symbols_and_digits": "€1" * (N // 2),
}


#: Seconds one huge word may take: ten times the unloaded time, a tenth of the quadratic one.
HARD_SPLIT_LIMIT_S = 5.0


@pytest.mark.parametrize("word", HARD_SPLIT_CASES.values(), ids=HARD_SPLIT_CASES.keys())
def test_one_huge_word_is_cut_in_linear_time(word: str) -> None:
    result: dict[str, list[segment.Segment]] = {}
    assert _elapsed(lambda: result.update(pieces=split_text(word))) < HARD_SPLIT_LIMIT_S
    # Still the coverage invariant: the pieces tile the word in order, each speaks, each fits.
    pieces = result["pieces"]
    assert "".join(seg.text for seg in pieces) == word
    assert all(seg.spoken for seg in pieces) or len(pieces) == 1
    assert all(segment.estimate_phonemes(seg.spoken) <= segment.DEFAULT_MAX_PHONEMES for seg in pieces[1:])


@pytest.mark.parametrize("unit", ["a", "1", "ab-"])
def test_huge_word_time_grows_linearly(unit: str) -> None:
    # Four times the word, about four times the time (a quadratic cut would take sixteen): measured
    # side by side, so a busy machine slows both alike.
    def best_of_two(text: str) -> float:
        times = []
        for _ in range(2):
            segment._spoken.cache_clear()
            start = time.perf_counter()
            split_text(text)
            times.append(time.perf_counter() - start)
        return min(times)

    small = best_of_two(unit * (N // 4 // len(unit)))
    large = best_of_two(unit * (N // len(unit)))
    assert large / small < 8, (small, large)


def test_huge_voice_spec_is_refused_at_once() -> None:
    # The old blend pattern was cubic on an unclosed "(" followed by spaces: hours for this one.
    spec = "af_heart(" + " " * N + "x"
    start = time.perf_counter()
    with pytest.raises(InvalidVoiceSpecError, match=str(MAX_VOICE_SPEC_CHARS)):
        parse_blend(spec)
    assert time.perf_counter() - start < LIMIT_S


def test_longest_allowed_voice_spec_parses_fast() -> None:
    spec = "af_heart(" + " " * (MAX_VOICE_SPEC_CHARS - 10) + "x"
    start = time.perf_counter()
    with pytest.raises(InvalidVoiceSpecError):
        parse_blend(spec)
    assert time.perf_counter() - start < 0.05


#: Characters the patterns care about: digits, separators, operators, brackets, link and list marks.
_ALPHABET = " \t\n0123456789.,:;=+-–/\\#@%$£&()[]<>'\"!?*_abcxAMPSTmw"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unit=st.text(alphabet=_ALPHABET, min_size=1, max_size=6),
    tail=st.text(alphabet=_ALPHABET, max_size=4),
)
def test_repeated_random_units_run_in_linear_time(unit: str, tail: str) -> None:
    # Long repetitions of a short unit with an odd end are the shapes that make backtracking blow up.
    text = unit * (10_000 // len(unit)) + tail
    assert _elapsed(lambda: normalize(text)) < LIMIT_S
    assert _elapsed(lambda: bound_spans(text)) < LIMIT_S

"""Tests of engine.segment: the coverage invariant, budgets, sentence and clause splitting."""

from __future__ import annotations

import os
import random
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.exceptions import EngineError, InvalidTextError, SpoolError
from engine.normalize import normalize
from engine.segment import (
    BOUNDARIES,
    DEFAULT_FIRST_MAX_PHONEMES,
    DEFAULT_MAX_PHONEMES,
    Segment,
    estimate_phonemes,
    has_speech,
    renumber,
    split_segment,
    split_text,
)

#: Examples per property; raise it for a deep run: SPOOL_SEGMENT_EXAMPLES=3000 pytest tests/test_segment.py
PROPERTY = settings(
    max_examples=int(os.environ.get("SPOOL_SEGMENT_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def check_coverage(text: str, segments: list[Segment]) -> None:
    """Assert the coverage invariant: ordered exact spans covering every non-space character once."""
    assert segments, "no segments"
    pos = 0
    for i, seg in enumerate(segments):
        assert seg.index == i
        assert seg.start >= pos, f"segment {i} overlaps the one before"
        assert text[pos : seg.start].strip() == "", (
            f"text dropped before segment {i}: {text[pos : seg.start]!r}"
        )
        assert seg.text == text[seg.start : seg.end]
        assert seg.text, f"segment {i} is empty"
        assert not seg.text[0].isspace() and not seg.text[-1].isspace()
        assert seg.boundary in BOUNDARIES
        # Dead air is trimmed only where nothing is meant to be heard before the speech.
        assert seg.trim_lead == (i == 0 or segments[i - 1].boundary == "word")
        pos = seg.end
    assert text[pos:].strip() == "", f"text dropped at the end: {text[pos:]!r}"
    assert segments[-1].boundary == "end"
    assert all(seg.boundary != "end" for seg in segments[:-1])


def check_spoken(segments: list[Segment], lang: str = "en-us") -> None:
    """Assert each spoken form is the normalised text (or empty when there is nothing to say)."""
    for seg in segments:
        expected = " ".join(normalize(seg.text, lang).split())
        assert seg.spoken == (expected if has_speech(expected) else "")


def check_budgets(segments: list[Segment]) -> None:
    """Assert the default budgets hold: the first short, every one under the max."""
    assert estimate_phonemes(segments[0].spoken) <= DEFAULT_FIRST_MAX_PHONEMES
    for seg in segments:
        assert estimate_phonemes(seg.spoken) <= DEFAULT_MAX_PHONEMES


def check_all(text: str, lang: str = "en-us") -> list[Segment]:
    """Split and check every invariant; return the segments."""
    segments = split_text(text, lang=lang)
    check_coverage(text, segments)
    check_spoken(segments, lang)
    check_budgets(segments)
    speakable = [seg for seg in segments if seg.spoken]
    if speakable:
        assert len(speakable) == len(segments), "a silent segment next to speaking ones"
    else:
        assert len(segments) == 1
    return segments


def nonblank(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Filter a text strategy to texts with something other than whitespace."""
    return strategy.filter(lambda t: t.strip() != "")


# --------------------------------------------------------------------------- properties

WORDS = st.text(alphabet=st.characters(categories=["Lu", "Ll"]), min_size=1, max_size=12)
SENTENCE_ALPHABET = "abcdefghij ABC .,;:!?—–-\"'()…\n\n"
MIXED = "abcXYZ абвгд 漢字かなカナ 中文 العربية हिन्दी 123 😀🎉👍🏽 \u200d\ufe0f.,!?。！？、，"


@PROPERTY
@given(nonblank(st.text(max_size=300)))
def test_coverage_arbitrary_unicode(text: str) -> None:
    check_all(text)


@PROPERTY
@given(nonblank(st.text(alphabet=st.characters(codec="utf-8"), max_size=200)))
def test_coverage_arbitrary_unicode_other_language(text: str) -> None:
    check_all(text, lang="es")


@PROPERTY
@given(st.lists(WORDS, min_size=1, max_size=150).map(" ".join))
def test_no_punctuation_at_all(text: str) -> None:
    check_all(text)


@PROPERTY
@given(
    st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=100, max_size=600), min_size=1, max_size=3
    )
)
def test_very_long_words(words: list[str]) -> None:
    segments = check_all(" ".join(words))
    assert len(segments) > 1


@PROPERTY
@given(nonblank(st.text(alphabet="0123456789.,:-/$%€£#+&=x °", max_size=200)))
def test_digits_and_symbols(text: str) -> None:
    check_all(text)


@PROPERTY
@given(nonblank(st.text(alphabet="😀🎉👍🏽❤️\u200d🔥 ✨", max_size=100)))
def test_only_emoji_is_covered_and_silent(text: str) -> None:
    segments = check_all(text)
    assert len(segments) == 1
    assert segments[0].spoken == ""


@PROPERTY
@given(nonblank(st.text(alphabet=MIXED, max_size=300)), st.sampled_from(["en-us", "ja", "zh", "hi", "fr-fr"]))
def test_mixed_scripts(text: str, lang: str) -> None:
    check_all(text, lang)


@PROPERTY
@given(
    st.lists(
        st.tuples(
            WORDS, st.sampled_from([" ", "\n", "\n\n", " " * 50, "\t\n \n\t", "\r\n\r\n", "\u3000", "\u2029"])
        ),
        min_size=1,
        max_size=40,
    )
)
def test_huge_whitespace_runs(parts: list[tuple[str, str]]) -> None:
    text = "   \n\n" + "".join(word + space for word, space in parts) + "\n\n   "
    check_all(text)


@PROPERTY
@given(nonblank(st.text(alphabet=SENTENCE_ALPHABET, max_size=400)))
def test_sentence_clause_word_alphabet(text: str) -> None:
    check_all(text)


PLAIN_WORDS = st.sampled_from(
    "river stone quietly ran over the light dark morning we they said cat x y".split()
)


@PROPERTY
@given(
    st.lists(
        st.lists(PLAIN_WORDS, min_size=2, max_size=60).map(" ".join).map(lambda s: s + "."),
        min_size=1,
        max_size=8,
    )
)
def test_sentence_ends_get_sentence_boundaries(sentences: list[str]) -> None:
    text = " ".join(s[0].upper() + s[1:] for s in sentences)
    segments = check_all(text)
    ends = {seg.end for seg in segments if seg.boundary in ("sentence", "end")}
    # Every full stop followed by a capital (or the text end) ends a segment with a sentence boundary.
    pos = 0
    for _ in sentences:
        pos = text.index(".", pos) + 1
        if pos == len(text) or text[pos + 1 : pos + 2].isupper():
            assert pos in ends, (pos, text)


def test_paragraph_boundaries() -> None:
    text = "First paragraph here. It has two sentences.\n\nSecond one.\n\n\nThird one"
    segments = check_all(text)
    kinds = [(seg.text, seg.boundary) for seg in segments]
    assert kinds == [
        ("First paragraph here.", "sentence"),
        ("It has two sentences.", "paragraph"),
        ("Second one.", "paragraph"),
        ("Third one", "end"),
    ]


def test_single_segment_text_ends_with_end() -> None:
    segments = check_all("Hello there.")
    assert [(s.text, s.boundary, s.spoken) for s in segments] == [("Hello there.", "end", "Hello there.")]


# --------------------------------------------------------------------------- sentences


def texts(text: str, lang: str = "en-us") -> list[str]:
    """Split with a first budget as large as the rest (sentences only) and return the segment texts."""
    segments = split_text(text, lang=lang, first_max_phonemes=DEFAULT_MAX_PHONEMES)
    check_coverage(text, segments)
    check_spoken(segments, lang)
    return [seg.text for seg in segments]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ("Mr. and Mrs. Jones came.", ["Mr. and Mrs. Jones came."]),
        ("Bring fruit, e.g. apples. Then go.", ["Bring fruit, e.g. apples.", "Then go."]),
        ("The U.S. economy grew. Prices fell.", ["The U.S. economy grew.", "Prices fell."]),
        ("Pi is 3.14 today. Yes.", ["Pi is 3.14 today.", "Yes."]),
        ("It costs $3.50 now. Buy it.", ["It costs $3.50 now.", "Buy it."]),
        ("Wait... what? No!", ["Wait... what?", "No!"]),
        ("Well… Maybe so.", ["Well…", "Maybe so."]),
        ('"Stop!" he said. "Now."', ['"Stop!" he said.', '"Now."']),
        ("He said (quietly.) Then left.", ["He said (quietly.)", "Then left."]),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ("See No. 5 here. Done.", ["See No. 5 here.", "Done."]),
        ("J. K. Rowling wrote it. Yes.", ["J. K. Rowling wrote it.", "Yes."]),
        ("Visit example.com today. Thanks.", ["Visit example.com today.", "Thanks."]),
        ("Meet at 10 a.m. Bring tea.", ["Meet at 10 a.m.", "Bring tea."]),
    ],
)
def test_sentence_splitting(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


def test_chapter_heading_lines() -> None:
    text = "CHAPTER I.\nDown the Rabbit-Hole\n\nAlice was tired."
    assert texts(text) == ["CHAPTER I.", "Down the Rabbit-Hole", "Alice was tired."]


def test_hard_wrapped_prose_is_one_sentence() -> None:
    text = (
        "Alice was beginning to get very tired of sitting by her sister on the\n"
        "bank, and of having nothing to do."
    )
    segments = split_text(text, first_max_phonemes=180)
    assert [s.text for s in segments] == [text]


def test_cjk_sentences_without_spaces() -> None:
    segments = check_all("你好。我们今天去公园散步！天气非常好？", lang="zh")
    assert [s.text for s in segments] == ["你好。", "我们今天去公园散步！", "天气非常好？"]
    assert [s.boundary for s in segments] == ["sentence", "sentence", "end"]


def test_long_japanese_without_punctuation_splits_on_characters() -> None:
    text = "あいうえおかきくけこ" * 30
    segments = check_all(text, lang="ja")
    assert len(segments) > 3
    assert "".join(s.text for s in segments) == text


def test_hindi_danda() -> None:
    assert texts("मेरा नाम राम है। मैं दिल्ली में रहता हूँ।", "hi") == ["मेरा नाम राम है।", "मैं दिल्ली में रहता हूँ।"]


# --------------------------------------------------------------------------- clauses and budgets

LONG_SENTENCE = (
    "When the old lighthouse keeper finally climbed the spiral stairs that evening, carrying his lamp, "
    "his notebook and a flask of tea, he noticed that the sea had turned a strange shade of green; "
    "the gulls had gone quiet, the wind had dropped to nothing, and far out past the rocks a single "
    "ship was drifting slowly towards the harbour without any lights at all."
)


def test_long_sentence_splits_at_clauses() -> None:
    segments = check_all(LONG_SENTENCE)
    assert len(segments) > 2
    # The first clause is longer than the first budget and must be cut at a word; the rest end at clauses.
    assert segments[0].boundary == "word" and segments[0].text[-1].isalpha(), segments[0].text
    assert segments[1].trim_lead and not any(seg.trim_lead for seg in segments[2:])
    for seg in segments[1:-1]:
        assert seg.boundary == "clause"
        assert seg.text[-1] in ",;", seg.text
    assert segments[-1].boundary == "end"


@pytest.mark.parametrize(
    ("text", "first"),
    [
        # Cut inside a phrase: the second piece carries straight on.
        ("Alice was not a bit hurt, and she jumped up on to her feet in a moment.", "word"),
        # Cuts at punctuation, a closing bracket, or before a dash are clause pauses.
        ("Alice, (not hurt) — jumped up, on to her feet, in a moment, and ran (fast).", "clause"),
    ],
)
def test_cuts_inside_a_sentence_are_word_or_clause(text: str, first: str) -> None:
    segments = split_text(text, first_max_phonemes=24, max_phonemes=40, growth=1.0)
    assert len(segments) > 2
    for seg, nxt in zip(segments, segments[1:], strict=False):
        last = seg.text.rstrip("\"')]”’")[-1]
        expected = "clause" if last in ",;:—–)" or nxt.text[0] in "—–(" else "word"
        assert seg.boundary == expected, (seg.text, nxt.text)
        assert nxt.trim_lead == (seg.boundary == "word")
    assert segments[0].boundary == first and segments[0].trim_lead


def test_first_segment_is_a_short_clause() -> None:
    segments = check_all(LONG_SENTENCE)
    words = len(segments[0].text.split())
    assert 3 <= words <= 10, segments[0].text
    assert estimate_phonemes(segments[0].spoken) <= DEFAULT_FIRST_MAX_PHONEMES


def test_budgets_grow_after_the_first() -> None:
    text = " ".join([LONG_SENTENCE] * 4)
    segments = check_all(text)
    sizes = [estimate_phonemes(s.spoken) for s in segments]
    assert sizes[0] <= 40 and sizes[1] <= 80 and sizes[2] <= 160
    assert max(sizes) > 80  # later segments use the larger budget


def test_tiny_fragments_are_merged() -> None:
    text = "Yes, " + LONG_SENTENCE
    segments = check_all(text)
    assert segments[0].text != "Yes,"
    for seg in segments:
        assert len(seg.text.split()) > 1, seg.text


def test_symbols_between_words_stay_with_a_neighbour() -> None:
    text = " ".join(["word ( !! 🎉 “ ¿"] * 80) + " end"
    segments = check_all(text)
    assert len(segments) > 3


def test_lone_short_sentence_kept() -> None:
    assert texts("It rained all day. Yes. The end.") == ["It rained all day.", "Yes.", "The end."]


def test_no_split_inside_money_or_dates() -> None:
    text = (
        "The committee finally approved a budget of $3 billion on January 5, 2024 after a very long and "
        "tiring debate that went on and on through the night and into the next morning without a break"
    )
    segments = check_all(text)
    for seg in segments:
        assert not seg.text.endswith("$3"), seg.text
        assert not seg.text.endswith("January"), seg.text
        assert not seg.text.endswith("January 5,"), seg.text


def test_custom_budgets() -> None:
    segments = split_text(LONG_SENTENCE * 3, max_phonemes=60, first_max_phonemes=30)
    check_coverage(LONG_SENTENCE * 3, segments)
    assert estimate_phonemes(segments[0].spoken) <= 30
    assert all(estimate_phonemes(s.spoken) <= 60 for s in segments)


def test_no_growth_goes_straight_to_max() -> None:
    segments = split_text(" ".join([LONG_SENTENCE] * 3), growth=0)
    assert estimate_phonemes(segments[1].spoken) > 80


def test_two_thousand_words() -> None:
    rng = random.Random(7)
    vocab = "the a river stone quietly ran over under light dark morning evening we they said".split()
    words = []
    for i in range(2000):
        word = rng.choice(vocab)
        if i % 17 == 16:
            word += rng.choice([".", "!", "?"])
        elif i % 7 == 6:
            word += rng.choice([",", ";", ":"])
        words.append(word)
        if i % 150 == 149:
            words.append("\n\n")
    text = " ".join(words)
    segments = check_all(text)
    rebuilt = "".join(text[s.start : s.end] for s in segments)
    assert "".join(rebuilt.split()) == "".join(text.split())
    assert sum(1 for s in segments if s.boundary == "paragraph") >= 10


# --------------------------------------------------------------------------- estimates


@pytest.mark.parametrize(
    ("spoken", "low", "high"),
    [
        ("", 0, 0),
        ("Hello.", 5, 9),
        ("It was the best of times.", 20, 32),
        ("FBI", 6, 9),
        ("你好", 6, 14),
    ],
)
def test_estimate_phonemes(spoken: str, low: int, high: int) -> None:
    assert low <= estimate_phonemes(spoken) <= high


def test_estimate_grows_with_text() -> None:
    assert estimate_phonemes("word " * 20) > estimate_phonemes("word " * 10) > estimate_phonemes("word")


# --------------------------------------------------------------------------- split_segment and renumber


def test_split_segment_fits_and_keeps_spans() -> None:
    text = "Prefix. " + LONG_SENTENCE
    segments = split_text(text, max_phonemes=510, first_max_phonemes=510)
    seg = segments[1]
    pieces = split_segment(seg, 120)
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.text == text[piece.start : piece.end]
        assert len(piece.spoken) <= 120
        assert piece.spoken == " ".join(normalize(piece.text).split())
    assert pieces[0].start == seg.start and pieces[-1].end == seg.end
    assert pieces[-1].boundary == seg.boundary
    for piece, nxt in zip(pieces, pieces[1:], strict=False):
        assert piece.boundary == ("clause" if piece.text[-1] in ",;:" else "word"), piece.text
        assert nxt.trim_lead == (piece.boundary == "word")
    assert pieces[0].trim_lead == seg.trim_lead
    assert [p.index for p in pieces] == list(range(seg.index, seg.index + len(pieces)))
    covered = "".join(p.text for p in pieces)
    assert "".join(covered.split()) == "".join(seg.text.split())


def test_split_segment_hard_splits_a_long_word() -> None:
    word = "x" * 300
    (seg,) = split_text(word, max_phonemes=510, first_max_phonemes=510)
    pieces = split_segment(seg, 100)
    assert "".join(p.text for p in pieces) == word
    assert all(len(p.spoken) <= 100 for p in pieces)


def test_split_segment_leaves_a_fitting_segment_alone() -> None:
    (seg,) = split_text("Short.")
    assert split_segment(seg, 100) == [seg]


def test_renumber() -> None:
    segments = split_text(LONG_SENTENCE)
    pieces = split_segment(segments[-1], 20) + split_segment(segments[0], 20)
    fixed = renumber(pieces)
    assert [s.index for s in fixed] == list(range(len(pieces)))
    assert [s.text for s in fixed] == [s.text for s in pieces]


# --------------------------------------------------------------------------- errors and the dataclass


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "\u3000\u2029"])
def test_empty_text_raises(text: str) -> None:
    with pytest.raises(InvalidTextError, match="empty"):
        split_text(text)


def test_bad_budgets_raise() -> None:
    with pytest.raises(EngineError, match="max_phonemes"):
        split_text("Hi.", max_phonemes=600)
    with pytest.raises(EngineError, match="first_max_phonemes"):
        split_text("Hi.", first_max_phonemes=300, max_phonemes=200)
    with pytest.raises(SpoolError):
        split_segment(split_text("Hi.")[0], 0)


def test_segment_is_frozen_and_validated() -> None:
    seg = split_text("Hi.")[0]
    with pytest.raises(FrozenInstanceError):
        seg.index = 3  # type: ignore[misc]
    with pytest.raises(EngineError):
        Segment(0, 0, 3, "Hi.", "Hi.", "pause")
    with pytest.raises(EngineError):
        Segment(0, 0, 5, "Hi.", "Hi.", "end")


@PROPERTY
@given(
    nonblank(st.text(alphabet=SENTENCE_ALPHABET + "0123456789$%:/ 漢字😀", max_size=500)),
    st.integers(min_value=24, max_value=510),
    st.data(),
)
def test_any_budget_holds(text: str, max_phonemes: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=24, max_value=max_phonemes))
    segments = split_text(text, max_phonemes=max_phonemes, first_max_phonemes=first)
    check_coverage(text, segments)
    assert estimate_phonemes(segments[0].spoken) <= first
    assert all(estimate_phonemes(s.spoken) <= max_phonemes for s in segments)


@PROPERTY
@given(nonblank(st.text(max_size=300)), st.integers(min_value=8, max_value=200))
def test_split_segment_property(text: str, max_chars: int) -> None:
    (segment,) = split_text(text, max_phonemes=510, first_max_phonemes=510)[:1]
    pieces = split_segment(segment, max_chars)
    assert pieces[0].start == segment.start and pieces[-1].end == segment.end
    pos = segment.start
    for piece in pieces:
        assert piece.start >= pos and text[pos : piece.start].strip() == ""
        assert piece.text == text[piece.start : piece.end] and piece.text == piece.text.strip()
        pos = piece.end
    if segment.spoken:
        assert all(len(p.spoken) <= max_chars for p in pieces if len(p.text) > 1)


TOKENS = st.sampled_from(
    [
        "word",
        "river",
        "(",
        ")",
        "!!",
        "🎉",
        "“",
        "”",
        "¿",
        "—",
        ",",
        ";",
        "Dr.",
        "Smith.",
        "$3",
        "billion",
        "3.5%",
        "e.g.",
        "U.S.",
        "…",
        "10:30",
        "a.m.",
        "Jan.",
        "5,",
        "2024",
        "x" * 70,
        "漢字",
        "\n",
        "\n\n",
    ]
)


@PROPERTY
@given(st.lists(TOKENS, min_size=1, max_size=300).map(" ".join).filter(lambda t: t.strip() != ""))
def test_token_soup(text: str) -> None:
    check_all(text)

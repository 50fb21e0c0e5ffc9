"""Tests of engine.normalize: written English to speakable words, minimal cleanup elsewhere."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.normalize import bound_spans, is_british, is_english, normalize

# (input, expected spoken text) for US English.
CASES_US = [
    # cardinals, decimals, negatives
    ("I have 2 apples.", "I have two apples."),
    ("1,234,567 people", "one million two hundred thirty-four thousand five hundred sixty-seven people"),
    ("Pi is 3.14", "Pi is three point one four"),
    ("It fell to -5 overnight", "It fell to minus five overnight"),
    ("a 0.5 chance", "a zero point five chance"),
    ("Agent 007", "Agent zero zero seven"),
    ("version 1.2.3", "version one point two point three"),
    ("mp3 files", "mp three files"),
    ("COVID-19 cases", "COVID nineteen cases"),
    # ordinals
    ("the 1st, 22nd and 103rd", "the first, twenty-second and one hundred third"),
    ("his 11th birthday", "his eleventh birthday"),
    # currency
    ("It costs $3.50.", "It costs three dollars and fifty cents."),
    ("$1", "one dollar"),
    ("$0.99", "ninety-nine cents"),
    ("$1.01", "one dollar and one cent"),
    ("$1,000,000", "one million dollars"),
    ("£5", "five pounds"),
    ("£2.50", "two pounds and fifty pence"),
    ("€20", "twenty euros"),
    ("¥500", "five hundred yen"),
    ("$2.5M budget", "two point five million dollars budget"),
    ("$3 billion deal", "three billion dollars deal"),
    ("$10k", "ten thousand dollars"),
    ("5€ each", "five euros each"),
    ("100 USD", "one hundred US dollars"),
    ("-$5", "minus five dollars"),
    ("50¢", "fifty cents"),
    # years and decades
    ("In 1990 we moved.", "In nineteen ninety we moved."),
    ("since 2005", "since two thousand five"),
    ("in 2024", "in twenty twenty-four"),
    ("in 1905", "in nineteen oh five"),
    ("by 1900", "by nineteen hundred"),
    ("the 1990s", "the nineteen nineties"),
    ("the 2010s", "the twenty tens"),
    ("the '90s", "the nineties"),
    ("in his 40s", "in his forties"),
    ("from 1990–1995", "from nineteen ninety to nineteen ninety-five"),
    # dates
    ("on 2024-01-15", "on January fifteenth, twenty twenty-four"),
    ("on 01/15/2024", "on January fifteenth, twenty twenty-four"),
    ("on 15/01/2024", "on the fifteenth of January, twenty twenty-four"),  # day > 12: unambiguous
    ("on January 5, 2024", "on January fifth, twenty twenty-four"),
    ("on 5 January 2024", "on the fifth of January, twenty twenty-four"),
    ("on Jan. 5", "on January fifth"),
    ("the 4th of July", "the fourth of July"),
    ("in March 1999", "in March nineteen ninety-nine"),
    # times
    ("at 10:30am", "at ten thirty AM"),
    ("at 10:30 a.m. sharp", "at ten thirty AM sharp"),
    ("at 14:05", "at fourteen oh five"),
    ("at 9pm", "at nine PM"),
    ("at 9 p.m.", "at nine PM."),
    ("at 12:00", "at twelve o'clock"),
    ("at 7:05 PM", "at seven oh five PM"),
    # percentages
    ("45% of us", "forty-five percent of us"),
    ("a 3.5% rise", "a three point five percent rise"),
    # units
    ("5 km away", "five kilometers away"),
    ("10kg bag", "ten kilograms bag"),
    ("1 km", "one kilometer"),
    ("3.5 GHz CPU", "three point five gigahertz CPU"),
    ("72°F outside", "seventy-two degrees Fahrenheit outside"),
    ("20°C inside", "twenty degrees Celsius inside"),
    ("100 mph", "one hundred miles per hour"),
    ("2x faster", "two times faster"),
    ("512 MB", "five hundred twelve megabytes"),
    ("He is 5'10\" tall", "He is five feet ten inches tall"),
    ("10-20 km", "ten to twenty kilometers"),
    # fractions
    ("1/2 cup", "one half cup"),
    ("3/4 of it", "three quarters of it"),
    ("2/3 done", "two thirds done"),
    ("1 1/2 hours", "one and a half hours"),
    ("½ cup", "one half cup"),
    ("24/7 service", "twenty-four seven service"),
    # abbreviations
    ("Dr. Smith", "Doctor Smith"),
    ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
    ("Ms. Lee and Prof. Chan", "Miz Lee and Professor Chan"),
    ("St. Paul lived on Elm St.", "Saint Paul lived on Elm Street."),
    ("Martin Luther King Jr. spoke", "Martin Luther King Junior spoke"),
    ("cats vs. dogs", "cats versus dogs"),
    ("apples, pears, etc.", "apples, pears, et cetera."),
    ("fruit, e.g. apples", "fruit, for example apples"),
    ("one thing, i.e. this", "one thing, that is this"),
    ("approx. 5 people", "approximately five people"),
    ("No. 5 is mine", "number five is mine"),
    ("the U.S. economy", "the US economy"),
    ("see p. 5", "see page five"),
    # links
    ("Visit https://example.com/path now", "Visit example dot com slash path now"),
    ("Go to www.example.org.", "Go to example dot org."),
    ("Mail a.b@example.com today", "Mail a dot b at example dot com today"),
    ("see [the docs](https://x.io/a)", "see the docs"),
    # symbols
    ("salt & pepper", "salt and pepper"),
    ("2 + 2 = 4", "two plus two equals four"),
    ("#1 hit", "number one hit"),
    ("we won 3-1", "we won three to one"),
    ("call (555) 123-4567", "call five five five, one two three, four five six seven"),
    # roman numerals
    ("Chapter IV", "Chapter four"),
    ("King Henry VIII", "King Henry the eighth"),
    ("World War II", "World War two"),
    # emoji and decoration
    ("Great job 🎉👍!", "Great job!"),
    ("**bold** and _under_", "bold and under"),
    ("Wait... what?!?!", "Wait… what?!"),
    ("No!!!!!!", "No!"),
    ("Hi\u200b there\ufe0f", "Hi there"),
]


@pytest.mark.parametrize(("text", "expected"), CASES_US)
def test_us_english(text: str, expected: str) -> None:
    assert normalize(text, "en-us") == expected


CASES_GB = [
    ("on 05/01/2024", "on the fifth of January, twenty twenty-four"),
    ("on 2024-01-15", "on the fifteenth of January, twenty twenty-four"),
    ("105 sheep", "one hundred and five sheep"),
    ("£3.50", "three pounds and fifty pence"),
]


@pytest.mark.parametrize(("text", "expected"), CASES_GB)
def test_british_english(text: str, expected: str) -> None:
    assert normalize(text, "en-gb") == expected


def test_us_reads_slash_dates_month_first() -> None:
    assert normalize("05/01/2024", "en-us") == "May first, twenty twenty-four"


NUMERIC = [text for text, _ in CASES_US if re.search(r"\d", text)] + [
    "1,000.25",
    "12345678901234567890",
    "9" * 40,
    "3rd",
    "0",
    "-0.5%",
    "99.99%",
    "$0.00",
    "1st–3rd",
    "x86 and B2B",
    "٣ apples",
    "10:30:15",
    "1e10",
]


@pytest.mark.parametrize("text", NUMERIC)
def test_no_digits_left_in_english(text: str) -> None:
    assert not re.search(r"\d", normalize(text, "en-us"))


@pytest.mark.parametrize(("text", "expected"), CASES_US)
def test_idempotent(text: str, expected: str) -> None:
    once = normalize(text, "en-us")
    assert normalize(once, "en-us") == once


def test_sentence_final_abbreviation_keeps_its_period() -> None:
    assert normalize("It was 5 p.m.", "en-us").endswith("PM.")
    assert normalize("He lives in the U.S.", "en-us") == "He lives in the US."
    assert normalize("the U.S. is big", "en-us") == "the US is big"


def test_plain_words_untouched() -> None:
    text = "It was the best of times, it was the worst of times."
    assert normalize(text) == text


def test_may_and_march_as_verbs_untouched() -> None:
    assert normalize("You may march on.") == "You may march on."


def test_whitespace_collapsed() -> None:
    assert normalize("  a \n\n b\t c  ") == "a b c"


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        ("es", "Hola 😀 mundo... tengo 3 gatos", "Hola mundo… tengo 3 gatos"),
        ("fr-fr", "Il  fait 20°C !!!", "Il fait 20°C!"),
        ("it", "Ciao\u200b  mondo", "Ciao mondo"),
        ("pt-br", "Olá, tudo bem? 👍", "Olá, tudo bem?"),
        ("hi", "नमस्ते दुनिया।", "नमस्ते दुनिया।"),
        ("ja", "こんにちは、世界！", "こんにちは、世界!"),
        ("zh", "你好，世界。", "你好,世界。"),
    ],
)
def test_other_languages_minimal(lang: str, text: str, expected: str) -> None:
    assert normalize(text, lang) == expected


def test_devanagari_marks_survive() -> None:
    text = "मेरा नाम राम है"
    assert normalize(text, "hi") == text


def test_empty() -> None:
    assert normalize("") == ""
    assert normalize("   ") == ""
    assert normalize("🎉🎉") == ""


def test_language_helpers() -> None:
    assert is_english("en") and is_english("en-US") and is_english("en_gb") and is_english("a")
    assert not is_english("es") and not is_english("fr-fr")
    assert is_british("en-gb") and is_british("b") and not is_british("en-us")


def test_bound_spans_cover_multiword_constructs() -> None:
    text = "Dr. Smith paid $3 billion at 10:30 a.m. on Jan. 5 for No. 7."
    spans = [text[a:b] for a, b in bound_spans(text)]
    for expected in ("Dr. Smith", "$3 billion", "10:30 a.m.", "Jan. 5", "No. 7."):
        assert any(expected in s for s in spans), (expected, spans)
    assert bound_spans(text, "es") == []


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_never_crashes_on_anything(text: str) -> None:
    for lang in ("en-us", "en-gb", "es", "ja"):
        out = normalize(text, lang)
        assert isinstance(out, str)
        assert out == out.strip()
        assert "  " not in out


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789.,:-/$%€£ apmkgxs°CF#+&'", max_size=40))
def test_numeric_soup_has_no_digits_left(text: str) -> None:
    assert not re.search(r"\d", normalize(text, "en-us"))

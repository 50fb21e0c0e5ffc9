"""G2P: language codes, misaki with espeak for unknown words, espeak for other languages."""

from __future__ import annotations

import pytest

from engine.exceptions import UnsupportedLanguageError
from engine.g2p import G2PRegistry
from engine.languages import normalize_lang


@pytest.fixture(scope="module")
def g2p() -> G2PRegistry:
    return G2PRegistry()


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("en", "en-us"),
        ("EN_us", "en-us"),
        ("en-GB", "en-gb"),
        ("fr", "fr-fr"),
        ("zh", "cmn"),
        ("pt", "pt-br"),
        (None, "en-us"),
    ],
)
def test_language_codes_are_normalised(given: str | None, canonical: str) -> None:
    assert normalize_lang(given) == canonical


def test_an_unknown_language_lists_the_valid_ones() -> None:
    with pytest.raises(UnsupportedLanguageError) as info:
        normalize_lang("klingon")
    assert "en-us" in info.value.message and "cmn" in info.value.message


def test_unknown_english_words_go_to_espeak(g2p: G2PRegistry) -> None:
    result = g2p("The blorptastic frumious snark.", "en-us")
    words = [w for w, _, _ in result.words]
    assert {"blorptastic", "frumious", "snark"} <= set(words)
    for word, start, end in result.words:
        if word.isalpha():
            assert end > start, word
    assert not result.missing


def test_british_and_american_differ(g2p: G2PRegistry) -> None:
    assert g2p("tomato", "en-us").text != g2p("tomato", "en-gb").text


@pytest.mark.parametrize(
    "lang,text",
    [
        ("es", "Buenos días"),
        ("fr-fr", "Bonjour"),
        ("it", "Ciao a tutti"),
        ("pt-br", "Obrigado"),
        ("hi", "नमस्ते"),
        ("ja", "こんにちは"),
        ("cmn", "你好"),
    ],
)
def test_other_languages_through_espeak(g2p: G2PRegistry, lang: str, text: str) -> None:
    result = g2p(text, lang)
    assert len(result.text) >= 3
    assert not result.missing

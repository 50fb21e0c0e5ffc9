"""Lexicons: entries change exactly their words' phonemes (real G2P), PLS round-trips, IPA checks, linear matching."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.exceptions import InvalidPhonemesError, LexiconError
from engine.g2p import G2PRegistry
from engine.kokoro import load_vocab
from engine.lexicon import Lexicon, LexiconEntry, check_ipa

HERMIONE_IPA = "hɜːmˈaɪəni"


@pytest.fixture(scope="module")
def g2p() -> G2PRegistry:
    return G2PRegistry()


@pytest.fixture(scope="module")
def vocab(assets_dir: Path) -> dict[str, int]:
    return load_vocab(assets_dir / "vocab.json")


def _words(phonemes) -> dict[str, str]:
    return {w: phonemes.text[s:e] for w, s, e in phonemes.words}


def test_an_entry_changes_that_word_and_only_that_word(g2p: G2PRegistry) -> None:
    text = "Hermione read the book about Hermione and Ron."
    plain = g2p(text, "en-us")
    lex = Lexicon([LexiconEntry("Hermione", phonemes=HERMIONE_IPA)])
    changed = g2p(text, "en-us", lex)
    before, after = plain.text.split(" "), changed.text.split(" ")
    assert len(before) == len(after)
    differing = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert differing == [0, 5]
    assert after[0] == HERMIONE_IPA and after[5] == HERMIONE_IPA
    assert [w for w, _, _ in changed.words] == [w for w, _, _ in plain.words]


def test_whole_word_and_case_rules(g2p: G2PRegistry) -> None:
    lex = Lexicon([LexiconEntry("Ron", phonemes="ɹˈɒn", case_sensitive=True)])
    text = "Ron ran, but RON and Ronald did not."
    got = _words(g2p(text, "en-us", lex))
    plain = _words(g2p(text, "en-us"))
    assert got["Ron"] == "ɹˈɒn"
    assert got["RON"] == plain["RON"]  # case-sensitive: other casing untouched
    assert got["Ronald"] == plain["Ronald"]  # whole word: no match inside a longer word
    loose = Lexicon([LexiconEntry("ron", phonemes="ɹˈɒn")])
    assert _words(g2p(text, "en-us", loose))["RON"] == "ɹˈɒn"


def test_phrases_and_aliases(g2p: G2PRegistry) -> None:
    lex = Lexicon(
        [
            LexiconEntry("New York", phonemes="nuː jˈɔːk"),
            LexiconEntry("W3C", alias="World Wide Web Consortium"),
        ]
    )
    spoken = g2p("The W3C met in New York.", "en-us", lex)
    expected = g2p("The World Wide Web Consortium met in New York.", "en-us")
    assert "nuː jˈɔːk" in spoken.text
    assert spoken.text.replace("nuː jˈɔːk", "") == expected.text.replace(
        _words(expected)["New"] + " " + _words(expected)["York"], ""
    )


def test_entries_apply_to_espeak_languages(g2p: G2PRegistry) -> None:
    lex = Lexicon([LexiconEntry("Madrid", phonemes="mˈadɹid")])
    plain = g2p("Vivo en Madrid con mi hermana.", "es")
    got = g2p("Vivo en Madrid con mi hermana.", "es", lex)
    assert "mˈadɹid" in got.text and "mˈadɹid" not in plain.text
    assert plain.text.split()[:2] == got.text.split()[:2] and plain.text.split()[-3:] == got.text.split()[-3:]


def test_longest_match_wins_and_matches_never_overlap() -> None:
    lex = Lexicon(
        [
            LexiconEntry("New", alias="nu"),
            LexiconEntry("New York", alias="big apple"),
            LexiconEntry("York", alias="y"),
        ]
    )
    found = [(m.start, m.end, m.entry.grapheme) for m in lex.matches("New York and York, New.")]
    assert found == [(0, 8, "New York"), (13, 17, "York"), (19, 22, "New")]
    inner = Lexicon([LexiconEntry("colour", alias="color", whole_word=False)])
    assert [(m.start, m.end) for m in inner.matches("Colourful colours")] == [(0, 6), (10, 16)]


def test_digest_covers_only_the_entries_a_text_uses() -> None:
    one = Lexicon([LexiconEntry("Hermione", phonemes=HERMIONE_IPA), LexiconEntry("Ron", phonemes="ɹˈɒn")])
    two = Lexicon([LexiconEntry("Hermione", phonemes=HERMIONE_IPA), LexiconEntry("Ron", phonemes="ɹˈɔn")])
    assert one.version != two.version
    assert one.digest_for("Hermione smiled.") == two.digest_for("Hermione smiled.") != ""
    assert one.digest_for("Ron smiled.") != two.digest_for("Ron smiled.")
    assert one.digest_for("Nobody here.") == ""


def test_bad_ipa_names_each_symbol_and_position(vocab: dict[str, int]) -> None:
    with pytest.raises(InvalidPhonemesError) as info:
        check_ipa("hɜːm∆aɪ§ni", vocab)
    bad = info.value.details["bad_symbols"]
    assert [(b["symbol"], b["position"]) for b in bad] == [("∆", 4), ("§", 7)]
    assert "∆" in info.value.message and "at 4" in info.value.message
    lex = Lexicon([LexiconEntry("ok", phonemes="ˈOkˈA"), LexiconEntry("Zed", phonemes="z€d")])
    with pytest.raises(InvalidPhonemesError) as info:
        lex.validate(vocab)
    assert info.value.details["entry"] == 1 and "Zed" in info.value.message
    assert check_ipa(" " + HERMIONE_IPA + " ", vocab) == HERMIONE_IPA


PLS = """<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
         alphabet="ipa" xml:lang="en-GB">
  <lexeme><grapheme>Hermione</grapheme><phoneme>hɜːmˈaɪəni</phoneme></lexeme>
  <lexeme><grapheme>W3C</grapheme><grapheme>w3c</grapheme><alias>World Wide Web Consortium</alias></lexeme>
</lexicon>
"""


def test_pls_import_and_round_trip() -> None:
    lex = Lexicon.from_pls(PLS, name="hp")
    assert lex.lang == "en-GB"
    assert [(e.grapheme, e.phonemes, e.alias) for e in lex.entries] == [
        ("Hermione", HERMIONE_IPA, None),
        ("W3C", None, "World Wide Web Consortium"),
        ("w3c", None, "World Wide Web Consortium"),
    ]
    flagged = Lexicon(
        [*lex.entries, LexiconEntry("Ron", phonemes="ɹˈɒn", case_sensitive=True, whole_word=False)]
    )
    back = Lexicon.from_pls(flagged.to_pls())
    assert back.entries == flagged.entries and back.version == flagged.version
    assert Lexicon.from_dict(flagged.to_dict()).entries == flagged.entries


@pytest.mark.parametrize(
    "doc",
    [
        '<?xml version="1.0"?><!DOCTYPE lexicon [<!ENTITY a "aaaa">]><lexicon>&a;</lexicon>',
        "<lexicon><lexeme><grapheme>x</grapheme>",
        "<speak/>",
        '<lexicon xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"><lexeme><phoneme>a</phoneme></lexeme></lexicon>',
    ],
)
def test_bad_pls_is_refused(doc: str) -> None:
    with pytest.raises(LexiconError):
        Lexicon.from_pls(doc)


def test_malformed_pls_says_where() -> None:
    with pytest.raises(LexiconError) as info:
        Lexicon.from_pls("<lexicon>\n  <lexeme><grapheme>x</lexeme>\n</lexicon>")
    assert info.value.details["line"] == 2


def test_bad_entries_are_refused() -> None:
    for bad in (
        {"grapheme": "", "alias": "x"},
        {"grapheme": "x"},
        {"grapheme": "x", "alias": "y", "phonemes": "z"},
        {"grapheme": "x" * 101, "alias": "y"},
        {"grapheme": "x", "alias": "y", "colour": "red"},
    ):
        with pytest.raises(LexiconError):
            LexiconEntry.from_dict(bad)


def test_matching_is_linear_on_hostile_input() -> None:
    """Near-miss phrases that start a walk at every word, in-word entries tried at every character,
    and 16,000 matches in one text: each 50,000-character text is applied well under a second."""
    entries = [LexiconEntry(("a " * 11) + f"x{k}", alias="y") for k in range(2000)]
    entries += [LexiconEntry("a" * 99 + "b", alias="z", whole_word=False)]
    entries += [LexiconEntry(f"in{k}", alias="y", whole_word=False) for k in range(199)]
    entries += [LexiconEntry(f"word{k}", phonemes="wˈɜɹd") for k in range(5000)]
    lex = Lexicon(entries)
    texts = {
        "a a a": "a " * 25_000,
        "aaa": "a" * 50_000,
        "words": " ".join(f"word{k % 7000}" for k in range(10_000))[:50_000],
        "in1in1": "in1" * 16_000,
    }
    seconds = {}
    for name, text in texts.items():
        # The best of three: a shared, loaded machine only ever adds time, never takes it away.
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            lex.apply(text)
            runs.append(time.perf_counter() - started)
        seconds[name] = min(runs)
    assert max(seconds.values()) < 1.0, seconds
    assert lex.matches("a " * 25_000) == []
    assert len(lex.matches("in1" * 16_000)) == 16_000

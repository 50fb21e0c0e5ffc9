"""Inline markup: SSML subset and [word](/ipa/) links change what is said, spans still cover the content."""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
import pytest

from engine.exceptions import MarkupError
from engine.markup import parse_markup, say_as

HERMIONE_IPA = "hɜːmˈaɪəni"


def _covered(text: str, masked: str, segments) -> None:
    """Every content character lies in exactly one segment; no markup character is in any."""
    owner = [-1] * len(text)
    for seg in segments:
        assert seg.text == masked[seg.start : seg.end]
        for i in range(seg.start, seg.end):
            if not seg.text[i - seg.start].isspace():
                assert owner[i] == -1
                owner[i] = seg.index
    for i, ch in enumerate(masked):
        if not ch.isspace():
            assert owner[i] != -1, (i, ch)
            assert text[i] == ch or text[i] == "&"  # content kept in place (an entity's first character)


SSML = """<speak>
  <p>Hello <sub alias="World Wide Web Consortium">W3C</sub> people.</p>
  <p><s>I met <phoneme alphabet="ipa" ph="hɜːmˈaɪəni">Hermione</phoneme> today</s>
  <break time="300ms"/> at <say-as interpret-as="telephone">555 1234</say-as> &amp; <emphasis>more</emphasis>.</p>
  <voice name="bm_george">A British voice says this.</voice> And back.
</speak>"""


def test_ssml_segments_cover_the_content_and_say_the_overrides(engine) -> None:
    marked = engine.parse_markup(SSML, "ssml")
    assert len(marked.text) == len(SSML) and "<" not in marked.text
    segments = engine.segments(SSML, markup="ssml")
    _covered(SSML, marked.text, segments)
    spoken = " ".join(s.spoken for s in segments)
    assert "World Wide Web Consortium" in spoken and "W3C" not in spoken
    assert "five five five one two three four" in spoken
    hermione = next(s for s in segments if "Hermione" in s.text)
    assert HERMIONE_IPA in engine.phonemize(hermione).text
    assert hermione.boundary == "sentence" and hermione.pause_after == pytest.approx(0.3)
    assert segments[0].boundary == "paragraph"
    assert [s.voice for s in segments if "British" in s.text] == ["bm_george"]
    assert all(s.voice is None for s in segments if "back" in s.text)


def test_sub_and_phoneme_change_what_is_said(engine) -> None:
    sub = engine.segments(
        '<speak>The <sub alias="World Wide Web Consortium">W3C</sub> met.</speak>', markup="ssml"
    )
    plain = engine.segments("The World Wide Web Consortium met.")
    assert engine.phonemize(sub[0]).text == engine.phonemize(plain[0]).text
    source = "I met [Hermione](/hɜːmˈaɪəni/) today."
    linked = engine.segments(source, markup="ipa-links")
    assert [s.text for s in linked] == ["I met  Hermione" + " " * len("](/hɜːmˈaɪəni/)") + " today."]
    ps = engine.phonemize(linked[0]).text
    before = engine.phonemize(engine.segments("I met Hermione today.")[0]).text
    assert HERMIONE_IPA in ps and HERMIONE_IPA not in before
    assert ps.split()[:2] == before.split()[:2] and ps.split()[-1] == before.split()[-1]


def test_a_break_adds_exactly_its_silence(engine) -> None:
    plain, _ = engine.synthesize("Hello there. How are you?", voice="af_heart")
    broken, chunks = engine.synthesize(
        '<speak>Hello there. <break time="500ms"/> How are you?</speak>', voice="af_heart", markup="ssml"
    )
    assert len(broken) - len(plain) == 12_000  # 0.5 s at 24 kHz
    k = len(chunks[0].samples)
    assert np.all(broken[k - 12_000 : k] == 0.0)


def test_a_voice_switch_renders_with_that_voice(engine) -> None:
    text = '<speak>One voice. <voice name="bm_george">Another voice.</voice></speak>'
    segments = engine.segments(text, markup="ssml")
    _, chunks = engine.synthesize(text, voice="af_heart", markup="ssml")
    direct = engine.synthesize_segment(segments[1], "bm_george", is_last=True)
    assert np.array_equal(chunks[1].samples, direct.samples)
    other = engine.synthesize_segment(dataclasses.replace(segments[1], voice=None), "af_heart", is_last=True)
    assert not np.array_equal(chunks[1].samples, other.samples)


@pytest.mark.parametrize(
    ("text", "line", "column", "says"),
    [
        ("<speak>\n  Hello <break time='500ms'>\n</speak>", 3, 3, "mismatched tag"),
        ("<speak>Hi <prosody rate='slow'>x</prosody></speak>", 1, 11, "<prosody> is not supported"),
        ("<speak>\n<phoneme ph='hɜ§'>Her</phoneme></speak>", 2, 1, "'§'"),
        ("<speak><break time='five'/></speak>", 1, 8, "500ms"),
        ("<speak>Tom & Jerry</speak>", 1, 12, "&amp;"),
        ("Hello <sub>x</sub>", 1, 7, "alias"),
        ("<speak><sub alias='a'><phoneme ph='a'>b</phoneme></sub></speak>", 1, 23, "cannot be inside"),
    ],
)
def test_bad_ssml_names_line_and_column(engine, text: str, line: int, column: int, says: str) -> None:
    with pytest.raises(MarkupError) as info:
        engine.parse_markup(text, "ssml")
    assert (info.value.details["line"], info.value.details["column"]) == (line, column), info.value.message
    assert says in info.value.message
    assert f"line {line}, column {column}" in info.value.message


def test_bad_links_name_line_and_column(engine) -> None:
    with pytest.raises(MarkupError) as info:
        engine.parse_markup("Fine.\nSay [Hermione](/hɜ∆ni/) now.", "ipa-links")
    assert (info.value.details["line"], info.value.details["column"]) == (2, 19)  # the bad symbol itself
    assert info.value.details["bad_symbols"][0]["symbol"] == "∆"
    with pytest.raises(MarkupError) as info:
        engine.parse_markup("Say [Hermione](hɜni) now.", "ipa-links")
    assert info.value.details["column"] == 5


def test_markup_is_off_by_default(engine) -> None:
    text = '<speak>Hello <break time="2s"/> there</speak> [x](/ʌ/)'
    segments = engine.segments(text)
    assert all(s.pause_after == 0 and s.pause_before == 0 for s in segments)
    assert "".join(s.text for s in segments).replace(" ", "") == text.replace(" ", "")
    assert parse_markup(text, "none").text == text


@pytest.mark.parametrize(
    ("kind", "content", "fmt", "words"),
    [
        ("characters", "W3C", "", "W 3 C"),
        ("cardinal", "1,234", "", "one thousand two hundred thirty-four"),
        ("ordinal", "22", "", "twenty-second"),
        ("date", "12/03/2026", "mdy", "December third, 2026"),
        ("date", "2026-12-03", "", "December third, 2026"),
        ("telephone", "(555) 123-4567", "", "five five five one two three four five six seven"),
    ],
)
def test_say_as(kind: str, content: str, fmt: str, words: str) -> None:
    assert say_as(kind, content, fmt, "en-us") == words


def test_markup_parsing_is_linear() -> None:
    body = '<s>Word <break time="10ms"/> <sub alias="x">y</sub> [a](/ʌ/)</s>' * 800
    text = f"<speak>{body}</speak>"
    started = time.perf_counter()
    marked = parse_markup(text, "ssml")
    assert time.perf_counter() - started < 1.0
    assert len(marked.breaks) == 800 and len(marked.text) == len(text) > 50_000
    links = "[word](/wˈɜɹd/) " * 3_500
    started = time.perf_counter()
    assert len(parse_markup(links, "ipa-links").overrides) == 3_500
    assert time.perf_counter() - started < 1.0
    assert re.search(r"[\[\]()/]", parse_markup(links, "ipa-links").text) is None

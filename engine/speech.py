"""The speech-backend interface: a family of voices the engine renders with (Kokoro, Piper, ...).

Each voice engine implements :class:`SpeechBackend` in its own module (``engine.kokoro.KokoroSpeech``,
``engine.piper.PiperSpeech``), beside the model-free :class:`engine.catalog.VoiceBackend` the web
process uses; :class:`engine.Engine` asks its backends in order which one owns a voice spec.
Adding an engine is one module with both classes, listed in ``engine.catalog.BACKENDS`` and
passed to the Engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.chunk import WordTiming
from engine.lexicon import Lexicon

#: What a backend's render gives back: audio pieces, each with word timings relative to it.
Rendered = list[tuple[np.ndarray, list[WordTiming]]]


@dataclass(frozen=True)
class ResolvedVoice:
    """A checked voice request: the backend that speaks it, its voice object, language and speed."""

    spec: str
    lang: str
    speed: float
    sample_rate: int
    backend: SpeechBackend
    voice: Any  # the backend's own voice (a Kokoro style table, a Piper session)
    lexicon: Lexicon | None = None  # pronunciation entries applied to every segment it renders


class SpeechBackend(Protocol):
    """One voice engine, loaded: it resolves voice specs and renders spoken text."""

    def owns(self, voice: str) -> bool:
        """True when the voice spec names one of this backend's voices."""

    def names(self) -> list[str]:
        """Every voice it can speak with, as callers name them."""

    def resolve(self, voice: str, speed: float, lang: str | None) -> ResolvedVoice:
        """Check a voice spec (speed already checked); raise UnknownVoiceError listing what is valid."""

    def render(self, spoken: str, rv: ResolvedVoice) -> Rendered:
        """Audio and word timings for normalised text; never drops a word."""


def spread_timings(words: list[str], weights: list[int], seconds: float) -> list[WordTiming]:
    """Estimated timings: share ``seconds`` between words in proportion to their weights."""
    total = sum(weights)
    if not words or total <= 0:
        return []
    timings, at = [], 0.0
    for word, weight in zip(words, weights, strict=True):
        span = seconds * weight / total
        timings.append(WordTiming(word, round(at, 4), round(at + span, 4)))
        at += span
    return timings

"""The speech-backend interface: a third voice engine plugs in as one class, next to Kokoro and Piper."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import Engine
from engine.speech import Rendered, ResolvedVoice, spread_timings


class Beeps:
    """A stand-in engine: every word is a 0.1 s tone at 16 kHz."""

    rate = 16_000

    def owns(self, voice: str) -> bool:
        return voice.startswith("beep:")

    def names(self) -> list[str]:
        return ["beep:a"]

    def resolve(self, voice: str, speed: float, lang: str | None) -> ResolvedVoice:
        return ResolvedVoice(voice, lang or "en-us", speed, self.rate, self, 440.0)

    def render(self, spoken: str, rv: ResolvedVoice) -> Rendered:
        words = spoken.split()
        t = np.arange(int(0.1 * self.rate * len(words))) / self.rate
        audio = (0.3 * np.sin(2 * np.pi * rv.voice * t)).astype(np.float32)
        return [(audio, spread_timings(words, [1] * len(words), len(audio) / self.rate))]


def test_a_third_backend_speaks_beside_kokoro_and_piper(engine: Any) -> None:
    mixed = Engine(engine.model, engine.voices, backends=[Beeps()])
    assert "beep:a" in mixed.voice_names() and "af_heart" in mixed.voice_names()
    chunks = list(mixed.stream("One two three. Four five.", voice="beep:a"))
    assert [c.sample_rate for c in chunks] == [Beeps.rate] * len(chunks)
    assert [w.word for c in chunks for w in c.words] == ["One", "two", "three.", "Four", "five."]
    assert mixed.check("af_heart").backend is mixed.kokoro  # names no other backend claims are Kokoro's
    assert mixed.check("piper:en_US-joe-medium" if mixed.piper.names() else "af_sky").sample_rate > 0

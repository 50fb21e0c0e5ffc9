"""Piper voices (VITS ONNX models with a ``.onnx.json`` config) behind the engine's interface.

Selected as ``piper:<name>`` (for example ``piper:en_US-joe-medium``). Phonemes come from
espeak-ng through phonemizer, in IPA as Piper was trained on; each phoneme maps to ids via the
config's ``phoneme_id_map``, framed by the start (``^``) and end (``$``) symbols with the pad
(``_``) after every phoneme, which is how Piper models expect their input.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.exceptions import AssetError, InvalidTextError, UnknownVoiceError
from engine.g2p import _espeak_backend, is_speakable, strip_overrides
from engine.kokoro import resolve_providers, session_options
from engine.languages import locale_language, normalize_lang
from engine.speech import Rendered, ResolvedVoice, spread_timings

log = logging.getLogger("spool.engine.piper")

#: Prefix that selects a Piper voice in a voice spec.
PIPER_PREFIX = "piper:"

#: Sample rate assumed for a Piper voice whose config cannot be read (Piper's usual rate).
DEFAULT_RATE = 22_050

_PAD, _BOS, _EOS = "_", "^", "$"


@dataclass(frozen=True)
class PiperConfig:
    """What a Piper voice's ``.onnx.json`` says: rate, espeak voice, phoneme ids and default scales."""

    sample_rate: int
    espeak_voice: str
    phoneme_id_map: dict[str, list[int]]
    noise_scale: float
    length_scale: float
    noise_w: float

    @classmethod
    def load(cls, path: Path) -> PiperConfig:
        """Read a Piper ``.onnx.json`` config."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            inference = data.get("inference", {})
            return cls(
                sample_rate=int(data["audio"]["sample_rate"]),
                espeak_voice=str(data.get("espeak", {}).get("voice", "en-us")),
                phoneme_id_map={str(k): [int(i) for i in v] for k, v in data["phoneme_id_map"].items()},
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AssetError(
                f"Cannot read the Piper config {path}: {exc}. Run `spool models fetch` to restore it."
            ) from exc


class PiperVoice:
    """One Piper model: espeak phonemes in, 16-bit-range float audio out at the voice's rate."""

    def __init__(self, name: str, session: Any, config: PiperConfig) -> None:
        self.name = name
        self.session = session
        self.config = config
        self.sample_rate = config.sample_rate
        self.lang = config.espeak_voice.lower()
        self._inputs = {i.name for i in session.get_inputs()}
        self._backend = None
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, model_path: str | Path, *, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> PiperVoice:
        """Load ``<name>.onnx`` and its ``<name>.onnx.json`` config."""
        import onnxruntime as ort

        model_path = Path(model_path).expanduser()
        config_path = model_path.with_name(model_path.name + ".json")
        if not model_path.is_file() or not config_path.is_file():
            raise AssetError(
                f"Piper voice {model_path} or its config {config_path.name} is missing. "
                "Run `spool models fetch` to install en_US-joe-medium."
            )
        session = ort.InferenceSession(
            str(model_path), sess_options=session_options(threads), providers=resolve_providers(providers)
        )
        return cls(model_path.name[: -len(".onnx")], session, PiperConfig.load(config_path))

    def phonemize(self, text: str) -> str:
        """IPA phonemes for ``text`` from espeak-ng, punctuation kept."""
        with self._lock:
            if self._backend is None:
                import phonemizer

                _espeak_backend(self.config.espeak_voice)  # sets up the bundled espeak library
                self._backend = phonemizer.backend.EspeakBackend(
                    language=self.config.espeak_voice, preserve_punctuation=True, with_stress=True
                )
            out = self._backend.phonemize([text])
        return (out[0] if out else "").strip()

    def ids(self, phonemes: str) -> list[int]:
        """Phoneme ids framed by start/end symbols, with the pad after each phoneme."""
        table = self.config.phoneme_id_map
        pad = table.get(_PAD, [0])
        ids = list(table.get(_BOS, [1])) + list(pad)
        for ch in phonemes:
            if ch in table:
                ids.extend(table[ch])
                ids.extend(pad)
        ids.extend(table.get(_EOS, [2]))
        return ids

    def infer(self, phonemes: str, speed: float) -> np.ndarray:
        """Synthesise phonemes at ``speed`` (1.0 normal) and return float32 audio in [-1, 1]."""
        ids = self.ids(phonemes)
        if len(ids) <= 3:
            raise InvalidTextError("Nothing to synthesise: no phoneme this voice knows.")
        feeds: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array(
                [self.config.noise_scale, self.config.length_scale / speed, self.config.noise_w],
                dtype=np.float32,
            ),
        }
        if "sid" in self._inputs:
            feeds["sid"] = np.array([0], dtype=np.int64)
        with self._lock:
            audio = self.session.run(None, feeds)[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)


class PiperVoices:
    """The Piper voice backend of a catalogue: the ``<assets>/piper/*.onnx`` models that have a config."""

    prefix = PIPER_PREFIX

    def __init__(self, assets_dir: Path) -> None:
        self.directory = Path(assets_dir).expanduser() / "piper"

    def owns(self, voice: str) -> bool:
        """Piper voices are named ``piper:<model>``."""
        return voice.startswith(PIPER_PREFIX)

    def names(self) -> list[str]:
        """Names of the installed Piper voices, as ``piper:<model>``."""
        if not self.directory.is_dir():
            return []
        return sorted(
            PIPER_PREFIX + p.name[: -len(".onnx")]
            for p in self.directory.glob("*.onnx")
            if (self.directory / (p.name + ".json")).is_file()
        )

    def language(self, voice: str) -> str:
        """The language of an installed Piper voice, from its locale (``en_US-joe-medium`` -> ``en-us``)."""
        installed = self.names()
        if voice not in installed:
            raise UnknownVoiceError(
                f"Unknown Piper voice {voice!r}; installed: {', '.join(installed) or 'none'}.", voice=voice
            )
        return locale_language(voice[len(PIPER_PREFIX) :].split("-", 1)[0])

    def sample_rate(self, voice: str) -> int:
        """The rate the voice's config declares (22.05 kHz, Piper's usual, when it cannot be read)."""
        config = self.directory / (voice[len(PIPER_PREFIX) :] + ".onnx.json")
        try:
            return PiperConfig.load(config).sample_rate
        except AssetError:
            log.warning("cannot read the sample rate of %s from %s; assuming %d", voice, config, DEFAULT_RATE)
            return DEFAULT_RATE


class PiperSpeech:
    """The Piper speech backend: ``piper:<model>`` voices, each session loaded on its first use."""

    def __init__(self) -> None:
        self.voices: dict[str, PiperVoice] = {}
        # Models found on disk but not loaded yet: a worker that never speaks with Piper pays
        # neither their load time nor their memory.
        self._paths: dict[str, Path] = {}
        self._options: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(
        self, model_path: str | Path, *, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> str:
        """Make a Piper voice (``<name>.onnx`` + ``.onnx.json``) available; it loads on first use."""
        path = Path(model_path).expanduser()
        if not path.is_file() or not path.with_name(path.name + ".json").is_file():
            raise AssetError(
                f"Piper voice {path} or its .onnx.json config is missing. Run `spool models fetch`."
            )
        name = path.name[: -len(".onnx")]
        self._paths[name] = path
        self._options = {"providers": providers, "threads": threads}
        return PIPER_PREFIX + name

    def owns(self, voice: str) -> bool:
        """Piper voices are named ``piper:<model>``."""
        return voice.strip().lower().startswith(PIPER_PREFIX)

    def names(self) -> list[str]:
        """Every Piper voice known, loaded or not, as ``piper:<model>``."""
        return [PIPER_PREFIX + name for name in sorted({*self.voices, *self._paths})]

    def _voice(self, name: str) -> PiperVoice | None:
        with self._lock:
            if name not in self.voices and name in self._paths:
                self.voices[name] = PiperVoice.load(self._paths[name], **self._options)
            return self.voices.get(name)

    def resolve(self, voice: str, speed: float, lang: str | None) -> ResolvedVoice:
        """The Piper voice, loading it now; UnknownVoiceError names the installed ones."""
        name = voice.strip()[len(PIPER_PREFIX) :]
        piper = self._voice(name)
        if piper is None:
            raise UnknownVoiceError(
                f"Unknown Piper voice {name!r}. Available: {', '.join(self.names()) or 'none installed'} "
                "(`spool models fetch` installs piper:en_US-joe-medium).",
                voice=voice,
            )
        return ResolvedVoice(
            PIPER_PREFIX + name, normalize_lang(lang, piper.lang), speed, piper.sample_rate, self, piper
        )

    def render(self, spoken: str, rv: ResolvedVoice) -> Rendered:
        """espeak phonemes, one VITS call; word timings spread by word length (Piper gives none).

        Lexicon aliases apply; phoneme overrides read as their word (Piper's phoneme set is espeak's own).
        """
        spoken = strip_overrides(rv.lexicon.apply(spoken, rv.lang) if rv.lexicon else spoken)
        audio = rv.voice.infer(rv.voice.phonemize(spoken), rv.speed)
        words = [w for w in spoken.split() if is_speakable(w)]
        return [(audio, spread_timings(words, [len(w) for w in words], len(audio) / rv.sample_rate))]

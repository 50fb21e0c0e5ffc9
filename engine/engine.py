"""The Engine: text in, a stream of clean audio chunks out, through one warm Kokoro session.

Layers, each callable alone: :meth:`Engine.segments` (normalise and split, every character
covered), :meth:`Engine.phonemize` (G2P for one segment), :meth:`Engine.synthesize_segment`
(one chunk with word timings) and :meth:`Engine.stream` / :meth:`Engine.synthesize` (a whole
text). One Engine per process; its model calls are serialised, so sharing it between threads
is safe but never faster (the design runs one process per accelerator instead).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine import assets
from engine.chunk import AudioChunk, WordTiming, clean_speech, lead_samples, pause_seconds, with_pause
from engine.exceptions import AssetError, InvalidTextError
from engine.g2p import G2PRegistry, Phonemes, is_speakable
from engine.kokoro import KokoroModel, KokoroSpeech, load_vocab
from engine.languages import normalize_lang
from engine.piper import PiperSpeech
from engine.segment import DEFAULT_FIRST_MAX_PHONEMES, Segment, split_text
from engine.speech import ResolvedVoice, SpeechBackend
from engine.voices import VoiceStore, check_speed

log = logging.getLogger("spool.engine")

#: Voice used when the caller names none.
DEFAULT_VOICE = "af_heart"

#: Text synthesised once at load so the first real request pays no start-up cost.
WARMUP_TEXT = "Ready."


__all__ = ["DEFAULT_VOICE", "Engine", "ResolvedVoice"]


class Engine:
    """Kokoro-82M (plus other speech backends, Piper's by default) with G2P and segmentation.

    The voice backends are asked in order which owns a voice spec (:class:`engine.speech.SpeechBackend`);
    Kokoro comes last and takes every name no other backend claims.
    """

    def __init__(
        self,
        model: KokoroModel,
        voices: VoiceStore,
        *,
        backends: Sequence[SpeechBackend] = (),
        model_id: str | None = None,
    ) -> None:
        self.model = model
        self.voices = voices
        self.g2p = G2PRegistry()
        self._model_id = model_id
        #: Phoneme budget of the first segment of every text (see ``engine.segment.split_text``).
        self.first_max_phonemes = DEFAULT_FIRST_MAX_PHONEMES
        #: Segments rendered by a speech backend so far (model calls; warm-up included).
        self.segments_rendered = 0
        self.kokoro = KokoroSpeech(model, voices, self.g2p)
        self.piper = next((b for b in backends if isinstance(b, PiperSpeech)), None) or PiperSpeech()
        others = [b for b in backends if b is not self.piper]
        self.backends: list[SpeechBackend] = [*others, self.piper, self.kokoro]

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        voices_path: str | Path,
        *,
        vocab_path: str | Path | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        piper_paths: Sequence[str | Path] = (),
        warmup: bool = True,
    ) -> Engine:
        """Load a Kokoro model file, its voices (directory or ``.npz``/``voices-v1.0.bin``) and warm up."""
        model_path = Path(model_path).expanduser()
        vocab = Path(vocab_path).expanduser() if vocab_path else model_path.with_name(assets.VOCAB_FILE)
        if not vocab.is_file():
            raise AssetError(
                f"No phoneme vocabulary at {vocab}. Run `spool models fetch` (it writes vocab.json) "
                "and pass vocab_path=, or put vocab.json next to the model."
            )
        model = KokoroModel.load(model_path, vocab, providers=providers, threads=threads)
        voices = VoiceStore.load(voices_path)
        model_id = _model_id(model_path)
        engine = cls(model, voices, model_id=model_id)
        for path in piper_paths:
            engine.add_piper(path, providers=providers, threads=threads)
        if warmup:
            engine.warm_up()
        return engine

    @classmethod
    def from_session(
        cls, session: Any, voices: VoiceStore | str | Path, vocab: dict[str, int] | str | Path
    ) -> Engine:
        """Wrap a caller-made ``onnxruntime.InferenceSession`` (any providers and options)."""
        store = voices if isinstance(voices, VoiceStore) else VoiceStore.load(voices)
        table = vocab if isinstance(vocab, dict) else load_vocab(vocab)
        return cls(KokoroModel(session, table), store)

    @classmethod
    def from_assets(
        cls,
        assets_dir: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        model_path: str | Path | None = None,
        voices_path: str | Path | None = None,
        warmup: bool = True,
    ) -> Engine:
        """Load from the cache ``spool models fetch`` fills; ``model_path``/``voices_path`` override it."""
        if model_path is not None and voices_path is not None and not Path(assets_dir).expanduser().is_dir():
            return cls.load(model_path, voices_path, providers=providers, threads=threads, warmup=warmup)
        paths = assets.locate(assets_dir)
        piper_paths = (
            [paths.piper_dir / f"{name}.onnx" for name in paths.piper_voices()] if paths.piper_dir else []
        )
        return cls.load(
            model_path or paths.model,
            voices_path or paths.voices,
            vocab_path=paths.vocab,
            providers=providers,
            threads=threads,
            piper_paths=piper_paths,
            warmup=warmup,
        )

    def add_piper(
        self, model_path: str | Path, *, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> str:
        """Make a Piper voice (``<name>.onnx`` + ``.onnx.json``) available; it loads on first use."""
        return self.piper.add(model_path, providers=providers, threads=threads)

    def warm_up(self) -> float:
        """Run one short sentence so spaCy, espeak and the session's memory are ready; return seconds."""
        started = time.perf_counter()
        voice = DEFAULT_VOICE if DEFAULT_VOICE in self.voices else self.voices.names()[0]
        for _ in self.stream(WARMUP_TEXT, voice=voice):
            pass
        seconds = time.perf_counter() - started
        log.info("engine warm in %.2f s", seconds)
        return seconds

    # -- facts ----------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Sample rate of Kokoro voices (24 kHz); a Piper voice reports its own."""
        return self.model.sample_rate

    @property
    def model_id(self) -> str:
        """A short identifier of the model weights, for cache and checkpoint keys."""
        return self._model_id or "kokoro-session"

    def voice_names(self) -> list[str]:
        """Every voice this engine can speak with: Kokoro names, then the other backends' (``piper:<name>``)."""
        return self.kokoro.names() + [
            name for b in self.backends if b is not self.kokoro for name in b.names()
        ]

    def check(self, voice: str = DEFAULT_VOICE, speed: float = 1.0, lang: str | None = None) -> ResolvedVoice:
        """Validate a voice spec, speed and language; raise a clear error listing what is valid."""
        speed = check_speed(speed)
        if not isinstance(voice, str):
            return self.kokoro.resolve(voice, speed, lang)  # its store says what a voice spec must be
        backend = next(b for b in self.backends if b.owns(voice))
        return backend.resolve(voice, speed, lang)

    # -- layers ---------------------------------------------------------------------------------

    def segments(self, text: str, lang: str | None = None) -> list[Segment]:
        """Normalise and split ``text``; the segments' spans cover every character exactly once."""
        if not isinstance(text, str):
            raise InvalidTextError(f"Text must be a string, got {type(text).__name__}.")
        return split_text(text, lang=normalize_lang(lang), first_max_phonemes=self.first_max_phonemes)

    def phonemize(self, segment: Segment | str, lang: str | None = None) -> Phonemes:
        """Phonemes for one segment's spoken text (misaki for English, espeak otherwise)."""
        spoken = segment.spoken if isinstance(segment, Segment) else segment
        phonemes = self.g2p(spoken, normalize_lang(lang))
        if phonemes.missing:
            log.warning("no phonemes for %s even from espeak", phonemes.missing)
        return phonemes

    def synthesize_segment(
        self,
        segment: Segment,
        voice: str | ResolvedVoice = DEFAULT_VOICE,
        speed: float = 1.0,
        lang: str | None = None,
        *,
        is_last: bool = False,
    ) -> AudioChunk:
        """Render one segment into a chunk: speech, word timings, then the pause its boundary needs."""
        rv = voice if isinstance(voice, ResolvedVoice) else self.check(voice, speed, lang)
        rate = rv.sample_rate
        speech = np.zeros(0, dtype=np.float32)
        words: list[WordTiming] = []
        if segment.spoken.strip() and is_speakable(segment.spoken):
            pieces = rv.backend.render(segment.spoken, rv)
            self.segments_rendered += 1
            parts = []
            offset = 0.0
            for k, (audio, timings) in enumerate(pieces):
                # The model's opening pause is dead air where the chunk opens a text or carries on a
                # phrase; elsewhere it is part of the pause between clauses and sentences.
                cut = lead_samples(audio, rate) if k == 0 and segment.trim_lead else 0
                cleaned = clean_speech(audio[cut:], rate)
                limit = len(cleaned) / rate
                stop = offset + limit
                for w in timings:
                    start = min(max(0.0, w.start - cut / rate), limit)
                    end = max(start, min(max(0.0, w.end - cut / rate), limit))
                    # Rounded to 0.1 ms, never past the end of the speech they lie in.
                    words.append(
                        WordTiming(
                            w.word, min(round(offset + start, 4), stop), min(round(offset + end, 4), stop)
                        )
                    )
                parts.append(cleaned)
                offset += limit
            speech = np.concatenate(parts) if parts else speech
        speech_end = len(speech) / rate
        boundary = "end" if is_last else segment.boundary
        if is_last and boundary != "end":
            boundary = "end"
        samples = with_pause(speech, rate, pause_seconds(boundary, rv.speed))
        return AudioChunk(
            index=segment.index,
            samples=samples,
            sample_rate=rate,
            segment=segment,
            words=words,
            speech_end=speech_end,
            is_last=is_last,
        )

    def stream(
        self,
        text: str,
        voice: str = DEFAULT_VOICE,
        speed: float = 1.0,
        lang: str | None = None,
        start_index: int = 0,
        *,
        segments: Sequence[Segment] | None = None,
    ) -> Iterator[AudioChunk]:
        """Yield one chunk per segment, in order, from segment ``start_index`` (to resume a job).

        ``segments``: the text's segments if the caller already has them (from :meth:`segments`
        with the voice's language), so the text is not split twice.
        """
        rv = self.check(voice, speed, lang)
        segments = list(segments) if segments is not None else self.segments(text, rv.lang)
        last = len(segments) - 1
        for segment in segments[start_index:]:
            yield self.synthesize_segment(segment, rv, is_last=segment.index == last)

    def synthesize(
        self, text: str, voice: str = DEFAULT_VOICE, speed: float = 1.0, lang: str | None = None
    ) -> tuple[np.ndarray, list[AudioChunk]]:
        """Render a whole text; return all samples joined and the chunks they came from."""
        chunks = list(self.stream(text, voice=voice, speed=speed, lang=lang))
        samples = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)
        return samples, chunks


def _model_id(path: Path) -> str:
    """``kokoro-int8-6e742170`` for the pinned model, else a hash of the file's size and first 1 MiB."""
    size = path.stat().st_size
    if path.name == assets.MODEL_FILE and size == assets.MODEL_BYTES:
        return f"kokoro-int8-{assets.MODEL_SHA256[:8]}"
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
    return f"kokoro-{digest.hexdigest()[:12]}"

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
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import assets
from engine.chunk import AudioChunk, WordTiming, clean_speech, lead_samples, pause_seconds, with_pause
from engine.exceptions import AssetError, InvalidTextError, UnknownVoiceError
from engine.g2p import G2PRegistry, Phonemes, is_speakable
from engine.kokoro import MAX_TOKENS, SAMPLES_PER_FRAME, KokoroModel, load_vocab
from engine.languages import normalize_lang
from engine.piper import PIPER_PREFIX, PiperVoice
from engine.segment import DEFAULT_FIRST_MAX_PHONEMES, Segment, renumber, split_segment, split_text
from engine.voices import Voice, VoiceStore, check_speed

log = logging.getLogger("spool.engine")

#: Voice used when the caller names none.
DEFAULT_VOICE = "af_heart"

#: Text synthesised once at load so the first real request pays no start-up cost.
WARMUP_TEXT = "Ready."


@dataclass(frozen=True)
class ResolvedVoice:
    """A checked voice request: which voice (Kokoro table or Piper model), language and speed."""

    spec: str
    lang: str
    speed: float
    sample_rate: int
    kokoro: Voice | None = None
    piper: PiperVoice | None = None


class Engine:
    """Kokoro-82M (plus optional Piper voices) with G2P and segmentation; see the module docstring."""

    def __init__(
        self,
        model: KokoroModel,
        voices: VoiceStore,
        *,
        piper: dict[str, PiperVoice] | None = None,
        model_id: str | None = None,
    ) -> None:
        self.model = model
        self.voices = voices
        self.piper = dict(piper or {})
        self.g2p = G2PRegistry()
        self._model_id = model_id
        #: Phoneme budget of the first segment of every text (see ``engine.segment.split_text``).
        self.first_max_phonemes = DEFAULT_FIRST_MAX_PHONEMES
        # Piper models found on disk but not loaded yet: loaded on first use, so a worker that
        # never speaks with Piper pays neither its load time nor its memory.
        self._piper_paths: dict[str, Path] = {}
        self._piper_options: dict[str, Any] = {}
        self._piper_lock = threading.Lock()

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
        path = Path(model_path).expanduser()
        if not path.is_file() or not path.with_name(path.name + ".json").is_file():
            raise AssetError(
                f"Piper voice {path} or its .onnx.json config is missing. Run `spool models fetch`."
            )
        name = path.name[: -len(".onnx")]
        self._piper_paths[name] = path
        self._piper_options = {"providers": providers, "threads": threads}
        return PIPER_PREFIX + name

    def _piper_voice(self, name: str) -> PiperVoice | None:
        """The loaded Piper voice ``name``, loading it now if it is only known by path."""
        with self._piper_lock:
            if name not in self.piper and name in self._piper_paths:
                self.piper[name] = PiperVoice.load(self._piper_paths[name], **self._piper_options)
            return self.piper.get(name)

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
        """Every voice this engine can speak with: Kokoro names, then ``piper:<name>``."""
        return self.voices.names() + [
            PIPER_PREFIX + name for name in sorted({*self.piper, *self._piper_paths})
        ]

    def check(self, voice: str = DEFAULT_VOICE, speed: float = 1.0, lang: str | None = None) -> ResolvedVoice:
        """Validate a voice spec, speed and language; raise a clear error listing what is valid."""
        speed = check_speed(speed)
        if isinstance(voice, str) and voice.strip().lower().startswith(PIPER_PREFIX):
            name = voice.strip()[len(PIPER_PREFIX) :]
            pv = self._piper_voice(name)
            if pv is None:
                have = (
                    ", ".join(PIPER_PREFIX + n for n in sorted({*self.piper, *self._piper_paths}))
                    or "none installed"
                )
                raise UnknownVoiceError(
                    f"Unknown Piper voice {name!r}. Available: {have} (`spool models fetch` installs "
                    "piper:en_US-joe-medium).",
                    voice=voice,
                )
            return ResolvedVoice(
                PIPER_PREFIX + name, normalize_lang(lang, pv.lang), speed, pv.sample_rate, piper=pv
            )
        resolved = self.voices.resolve(voice)
        return ResolvedVoice(
            resolved.name, normalize_lang(lang, resolved.lang), speed, self.sample_rate, kokoro=resolved
        )

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
            pieces = self._render(segment.spoken, rv)
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
                        WordTiming(w.word, min(round(offset + start, 4), stop), min(round(offset + end, 4), stop))
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

    # -- internals ------------------------------------------------------------------------------

    def _render(self, spoken: str, rv: ResolvedVoice) -> list[tuple[np.ndarray, list[WordTiming]]]:
        """Audio and chunk-relative word timings for spoken text, split further if over 510 tokens."""
        if rv.piper is not None:
            phonemes = rv.piper.phonemize(spoken)
            audio = rv.piper.infer(phonemes, rv.speed)
            words = [w for w in spoken.split() if is_speakable(w)]
            return [(audio, _spread(words, [len(w) for w in words], len(audio) / rv.sample_rate))]
        phonemes = self.g2p(spoken, rv.lang)
        ids, where = self.model.tokenize(phonemes.text)
        if len(ids) > MAX_TOKENS:
            return self._render_split(spoken, rv, len(ids))
        if not ids:
            return []
        if rv.kokoro is None:
            raise UnknownVoiceError(f"{rv.spec!r} is not a Kokoro voice.", voice=rv.spec)
        audio, durations = self.model.infer(ids, rv.kokoro.style_for(len(ids)), rv.speed)
        return [(audio, _word_timings(phonemes, where, durations, len(audio), rv.sample_rate))]

    def _render_split(
        self, spoken: str, rv: ResolvedVoice, n_tokens: int
    ) -> list[tuple[np.ndarray, list[WordTiming]]]:
        """Render text whose phonemes exceed the model's limit in smaller pieces (nothing dropped)."""
        pieces = max(2, -(-n_tokens // (MAX_TOKENS - 60)))
        max_chars = max(8, len(spoken) // pieces)
        whole = Segment(0, 0, len(spoken), spoken, spoken, "end")
        out: list[tuple[np.ndarray, list[WordTiming]]] = []
        for part in renumber(split_segment(whole, max_chars, lang=rv.lang)):
            if part.spoken.strip():
                out.extend(self._render(part.spoken, rv))
        return out


def _word_timings(
    phonemes: Phonemes, where: list[int], durations: np.ndarray | None, n_samples: int, rate: int
) -> list[WordTiming]:
    """Word start/end seconds from per-token durations (frames of 600 samples), or spread evenly."""
    spoken = [(w, s, e) for w, s, e in phonemes.words if is_speakable(w)]
    if durations is None or len(durations) != max(where, default=-1) + 3 or not spoken:
        lengths = [e - s for _, s, e in spoken]
        return _spread([w for w, _, _ in spoken], lengths, n_samples / rate)
    # Frame boundaries: token i (0-based, after the leading pad) spans frames ends[i]..ends[i+1].
    ends = np.concatenate([[0], np.cumsum(durations)]).astype(np.int64)
    seconds_per_frame = SAMPLES_PER_FRAME / rate
    timings = []
    for word, start, end in spoken:
        tokens = [where[i] for i in range(start, min(end, len(where))) if where[i] >= 0]
        if not tokens:
            continue
        first, last = tokens[0] + 1, tokens[-1] + 1  # +1 skips the leading pad token
        timings.append(
            WordTiming(
                word, float(ends[first] * seconds_per_frame), float(ends[last + 1] * seconds_per_frame)
            )
        )
    return timings


def _spread(words: list[str], weights: list[int], seconds: float) -> list[WordTiming]:
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


def _model_id(path: Path) -> str:
    """``kokoro-int8-6e742170`` for the pinned model, else a hash of the file's size and first 1 MiB."""
    size = path.stat().st_size
    if path.name == assets.MODEL_FILE and size == assets.MODEL_BYTES:
        return f"kokoro-int8-{assets.MODEL_SHA256[:8]}"
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
    return f"kokoro-{digest.hexdigest()[:12]}"

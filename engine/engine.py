"""The Engine: text in, a stream of clean audio chunks out, through one warm Kokoro session.

Layers, each callable alone: :meth:`Engine.segments` (normalise and split, every character
covered), :meth:`Engine.phonemize` (G2P for one segment), :meth:`Engine.synthesize_segment`
(one chunk with word timings) and :meth:`Engine.stream` / :meth:`Engine.synthesize` (a whole
text). One Engine per process; its model calls are serialised, so sharing it between threads
is safe but never faster (the design runs one process per accelerator instead).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine import assets
from engine.chunk import AudioChunk, WordTiming, clean_speech, lead_samples, pause_seconds, with_pause
from engine.exceptions import AssetError, InvalidTextError, UnknownVoiceError
from engine.g2p import G2PRegistry, Phonemes, is_speakable
from engine.kokoro import KokoroModel, KokoroSpeech, load_vocab
from engine.languages import normalize_lang
from engine.lexicon import Lexicon
from engine.markup import Markup, markup_segments, parse_markup
from engine.normalize import normalize
from engine.piper import PiperSpeech
from engine.segment import (
    DEFAULT_FIRST_MAX_PHONEMES,
    DEFAULT_MAX_PHONEMES,
    STREAM_BUDGET_GROWTH,
    Segment,
    split_text,
)
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
        #: How fast the budgets of a text's next segments grow (``split_text``'s ``growth``).
        self.budget_growth = STREAM_BUDGET_GROWTH
        #: Opening segments of a stream rendered on the model's fast session (see :meth:`enable_fast_start`).
        self.fast_start_segments = 0
        #: Asked before each such segment: True when the spare cores are idle (None: always).
        self.fast_start_probe: Callable[[], bool] | None = None
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

    def enable_fast_start(
        self, threads: int, segments: int = 2, probe: Callable[[], bool] | None = None
    ) -> bool:
        """Render the first ``segments`` segments of each stream on ``threads`` threads when ``probe()`` allows.

        A listener waits for the first segment only, so it runs on a second session with more
        threads while the other cores are idle; bulk work (books, whole segments past the opening)
        stays on the engine's own session. Returns False when the model cannot (not loaded from a file).
        """
        if not self.model.add_fast_session(threads):
            return False
        self.fast_start_segments = max(0, int(segments))
        self.fast_start_probe = probe
        voice = DEFAULT_VOICE if DEFAULT_VOICE in self.voices else self.voices.names()[0]
        self.model.use_fast = True  # warm the new session too
        try:
            for segment in self.segments(WARMUP_TEXT):
                self.synthesize_segment(segment, voice)
        finally:
            self.model.use_fast = False
        return True

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

    def segments(
        self, text: str, lang: str | None = None, *, markup: str | Markup | None = None
    ) -> list[Segment]:
        """Normalise and split ``text``; the segments' spans cover every character exactly once.

        ``markup``: ``"ssml"`` or ``"ipa-links"`` (or a parsed :class:`engine.markup.Markup`) reads
        inline markup; spans then cover every character of the content, markup excluded.
        """
        if not isinstance(text, str):
            raise InvalidTextError(f"Text must be a string, got {type(text).__name__}.")
        lang = normalize_lang(lang)
        if markup is None or markup == "none":
            return split_text(
                text, lang=lang, first_max_phonemes=self.first_max_phonemes, growth=self.budget_growth
            )
        marked = markup if isinstance(markup, Markup) else self.parse_markup(text, markup)
        if not marked.text.strip():
            raise InvalidTextError("The marked-up text has no words to speak; put text inside <speak>.")
        return markup_segments(
            marked,
            lang=lang,
            split=functools.partial(split_text, growth=self.budget_growth),
            normalize_text=lambda piece: " ".join(normalize(piece, lang).split()),
            first_max_phonemes=self.first_max_phonemes,
            max_phonemes=DEFAULT_MAX_PHONEMES,
        )

    def parse_markup(self, text: str, mode: str) -> Markup:
        """Read inline markup, checking IPA against this model's phoneme vocabulary."""
        return parse_markup(text, mode, vocab=self.model.vocab)

    def phonemize(
        self, segment: Segment | str, lang: str | None = None, lexicon: Lexicon | None = None
    ) -> Phonemes:
        """Phonemes for one segment's spoken text (misaki for English, espeak otherwise), lexicon applied."""
        spoken = segment.spoken if isinstance(segment, Segment) else segment
        phonemes = self.g2p(spoken, normalize_lang(lang), lexicon)
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
        lexicon: Lexicon | None = None,
    ) -> AudioChunk:
        """Render one segment into a chunk: speech, word timings, then the pause its boundary needs."""
        if not isinstance(voice, ResolvedVoice):
            voice = self.check(segment.voice or voice, speed, lang)
        rv = voice if lexicon is None else dataclasses.replace(voice, lexicon=lexicon)
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
        if segment.pause_after:
            samples = np.concatenate([samples, np.zeros(int(round(segment.pause_after * rate)), np.float32)])
        if segment.pause_before:
            lead = int(round(segment.pause_before * rate))
            samples = np.concatenate([np.zeros(lead, np.float32), samples])
            words = [WordTiming(w.word, round(w.start + lead / rate, 4), round(w.end + lead / rate, 4)) for w in words]
            speech_end += lead / rate
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
        lexicon: Lexicon | None = None,
        markup: str | None = None,
    ) -> Iterator[AudioChunk]:
        """Yield one chunk per segment, in order, from segment ``start_index`` (to resume a job).

        ``segments``: the text's segments if the caller already has them (from :meth:`segments`
        with the voice's language), so the text is not split twice. ``lexicon``: pronunciation
        entries applied to every segment; ``markup``: ``"ssml"`` or ``"ipa-links"`` (see :meth:`segments`).
        """
        rv = self.check(voice, speed, lang)
        if lexicon is not None:
            rv = dataclasses.replace(rv, lexicon=lexicon)
        segments = list(segments) if segments is not None else self.segments(text, rv.lang, markup=markup)
        voices = self._switched_voices(segments, rv, speed, lang)
        last = len(segments) - 1
        for segment in segments[start_index:]:
            seg_rv = voices[segment.voice] if segment.voice else rv
            # A job's opening runs on the fast-start session when the probe says the other cores are idle.
            fast = segment.index < self.fast_start_segments and self.model.fast_session is not None
            if fast and self.fast_start_probe is not None:
                fast = self.fast_start_probe()
            self.model.use_fast = fast
            try:
                chunk = self.synthesize_segment(segment, seg_rv, is_last=segment.index == last)
            finally:
                self.model.use_fast = False
            yield chunk

    def _switched_voices(
        self, segments: Sequence[Segment], rv: ResolvedVoice, speed: float, lang: str | None
    ) -> dict[str, ResolvedVoice]:
        """The checked voice of every ``<voice>`` switch; each must keep the stream's sample rate."""
        out: dict[str, ResolvedVoice] = {}
        for name in dict.fromkeys(s.voice for s in segments if s.voice):
            other = self.check(name, speed, lang)
            if other.sample_rate != rv.sample_rate:
                raise UnknownVoiceError(
                    f"<voice name={name!r}> renders at {other.sample_rate} Hz, but {rv.spec} at {rv.sample_rate} Hz; "
                    "one text's voices must share a sample rate (switch between Kokoro voices)."
                )
            out[name] = dataclasses.replace(other, lexicon=rv.lexicon)
        return out

    def synthesize(
        self,
        text: str,
        voice: str = DEFAULT_VOICE,
        speed: float = 1.0,
        lang: str | None = None,
        *,
        lexicon: Lexicon | None = None,
        markup: str | None = None,
    ) -> tuple[np.ndarray, list[AudioChunk]]:
        """Render a whole text; return all samples joined and the chunks they came from."""
        chunks = list(self.stream(text, voice=voice, speed=speed, lang=lang, lexicon=lexicon, markup=markup))
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

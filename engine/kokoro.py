"""The Kokoro-82M ONNX runner: one onnxruntime session, phoneme tokens in, audio and durations out.

The model's contract (measured, see ../shared/notes/kokoro-facts.md): inputs ``tokens`` int64
[1, n+2] with pad id 0 at both ends, ``style`` float32 [1, 256] and ``speed`` float32 [1];
output ``audio`` float32 at 24 kHz. At most 510 phoneme tokens. The per-token durations are
the internal tensor ``/encoder/Cast_output_0``; :meth:`KokoroModel.load` exposes it as a second
output, so every run also says how many 25 ms frames each phoneme took (word timings).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.chunk import WordTiming
from engine.exceptions import AssetError, EngineError, InvalidTextError
from engine.g2p import G2PRegistry, Phonemes, is_speakable
from engine.languages import normalize_lang
from engine.segment import Segment, renumber, split_segment
from engine.speech import Rendered, ResolvedVoice, spread_timings
from engine.voices import VoiceStore

log = logging.getLogger("spool.engine")

#: Output sample rate of Kokoro-82M.
SAMPLE_RATE = 24_000

#: Audio samples per duration frame (sum(durations) * 600 == len(audio)).
SAMPLES_PER_FRAME = 600

#: Most phoneme tokens the model accepts in one run (511 fails inside the encoder).
MAX_TOKENS = 510

#: The internal tensor holding per-token durations, exposed as an extra output.
DURATIONS_TENSOR = "/encoder/Cast_output_0"

#: Operators that only exist in quantised models; none has a CUDA kernel for ConvInteger.
QUANTIZED_OPS = frozenset({"ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM", "DynamicQuantizeLinear"})

#: Provider names accepted in short form.
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Expand short provider names and check onnxruntime has them; default is the CPU."""
    import onnxruntime as ort

    wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in (providers or ["CPUExecutionProvider"])]
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        hint = (
            " Install onnxruntime-gpu (`pip install -e '.[gpu]'`)."
            if "CUDAExecutionProvider" in missing
            else ""
        )
        raise EngineError(
            f"onnxruntime here has no {', '.join(missing)}; available: {', '.join(available)}.{hint}",
            providers=wanted,
        )
    return wanted


def load_vocab(path: str | Path) -> dict[str, int]:
    """Read Kokoro's phoneme vocabulary (``{"vocab": {symbol: id}}`` or a plain mapping)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AssetError(
            f"Cannot read the phoneme vocabulary {path}: {exc}. Run `spool models fetch` to restore it."
        ) from exc
    vocab = data.get("vocab", data) if isinstance(data, dict) else None
    if not isinstance(vocab, dict) or not vocab:
        raise AssetError(f"{path} is not a Kokoro vocabulary (expected {{'vocab': {{symbol: id}}}}).")
    return {str(k): int(v) for k, v in vocab.items()}


def session_options(threads: int | None) -> Any:
    """onnxruntime options: ``threads`` intra-op threads, sequential execution, arena kept on.

    The memory arena stays on: turning it off halves speed on this model (measured).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Input lengths change with every segment, so a memory pattern planned for one run does not fit
    # the next; without it peak memory is about 80 MB lower at the same speed (measured).
    opts.enable_mem_pattern = False
    return opts


def timed_path(model_path: Path) -> Path:
    """Where the copy of a model with the durations output is kept: ``<name>.durations.onnx`` beside it."""
    return model_path.with_name(model_path.stem + ".durations.onnx")


def prepare_timed_model(model_path: str | Path) -> Path | None:
    """Write the durations-exposing copy of a model beside it (once); None if that is impossible.

    Loading the copy from a file costs about 125 MB less peak memory than patching the model in
    memory at every start (measured: 206 MB vs 333 MB resident after the session is built).
    """
    model_path = Path(model_path)
    target = timed_path(model_path)
    if target.is_file() and target.stat().st_mtime >= model_path.stat().st_mtime:
        return target
    source, has_durations, _ = _with_durations_output(model_path)
    if not has_durations or not isinstance(source, bytes):
        return None
    tmp = target.with_name(target.name + ".part")
    try:
        tmp.write_bytes(source)
        tmp.replace(target)
    except OSError as exc:
        log.info("cannot write %s (%s): the model will be patched in memory at each load", target, exc)
        return None
    return target


def _with_durations_output(model_path: Path) -> tuple[bytes | str, bool, bool]:
    """Return the model (bytes if patched) with the durations tensor exposed, plus flags.

    Flags: whether durations are available, whether the model is quantised.
    """
    import onnx

    try:
        model = onnx.load(str(model_path))
    except Exception as exc:
        raise AssetError(
            f"Cannot read the ONNX model {model_path}: {exc}. Run `spool models fetch` or pass a valid "
            "kokoro-v1.0.onnx."
        ) from exc
    quantized = any(node.op_type in QUANTIZED_OPS for node in model.graph.node)
    outputs = {o.name for o in model.graph.output}
    if DURATIONS_TENSOR in outputs:
        return str(model_path), True, quantized
    produced = any(DURATIONS_TENSOR in node.output for node in model.graph.node)
    if not produced:
        log.warning("model %s has no %s tensor: word timings will be estimated", model_path, DURATIONS_TENSOR)
        return str(model_path), False, quantized
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(DURATIONS_TENSOR, onnx.TensorProto.INT64, None)
    )
    return model.SerializeToString(), True, quantized


def _is_quantized(model_path: Path) -> bool:
    """True when the model file names an int8 operator (scanned in 1 MiB blocks, weights never parsed)."""
    needles = [op.encode() for op in QUANTIZED_OPS]
    tail = b""
    with open(model_path, "rb") as fh:
        while block := fh.read(1 << 20):
            window = tail + block
            if any(n in window for n in needles):
                return True
            tail = block[-32:]
    return False


class KokoroModel:
    """A Kokoro-82M session and its vocabulary; ``infer`` is serialised so one model never runs twice at once."""

    sample_rate = SAMPLE_RATE

    def __init__(self, session: Any, vocab: Mapping[str, int], *, quantized: bool | None = None) -> None:
        self.session = session
        self.vocab = dict(vocab)
        names = {i.name for i in session.get_inputs()}
        if not {"tokens", "style", "speed"} <= names:
            raise AssetError(
                f"This ONNX model takes inputs {sorted(names)}, not Kokoro's tokens/style/speed: "
                "pass a Kokoro-82M v1.0 model."
            )
        self.speed_dtype = next(
            np.int32 if "int" in i.type else np.float32 for i in session.get_inputs() if i.name == "speed"
        )
        outputs = [o.name for o in session.get_outputs()]
        self._outputs = outputs[:1] + ([DURATIONS_TENSOR] if DURATIONS_TENSOR in outputs else [])
        self.has_durations = DURATIONS_TENSOR in outputs
        self.providers = list(session.get_providers())
        self.quantized = quantized
        self._lock = threading.Lock()
        #: A second session with more intra-op threads, for a listener's opening segments (see
        #: :meth:`add_fast_session`); :attr:`use_fast` makes the next calls run on it.
        self.fast_session: Any | None = None
        self.use_fast = False
        self._source: bytes | str | None = None
        self._wanted: list[str] = []

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        vocab_path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> KokoroModel:
        """Build the session from a model file, exposing the durations output."""
        import onnxruntime as ort

        model_path = Path(model_path).expanduser()
        if not model_path.is_file():
            raise AssetError(f"No model at {model_path}. Run `spool models fetch` or give the right path.")
        wanted = resolve_providers(providers)
        timed = timed_path(model_path)
        if timed.is_file() and timed.stat().st_mtime >= model_path.stat().st_mtime:
            source: bytes | str = str(timed)
            quantized = "CUDAExecutionProvider" in wanted and _is_quantized(timed)
        else:
            source, _, quantized = _with_durations_output(model_path)
        if quantized and "CUDAExecutionProvider" in wanted:
            # ConvInteger has no CUDA kernel: the session would silently fall back to the CPU for
            # most of the decoder, slower than the CPU alone.
            raise EngineError(
                f"{model_path.name} is the int8 model, which cannot run on CUDA (ConvInteger has no CUDA "
                "kernel). Use a float model such as Kokoro's own kokoro-v1.0.onnx (--model PATH)."
            )
        session = ort.InferenceSession(source, sess_options=session_options(threads), providers=wanted)
        model = cls(session, load_vocab(vocab_path), quantized=quantized)
        model._source, model._wanted = source, list(wanted)
        return model

    def add_fast_session(self, threads: int) -> bool:
        """Build a second session of the same model with ``threads`` intra-op threads; False if it cannot.

        Only a model loaded from a file (:meth:`load`) can; the weights are read a second time
        (about 160 MB more memory, measured).
        """
        import onnxruntime as ort

        if self._source is None or threads < 2:
            return False
        self.fast_session = ort.InferenceSession(
            self._source, sess_options=session_options(threads), providers=self._wanted
        )
        return True

    def tokenize(self, phonemes: str) -> tuple[list[int], list[int]]:
        """Map phonemes to token ids, skipping symbols not in the vocabulary.

        Returns the ids and, for each character of ``phonemes``, the index of its token (or -1).
        """
        ids: list[int] = []
        where: list[int] = []
        for ch in phonemes:
            tid = self.vocab.get(ch)
            if tid is None:
                where.append(-1)
                continue
            where.append(len(ids))
            ids.append(tid)
        return ids, where

    def infer(
        self, ids: Sequence[int], style: np.ndarray, speed: float
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the model on up to 510 token ids; return audio and per-token durations (pads included)."""
        if not ids:
            raise InvalidTextError("Nothing to synthesise: the phoneme sequence is empty.")
        if len(ids) > MAX_TOKENS:
            raise InvalidTextError(
                f"{len(ids)} phoneme tokens exceed the model's limit of {MAX_TOKENS}; split the text."
            )
        tokens = np.array([[0, *ids, 0]], dtype=np.int64)
        feeds = {
            "tokens": tokens,
            "style": np.asarray(style, dtype=np.float32).reshape(1, -1),
            "speed": np.array([speed], dtype=self.speed_dtype),
        }
        with self._lock:
            session = self.fast_session if self.use_fast and self.fast_session is not None else self.session
            result = session.run(self._outputs, feeds)
        audio = np.asarray(result[0], dtype=np.float32).reshape(-1)
        durations = np.asarray(result[1]).reshape(-1) if len(result) > 1 else None
        return audio, durations


class KokoroVoices:
    """The Kokoro voice backend of a catalogue: the voice tables of ``<assets>/voices``, read on first use."""

    prefix = ""

    def __init__(self, assets_dir: Path) -> None:
        self.directory = Path(assets_dir).expanduser() / "voices"
        self._store: VoiceStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> VoiceStore:
        """The Kokoro voice tables (about 28 MB for all 54 voices)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = VoiceStore.load(self.directory)
        return self._store

    def owns(self, voice: str) -> bool:
        """Every voice no other backend claims is a Kokoro name or blend."""
        return True

    def names(self) -> list[str]:
        """The installed Kokoro voices (blends of them are accepted too)."""
        return self.store.names()

    def language(self, voice: str) -> str:
        """The language of a voice or blend (its heaviest component's); raises UnknownVoiceError."""
        return self.store.resolve(voice).lang

    def sample_rate(self, voice: str) -> int:
        """Every Kokoro voice renders at 24 kHz."""
        return SAMPLE_RATE


class KokoroSpeech:
    """The Kokoro speech backend: misaki/espeak G2P, one model call per segment, timings from durations."""

    def __init__(self, model: KokoroModel, voices: VoiceStore, g2p: G2PRegistry) -> None:
        self.model = model
        self.voices = voices
        self.g2p = g2p

    def owns(self, voice: str) -> bool:
        """Every voice no other backend claims is a Kokoro name or blend."""
        return True

    def names(self) -> list[str]:
        """The loaded Kokoro voices (blends of them are accepted too)."""
        return self.voices.names()

    def resolve(self, voice: str, speed: float, lang: str | None) -> ResolvedVoice:
        """A Kokoro voice or blend; UnknownVoiceError / InvalidVoiceSpecError say what is valid."""
        resolved = self.voices.resolve(voice)
        return ResolvedVoice(
            resolved.name, normalize_lang(lang, resolved.lang), speed, self.model.sample_rate, self, resolved
        )

    def render(self, spoken: str, rv: ResolvedVoice) -> Rendered:
        """Audio and word timings for spoken text, split further if over the model's 510 tokens."""
        phonemes = self.g2p(spoken, rv.lang, rv.lexicon)
        ids, where = self.model.tokenize(phonemes.text)
        if len(ids) > MAX_TOKENS:
            return self._render_split(spoken, rv, len(ids))
        if not ids:
            return []
        audio, durations = self.model.infer(ids, rv.voice.style_for(len(ids)), rv.speed)
        return [(audio, word_timings(phonemes, where, durations, len(audio), rv.sample_rate))]

    def _render_split(self, spoken: str, rv: ResolvedVoice, n_tokens: int) -> Rendered:
        """Render text whose phonemes exceed the model's limit in smaller pieces (nothing dropped)."""
        pieces = max(2, -(-n_tokens // (MAX_TOKENS - 60)))
        max_chars = max(8, len(spoken) // pieces)
        whole = Segment(0, 0, len(spoken), spoken, spoken, "end")
        out: Rendered = []
        for part in renumber(split_segment(whole, max_chars, lang=rv.lang)):
            if part.spoken.strip():
                out.extend(self.render(part.spoken, rv))
        return out


def word_timings(
    phonemes: Phonemes, where: list[int], durations: np.ndarray | None, n_samples: int, rate: int
) -> list[WordTiming]:
    """Word start/end seconds from per-token durations (frames of 600 samples), or spread evenly."""
    spoken = [(w, s, e) for w, s, e in phonemes.words if is_speakable(w)]
    if durations is None or len(durations) != max(where, default=-1) + 3 or not spoken:
        lengths = [e - s for _, s, e in spoken]
        return spread_timings([w for w, _, _ in spoken], lengths, n_samples / rate)
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

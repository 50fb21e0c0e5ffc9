"""Kokoro voices: loading style tables, resolving names and weighted blends, speed limits.

A Kokoro voice is a float32 table of 510 style vectors (one per phoneme count),
each 256 wide. Voices come as a directory of raw ``.bin`` files (the npm
``kokoro-js`` layout) or ``.npy`` files, or as one ``.npz`` archive such as the
standard ``voices-v1.0.bin``.
"""

from __future__ import annotations

import difflib
import math
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np

from engine.exceptions import (
    AssetError,
    InvalidSpeedError,
    InvalidVoiceSpecError,
    UnknownVoiceError,
    UnsupportedLanguageError,
)
from engine.languages import LANGUAGE_BY_PREFIX, LANGUAGE_NAMES

#: Shape of one voice's style table: one 256-wide style row per phoneme count (1..510).
VOICE_SHAPE: tuple[int, int] = (510, 256)

#: Size of a raw little-endian float32 voice file.
VOICE_FILE_BYTES = VOICE_SHAPE[0] * VOICE_SHAPE[1] * 4

#: Gender of a voice, from the second letter of its name.
GENDER_BY_LETTER: dict[str, str] = {"f": "female", "m": "male"}

#: Slowest and fastest speed accepted (inclusive); 1.0 is the voice's natural pace.
SPEED_RANGE: tuple[float, float] = (0.5, 2.0)

#: The form a blend takes, quoted in error messages.
BLEND_FORM = "name, name(weight)+name(weight) or name+name, e.g. af_bella(2)+af_sky(1)"

#: Longest voice spec accepted, in characters (a blend of many voices fits in far less).
MAX_VOICE_SPEC_CHARS = 300

#: Characters that cannot appear in a voice name.
_NOT_IN_NAME = frozenset("()+")


@dataclass(frozen=True, eq=False)
class Voice:
    """A resolved voice or blend: its style table, language and normalised components."""

    name: str
    style: np.ndarray
    lang: str
    components: tuple[tuple[str, float], ...]

    @property
    def is_blend(self) -> bool:
        """True when more than one voice is mixed."""
        return len(self.components) > 1

    def style_for(self, n_phonemes: int) -> np.ndarray:
        """Return the (1, 256) style row Kokoro uses for a sequence of ``n_phonemes`` tokens."""
        row = min(max(int(n_phonemes) - 1, 0), self.style.shape[0] - 1)
        return self.style[row : row + 1]


@dataclass(frozen=True)
class VoiceInfo:
    """What ``spool voices`` shows about one voice."""

    name: str
    language: str
    language_name: str
    gender: str
    display_name: str


def lang_for_voice(name: str) -> str:
    """Return the language code of a Kokoro voice from the first letter of its name (``af_heart`` -> en-us)."""
    prefix = name[:1].lower()
    if prefix not in LANGUAGE_BY_PREFIX:
        letters = ", ".join(f"{k} ({v})" for k, v in LANGUAGE_BY_PREFIX.items())
        raise UnsupportedLanguageError(
            f"Cannot tell the language of voice {name!r}: a voice name starts with a language letter "
            f"({letters}); rename the voice file, e.g. 'af_{name}', or pass the language explicitly.",
            voice=name,
        )
    return LANGUAGE_BY_PREFIX[prefix]


def voice_info(name: str) -> VoiceInfo:
    """Describe a voice by name: language, gender (second letter) and a display name."""
    language = lang_for_voice(name)
    gender = GENDER_BY_LETTER.get(name[1:2].lower(), "unknown")
    base = name.split("_", 1)[1] if "_" in name else name
    display = " ".join(part.capitalize() for part in re.split(r"[_\-]+", base) if part)
    return VoiceInfo(name, language, LANGUAGE_NAMES[language], gender, display or name)


def check_speed(speed: object) -> float:
    """Return ``speed`` as a float if it is a finite number in 0.5..2.0, else raise InvalidSpeedError."""
    low, high = SPEED_RANGE
    if isinstance(speed, bool) or not isinstance(speed, Real):
        raise InvalidSpeedError(
            f"Speed must be a number from {low} to {high} (1.0 is normal), got {speed!r}.", speed=repr(speed)
        )
    value = float(speed)
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidSpeedError(
            f"Speed {speed!r} is out of range: use a number from {low} to {high} (1.0 is normal).",
            speed=repr(speed),
        )
    return value


def _parse_weight(text: str, spec: str) -> float:
    """Parse one blend weight; it must be a finite number above zero."""
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight) or weight <= 0:
        raise InvalidVoiceSpecError(
            f"Bad weight {text!r} in voice {spec!r}: weights are positive numbers. Use {BLEND_FORM}.",
            voice=spec,
        )
    return weight


def parse_blend(spec: str) -> tuple[tuple[str, float], ...]:
    """Parse ``af_bella(2)+af_sky(1)`` into ((name, weight), ...) with weights summing to 1."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidVoiceSpecError(f"No voice given: use {BLEND_FORM}.", voice=repr(spec))
    if len(spec) > MAX_VOICE_SPEC_CHARS:
        raise InvalidVoiceSpecError(
            f"The voice spec is {len(spec):,} characters; the limit is {MAX_VOICE_SPEC_CHARS}. Use {BLEND_FORM}.",
            voice=spec[:100],
        )
    weights: dict[str, float] = {}
    for part in spec.split("+"):
        # Read by hand, not by a pattern: one pass, so hostile specs cost linear time.
        name, paren, rest = part.strip().partition("(")
        name = name.strip()
        weight_text = None
        if paren:
            weight_text = rest[:-1] if rest.endswith(")") else None
            if weight_text is None or "(" in weight_text or ")" in weight_text:
                name = ""  # unbalanced parentheses: refused below
        if not name or _NOT_IN_NAME & set(name) or any(ch.isspace() for ch in name):
            raise InvalidVoiceSpecError(
                f"Cannot read {part.strip()[:100]!r} in voice {spec!r}: use {BLEND_FORM}.", voice=spec
            )
        weight = 1.0 if weight_text is None else _parse_weight(weight_text.strip(), spec)
        weights[name] = weights.get(name, 0.0) + weight  # a voice named twice adds up
    total = sum(weights.values())
    return tuple((name, weight / total) for name, weight in weights.items())


def _format_weight(weight: float) -> str:
    """Render a normalised weight compactly (0.6667, 0.5)."""
    return f"{weight:.4f}".rstrip("0").rstrip(".")


class VoiceStore:
    """All style tables of a voice pack, by name."""

    def __init__(self, voices: Mapping[str, np.ndarray], *, source: str = "voices") -> None:
        self.source = source
        self._voices: dict[str, np.ndarray] = {}
        for name, table in voices.items():
            self._voices[name] = _as_style_table(table, f"{source}:{name}")
        if not self._voices:
            raise AssetError(
                f"No voices found in {source}. Run `spool models fetch` to download the 54 Kokoro voices, "
                "or point to a directory of .bin/.npy voice files or a voices-v1.0.bin/.npz archive."
            )

    @classmethod
    def load(cls, path: str | Path) -> VoiceStore:
        """Load a directory of ``.bin``/``.npy`` voices or an ``.npz`` archive (such as ``voices-v1.0.bin``)."""
        path = Path(path).expanduser()
        if path.is_dir():
            return cls(_load_directory(path), source=str(path))
        if path.is_file():
            return cls(_load_archive(path), source=str(path))
        raise AssetError(
            f"Voices not found at {path}. Run `spool models fetch` to download them, or pass the path "
            "of a directory of .bin/.npy voice files or of a voices-v1.0.bin/.npz archive.",
            path=str(path),
        )

    def names(self) -> list[str]:
        """Return every voice name, sorted."""
        return sorted(self._voices)

    def __contains__(self, name: object) -> bool:
        return name in self._voices

    def __len__(self) -> int:
        return len(self._voices)

    def get(self, name: str) -> np.ndarray:
        """Return the (510, 256) float32 style table of one voice."""
        try:
            return self._voices[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def resolve(self, spec: str) -> Voice:
        """Resolve a voice name or blend spec into a :class:`Voice` (language of the heaviest component)."""
        components = parse_blend(spec)
        for name, _ in components:
            if name not in self._voices:
                raise self._unknown(name, spec)
        if len(components) == 1:
            name = components[0][0]
            return Voice(name, self._voices[name], lang_for_voice(name), ((name, 1.0),))
        style = np.zeros(VOICE_SHAPE, dtype=np.float64)
        for name, weight in components:
            style += weight * self._voices[name]
        # The first-listed component wins a tie, because max() keeps the first maximum.
        heaviest = max(components, key=lambda item: item[1])[0]
        label = "+".join(f"{name}({_format_weight(weight)})" for name, weight in components)
        return Voice(label, style.astype(np.float32), lang_for_voice(heaviest), components)

    def info(self) -> list[VoiceInfo]:
        """Describe every voice whose name carries a language letter."""
        described = []
        for name in self.names():
            try:
                described.append(voice_info(name))
            except UnsupportedLanguageError:
                continue
        return described

    def _unknown(self, name: object, spec: str | None = None) -> UnknownVoiceError:
        """Build the error for a name that is not in the store, suggesting close matches."""
        names = self.names()
        where = f" in {spec!r}" if spec and spec != name else ""
        close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.6)
        if close:
            hint = f"Did you mean {', '.join(close)}? Run `spool voices` to list all {len(names)} voices."
        else:
            hint = f"Valid voices: {', '.join(names)}."
        return UnknownVoiceError(f"Unknown voice {name!r}{where}. {hint}", voice=str(name), suggestions=close)


def _as_style_table(table: object, where: str) -> np.ndarray:
    """Validate one voice array and return it as a contiguous (510, 256) float32 table."""
    array = np.asarray(table)
    if array.shape == (VOICE_SHAPE[0], 1, VOICE_SHAPE[1]):
        array = array.reshape(VOICE_SHAPE)
    if array.shape != VOICE_SHAPE or not np.issubdtype(array.dtype, np.floating):
        raise AssetError(
            f"Voice {where} has shape {array.shape} and dtype {array.dtype}, expected float32 "
            f"{VOICE_SHAPE} or (510, 1, 256). Replace it with a Kokoro v1.0 voice (`spool models fetch`).",
            voice=where,
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise AssetError(
            f"Voice {where} contains NaN or infinite values; it is corrupt. Run `spool models fetch`."
        )
    return array


def read_voice_file(path: Path) -> np.ndarray:
    """Read one raw ``.bin`` (little-endian float32) or ``.npy`` voice file."""
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise AssetError(f"Cannot read voice {path}: {exc}. Replace it (`spool models fetch`).") from exc
    size = path.stat().st_size
    if size != VOICE_FILE_BYTES:
        raise AssetError(
            f"Voice file {path} is {size:,} bytes, expected {VOICE_FILE_BYTES:,} (raw float32 510x256); "
            "it is truncated or not a Kokoro voice. Run `spool models fetch` to restore it.",
            path=str(path),
        )
    return np.fromfile(path, dtype="<f4").reshape(VOICE_SHAPE)


def _load_directory(directory: Path) -> dict[str, np.ndarray]:
    """Read every voice file in a directory, keyed by file stem."""
    voices: dict[str, np.ndarray] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in (".bin", ".npy") and path.is_file() and not path.name.startswith("."):
            voices[path.stem] = read_voice_file(path)
    return voices


def _load_archive(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` archive of name -> (510, 1, 256) arrays (``voices-v1.0.bin`` is one)."""
    if path.suffix == ".npy" or (path.suffix == ".bin" and not zipfile.is_zipfile(path)):
        return {path.stem: read_voice_file(path)}  # a single voice file passed on its own
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AssetError(
            f"Cannot read voices archive {path}: {exc}. Expected an .npz of name -> (510, 1, 256) float32 "
            "(like voices-v1.0.bin); run `spool models fetch` for the standard voices.",
            path=str(path),
        ) from exc


def available_languages(names: Iterable[str]) -> list[str]:
    """Return the languages covered by these voice names, in a stable order."""
    langs = {LANGUAGE_BY_PREFIX[n[:1]] for n in names if n[:1] in LANGUAGE_BY_PREFIX}
    return [lang for lang in LANGUAGE_BY_PREFIX.values() if lang in langs]

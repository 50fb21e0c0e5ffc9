"""What an assets directory can speak, known without loading a model: its voices, their languages and rates.

Each voice engine implements :class:`VoiceBackend` in its own module (Kokoro in ``engine.kokoro``,
Piper in ``engine.piper``) and is listed in :data:`BACKENDS`; the catalogue asks them in order and
the first that owns a voice name answers for it. The web process validates requests with this, so
a bad voice is a 400 at submission instead of a failed job later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from engine.exceptions import UnknownVoiceError
from engine.kokoro import KokoroVoices
from engine.piper import PiperVoices


class VoiceBackend(Protocol):
    """One voice engine's model-free facts: which names are its own, which are installed, language, rate."""

    prefix: str

    def owns(self, voice: str) -> bool:
        """True when the (stripped) voice name belongs to this backend."""
        ...

    def names(self) -> list[str]:
        """The installed voices, as a request names them."""
        ...

    def language(self, voice: str) -> str:
        """The canonical language of a voice; raises UnknownVoiceError when it is not installed."""
        ...

    def sample_rate(self, voice: str) -> int:
        """The rate the voice renders at, in Hz."""
        ...


#: OpenAI's voice names and the installed Kokoro voice that speaks for each: the same name where Kokoro
#: has one (alloy, echo, fable, nova, onyx), else a voice of the same gender and accent. Used by the
#: OpenAI-compatible route; a request may name either.
OPENAI_VOICES: dict[str, str] = {
    "alloy": "af_alloy",
    "ash": "am_adam",
    "ballad": "bm_lewis",
    "cedar": "am_fenrir",
    "coral": "af_heart",
    "echo": "am_echo",
    "fable": "bm_fable",
    "marin": "af_kore",
    "nova": "af_nova",
    "onyx": "am_onyx",
    "sage": "af_sarah",
    "shimmer": "af_bella",
    "verse": "am_michael",
}


def openai_voice(name: object) -> str | None:
    """The Kokoro voice behind an OpenAI voice name (any case), or None when it is not one."""
    return OPENAI_VOICES.get(name.strip().lower()) if isinstance(name, str) else None


#: Backends in the order they are asked; Kokoro, last, owns every name the others do not.
BACKENDS: tuple[type, ...] = (PiperVoices, KokoroVoices)


class VoiceCatalog:
    """The voices of an assets directory, over every backend (each reads its files on first use)."""

    def __init__(self, assets_dir: str | Path) -> None:
        self.assets_dir = Path(assets_dir).expanduser()
        self.backends: list[VoiceBackend] = [backend(self.assets_dir) for backend in BACKENDS]
        self.kokoro = next(b for b in self.backends if isinstance(b, KokoroVoices))

    @property
    def store(self):  # type: ignore[no-untyped-def]
        """The Kokoro voice tables (loaded now if they are not yet: the web's warm-up calls this)."""
        return self.kokoro.store

    def backend(self, voice: str) -> VoiceBackend:
        """The backend that answers for a voice name."""
        return next(b for b in self.backends if b.owns(voice))

    def piper_voices(self) -> list[str]:
        """Names of the installed Piper voices, as ``piper:<model>``."""
        return [name for b in self.backends if isinstance(b, PiperVoices) for name in b.names()]

    def voice_names(self) -> list[str]:
        """Every voice a request may name, Kokoro's first (blends of Kokoro voices are accepted too)."""
        return [name for b in reversed(self.backends) for name in b.names()]

    def check_voice(self, voice: object) -> tuple[str, str]:
        """Validate a voice name or blend; return (the voice as given, stripped; its language)."""
        if not isinstance(voice, str) or not voice.strip():
            raise UnknownVoiceError(
                "Voice must be a name such as 'af_heart' or a blend such as 'af_bella(2)+af_sky(1)'.",
                voice=repr(voice),
            )
        voice = voice.strip()
        return voice, self.backend(voice).language(voice)

    def sample_rate(self, voice: str) -> int:
        """The rate ``voice`` renders at (its backend's)."""
        return self.backend(voice.strip()).sample_rate(voice.strip())

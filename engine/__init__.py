"""Spool's engine: text to segments to phonemes to audio chunks, with Kokoro-82M on onnxruntime.

A pure library: no web, queue or storage imports, no environment reads; every path and
option is passed in by the caller.
"""

from __future__ import annotations

from engine.audio import FORMATS, StreamEncoder, decode_audio, encode_audio
from engine.chunk import AudioChunk, WordTiming
from engine.engine import DEFAULT_VOICE, Engine, ResolvedVoice
from engine.exceptions import (
    AssetError,
    EngineError,
    InvalidSpeedError,
    InvalidTextError,
    SpoolError,
    UnknownVoiceError,
    UnsupportedFormatError,
    UnsupportedLanguageError,
)
from engine.languages import LANGUAGES, normalize_lang
from engine.segment import Segment, split_text
from engine.voices import SPEED_RANGE, VoiceStore

__all__ = [
    "DEFAULT_VOICE",
    "FORMATS",
    "LANGUAGES",
    "SPEED_RANGE",
    "AssetError",
    "AudioChunk",
    "Engine",
    "EngineError",
    "InvalidSpeedError",
    "InvalidTextError",
    "ResolvedVoice",
    "Segment",
    "SpoolError",
    "StreamEncoder",
    "UnknownVoiceError",
    "UnsupportedFormatError",
    "UnsupportedLanguageError",
    "VoiceStore",
    "WordTiming",
    "decode_audio",
    "encode_audio",
    "normalize_lang",
    "split_text",
]

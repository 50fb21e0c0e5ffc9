"""Subtitles from rendered chunks: SRT and WebVTT cues with sentence timings (and word timings in VTT)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.chunk import AudioChunk, WordTiming


@dataclass(frozen=True)
class Cue:
    """One caption: start and end seconds on the book's timeline, its text, and its words' timings."""

    start: float
    end: float
    text: str
    words: tuple[WordTiming, ...] = field(default=())


def cues_from_chunks(chunks: Iterable[AudioChunk], offset: float = 0.0) -> list[Cue]:
    """One cue per chunk with speech, from where the chunk starts to where its speech ends."""
    cues: list[Cue] = []
    at = offset
    for chunk in chunks:
        text = " ".join(chunk.segment.text.split())
        if text and chunk.speech_end > 0:
            words = tuple(WordTiming(w.word, at + w.start, at + w.end) for w in chunk.words)
            cues.append(Cue(round(at, 3), round(at + chunk.speech_end, 3), text, words))
        at += chunk.duration
    return cues


def _stamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (VTT)."""
    millis = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def srt_block(n: int, cue: Cue) -> str:
    """Cue number ``n`` (1-based) as a SubRip block; blocks are joined with a blank line."""
    return f"{n}\n{_stamp(cue.start, ',')} --> {_stamp(cue.end, ',')}\n{cue.text}\n"


def to_srt(cues: Iterable[Cue]) -> str:
    """SubRip text: numbered cues with comma-separated milliseconds."""
    return "\n".join(srt_block(n, cue) for n, cue in enumerate(cues, start=1))


#: The first block of every WebVTT file; cue blocks follow, each after a blank line.
VTT_HEADER = "WEBVTT\n"


def vtt_block(n: int, cue: Cue, *, words: bool = True) -> str:
    """Cue number ``n`` as a WebVTT block; with ``words`` each word after the first carries its time."""
    text = cue.text
    tokens = cue.text.split()
    # Karaoke stamps only when the written words line up one to one with the timed ones.
    if words and len(cue.words) > 1 and len(tokens) == len(cue.words):
        parts = [tokens[0]]
        for token, w in zip(tokens[1:], cue.words[1:], strict=True):
            inside = cue.start < w.start < cue.end
            parts.append(f"<{_stamp(w.start, '.')}>{token}" if inside else token)
        text = " ".join(parts)
    return f"{n}\n{_stamp(cue.start, '.')} --> {_stamp(cue.end, '.')}\n{text}\n"


def to_vtt(cues: Iterable[Cue], *, words: bool = True) -> str:
    """WebVTT; with ``words`` each word after the first carries an inline timestamp (karaoke style)."""
    blocks = [VTT_HEADER, *(vtt_block(n, cue, words=words) for n, cue in enumerate(cues, start=1))]
    return "\n".join(blocks)


def shift(cue: Cue, seconds: float) -> Cue:
    """The same cue (and its words) moved ``seconds`` later on the timeline."""
    words = tuple(WordTiming(w.word, w.start + seconds, w.end + seconds) for w in cue.words)
    return Cue(round(cue.start + seconds, 3), round(cue.end + seconds, 3), cue.text, words)

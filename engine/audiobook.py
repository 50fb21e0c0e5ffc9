"""Audiobook assembly: chapter files, one chaptered whole-book file, subtitles and a manifest.

The whole book is an **M4B** (AAC in MP4) with chapter marks. It is the audiobook format that
common players treat as a book (Apple Books, VLC, most Android audiobook apps): chapters in the
player's menu, the position remembered. ffmpeg's MP4 muxer (through PyAV) writes both the
QuickTime chapter track and Nero ``chpl`` chapters, so players of either kind see them; title,
author and cover go in the iTunes-style tags with mutagen. Chapters are also written as separate
MP3 files (plays everywhere) for listening or downloading one at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engine.audio import encode_audio
from engine.exceptions import BookError
from engine.subtitles import Cue, to_srt, to_vtt

#: Bit rate of the whole-book AAC stream (speech at 24 kHz mono).
BOOK_BITRATE = 64_000

#: Seconds of silence between chapters when the caller gives none.
DEFAULT_CHAPTER_GAP = 1.5

#: Format of the separate chapter files.
CHAPTER_FORMAT = "mp3"


@dataclass
class ChapterAudio:
    """One rendered chapter: its title, samples and captions (cue times relative to the chapter)."""

    title: str
    samples: np.ndarray
    sample_rate: int
    cues: list[Cue] = field(default_factory=list)
    parents: tuple[str, ...] = ()  # the parts (books, volumes) the chapter sits in, outermost first

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


def safe_name(title: str, index: int) -> str:
    """A file name for chapter ``index`` (1-based): ``01-down-the-rabbit-hole``."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "chapter"
    return f"{index:02d}-{slug}"


def write_m4b(
    path: Path,
    samples: np.ndarray,
    sample_rate: int,
    chapters: Sequence[tuple[str, float, float]],
    *,
    title: str,
    author: str,
    cover: bytes | None = None,
    cover_type: str | None = None,
) -> None:
    """Encode ``samples`` to AAC in an M4B with ``(title, start, end)`` chapter marks and tags."""
    container = av.open(str(path), "w", format="ipod")
    try:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        stream.bit_rate = BOOK_BITRATE
        base = Fraction(1, 1000)
        container.set_chapters(
            [
                {
                    "id": n,
                    "start": int(round(start * 1000)),
                    "end": int(round(end * 1000)),
                    "time_base": base,
                    "metadata": {"title": name},
                }
                for n, (name, start, end) in enumerate(chapters, start=1)
            ]
        )
        block = sample_rate  # one second per frame handed to the encoder
        for offset in range(0, len(samples), block):
            piece = np.ascontiguousarray(samples[offset : offset + block], dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = offset
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    from mutagen.mp4 import MP4, MP4Cover

    tags = MP4(str(path))
    tags["\xa9nam"] = [title]
    tags["\xa9alb"] = [title]
    if author:
        tags["\xa9ART"] = [author]
        tags["aART"] = [author]
    tags["\xa9gen"] = ["Audiobook"]
    tags["stik"] = [2]  # media kind: audiobook
    if cover:
        kind = MP4Cover.FORMAT_PNG if cover_type == "image/png" else MP4Cover.FORMAT_JPEG
        tags["covr"] = [MP4Cover(cover, imageformat=kind)]
    tags.save()


def assemble(
    chapters: Sequence[ChapterAudio],
    out_dir: str | Path,
    *,
    title: str,
    author: str = "",
    cover: bytes | None = None,
    cover_type: str | None = None,
    gap: float = DEFAULT_CHAPTER_GAP,
    skipped: Sequence[dict] = (),
) -> dict:
    """Write chapter MP3s, ``book.m4b`` with chapter marks, ``book.srt``/``book.vtt`` and ``manifest.json``.

    Returns the manifest: every chapter's title, parts, start, duration and file, every file
    written, and ``skipped``: the sections of the book left out (``Chapter.report()`` dicts).
    """
    if not chapters:
        raise BookError("There are no chapters to assemble: select at least one chapter with text.")
    rates = {c.sample_rate for c in chapters}
    if len(rates) != 1:
        raise BookError(f"Chapters were rendered at different sample rates {sorted(rates)}; use one voice.")
    rate = rates.pop()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    silence = np.zeros(int(round(max(0.0, gap) * rate)), dtype=np.float32)
    pieces: list[np.ndarray] = []
    marks: list[tuple[str, float, float]] = []
    cues: list[Cue] = []
    entries = []
    at = 0
    for n, chapter in enumerate(chapters, start=1):
        start = at / rate
        name = safe_name(chapter.title, n)
        chapter_file = f"{name}.{CHAPTER_FORMAT}"
        (out / chapter_file).write_bytes(encode_audio(chapter.samples, rate, CHAPTER_FORMAT))
        pieces.append(chapter.samples)
        at += len(chapter.samples)
        end = at / rate
        marks.append((chapter.title, start, end))
        cues.extend(
            Cue(round(c.start + start, 3), round(c.end + start, 3), c.text, c.words) for c in chapter.cues
        )
        entries.append(
            {
                "number": n,
                "title": chapter.title,
                "parents": list(chapter.parents),
                "start": round(start, 3),
                "duration": round(chapter.duration, 3),
                "file": chapter_file,
            }
        )
        if n < len(chapters) and len(silence):
            pieces.append(silence)
            at += len(silence)
    samples = np.concatenate(pieces)
    write_m4b(
        out / "book.m4b", samples, rate, marks, title=title, author=author, cover=cover, cover_type=cover_type
    )
    (out / "book.srt").write_text(to_srt(cues), encoding="utf-8")
    (out / "book.vtt").write_text(to_vtt(cues), encoding="utf-8")
    manifest = {
        "title": title,
        "author": author,
        "sample_rate": rate,
        "duration": round(len(samples) / rate, 3),
        "chapter_gap": gap,
        "book_file": "book.m4b",
        "subtitles": ["book.srt", "book.vtt"],
        "chapters": entries,
        "skipped": list(skipped),
        "files": ["book.m4b", "book.srt", "book.vtt"] + [e["file"] for e in entries],
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest

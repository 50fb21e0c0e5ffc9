"""Audiobook assembly: chapter files, one chaptered whole-book file, subtitles and a manifest.

The whole book is an **M4B** (AAC in MP4) with chapter marks. It is the audiobook format that
common players treat as a book (Apple Books, VLC, most Android audiobook apps): chapters in the
player's menu, the position remembered. ffmpeg's MP4 muxer (through PyAV) writes both the
QuickTime chapter track and Nero ``chpl`` chapters, so players of either kind see them; title,
author and cover go in the iTunes-style tags with mutagen. Chapters are also written as separate
MP3 files (plays everywhere) for listening or downloading one at a time.

Assembly streams: each chapter's audio arrives in pieces (:class:`ChapterSource`), goes into a
float32 spool file on disk, and the subtitles are written cue by cue; the M4B is then encoded
from the spool file one second at a time (its chapter marks must be known before its header is
written), while a second thread encodes each chapter's MP3 from its span of the same spool. Memory does not grow with the length
of the book; the disk holds the spool (4 bytes a sample, 345 MB an hour at 24 kHz) until the M4B
is written.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from engine.audio import FileEncoder
from engine.exceptions import BookError
from engine.subtitles import VTT_HEADER, Cue, srt_block, vtt_block

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


#: One piece of a chapter: samples, and the cues that lie in them (times from the chapter's start).
Piece = tuple[np.ndarray, Sequence[Cue]]


@dataclass
class ChapterSource:
    """One chapter to assemble piece by piece: title, sample rate, parts, and a function giving its pieces."""

    title: str
    sample_rate: int
    pieces: Callable[[], Iterable[Piece]]
    parents: tuple[str, ...] = ()


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
    blocks = (samples[offset : offset + sample_rate] for offset in range(0, len(samples), sample_rate))
    write_m4b_blocks(
        path, blocks, sample_rate, chapters, title=title, author=author, cover=cover, cover_type=cover_type
    )


def write_m4b_blocks(
    path: Path,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    chapters: Sequence[tuple[str, float, float]],
    *,
    title: str,
    author: str,
    cover: bytes | None = None,
    cover_type: str | None = None,
) -> None:
    """Like :func:`write_m4b` from one-second blocks of samples (the last may be shorter), one at a time."""
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
        offset = 0
        for block in blocks:
            piece = np.ascontiguousarray(block, dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = offset
            offset += piece.shape[1]
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
    The chapters are held in memory; :func:`assemble_streamed` takes them piece by piece.
    """
    sources = [
        ChapterSource(c.title, c.sample_rate, lambda c=c: [(c.samples, c.cues)], tuple(c.parents))
        for c in chapters
    ]
    return assemble_streamed(
        sources,
        out_dir,
        title=title,
        author=author,
        cover=cover,
        cover_type=cover_type,
        gap=gap,
        skipped=skipped,
    )


#: The float32 spool of the whole book's samples, written beside the outputs and removed after the M4B.
SPOOL_FILE = ".book.f32"


def _spool_blocks(path: Path, sample_rate: int) -> Iterator[np.ndarray]:
    """Read the spool file back one second at a time."""
    with open(path, "rb") as fh:
        while block := fh.read(sample_rate * 4):
            yield np.frombuffer(block, dtype=np.float32)


def _encode_span(spool: Path, rate: int, path: Path, first: int, count: int) -> None:
    """Encode ``count`` samples of the spool file from sample ``first`` into a chapter file, a second at a time."""
    with open(spool, "rb") as fh, FileEncoder(path, CHAPTER_FORMAT, rate) as encoder:
        fh.seek(first * 4)
        left = count
        while left > 0:
            block = fh.read(min(left, rate) * 4)
            if not block:
                raise BookError(f"The spool file ended before {path.name}'s audio did; this is a bug.")
            samples = np.frombuffer(block, dtype=np.float32)
            encoder.encode(samples)
            left -= len(samples)


class _SpanEncoder:
    """A chapter's encoder during the spool pass: counts its samples; the file is encoded from the spool."""

    def __init__(self, encodes: _ChapterEncodes, path: Path, first: int) -> None:
        self.encodes = encodes
        self.path = path
        self.first = first
        self.count = 0

    def encode(self, samples: np.ndarray) -> None:
        """Count the next piece (the caller writes it to the spool)."""
        self.count += len(samples)

    def __enter__(self) -> _SpanEncoder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.encodes.add(self.path, self.first, self.count)


class _ChapterEncodes:
    """The chapter MP3s, each encoded from its span of the spool once the span is written.

    With ``concurrent`` they are encoded on a thread of their own while the M4B is encoded from
    the same spool: the two encoders (most of an assembly's CPU) run at once, and the codecs
    release the GIL. The files are byte for byte those of one thread (the encoder's output does
    not depend on how its input is cut).
    """

    def __init__(self, spool: Path, pcm: BinaryIO, rate: int, concurrent: bool) -> None:
        self.spool = spool
        self.pcm = pcm
        self.rate = rate
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="spool-chapter-mp3") if concurrent else None
        self._futures: list[Future[None]] = []

    def chapter(self, path: Path, first: int) -> _SpanEncoder:
        """The encoder of the chapter whose samples start at spool sample ``first``."""
        return _SpanEncoder(self, path, first)

    def add(self, path: Path, first: int, count: int) -> None:
        """Encode one chapter's span (now, or queued on the thread)."""
        self.pcm.flush()  # the span must be on disk before it is read back
        if self._pool is None:
            _encode_span(self.spool, self.rate, path, first, count)
        else:
            self._futures.append(self._pool.submit(_encode_span, self.spool, self.rate, path, first, count))

    def wait(self) -> None:
        """Wait for every chapter file; raise the first encoder error."""
        for future in self._futures:
            future.result()

    def close(self) -> None:
        """Stop the thread (the queued chapters not begun are dropped), before the spool is removed."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def assemble_streamed(
    chapters: Sequence[ChapterSource],
    out_dir: str | Path,
    *,
    title: str,
    author: str = "",
    cover: bytes | None = None,
    cover_type: str | None = None,
    gap: float = DEFAULT_CHAPTER_GAP,
    skipped: Sequence[dict] = (),
    on_chapter: Callable[[int], None] | None = None,
    concurrent: bool = True,
    timings: dict[str, float] | None = None,
) -> dict:
    """:func:`assemble` with each chapter's audio taken piece by piece: memory does not grow with the book.

    ``on_chapter(n)`` is called after chapter ``n`` (1-based) is written (a caller renews its lock
    there, or raises to stop). The outputs are byte for byte those of :func:`assemble`, and the same
    with ``concurrent`` off (each chapter MP3 encoded on this thread as its chapter ends, then the M4B).
    ``timings`` receives the wall seconds of the steps: ``read_s`` (the pieces into the spool and
    subtitles; the chapter MP3s too when not concurrent), ``m4b_s`` and ``mp3_wait_s`` (after the
    M4B, for the chapter files still encoding).
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
    marks: list[tuple[str, float, float]] = []
    entries = []
    at = 0
    cue_count = 0
    spool = out / SPOOL_FILE
    steps = timings if timings is not None else {}
    started = time.perf_counter()
    encodes: _ChapterEncodes | None = None
    try:
        with (
            open(spool, "wb") as pcm,
            open(out / "book.srt", "w", encoding="utf-8") as srt,
            open(out / "book.vtt", "w", encoding="utf-8") as vtt,
        ):
            encodes = _ChapterEncodes(spool, pcm, rate, concurrent)
            vtt.write(VTT_HEADER)
            for n, chapter in enumerate(chapters, start=1):
                start = at / rate
                chapter_file = f"{safe_name(chapter.title, n)}.{CHAPTER_FORMAT}"
                length = 0
                with encodes.chapter(out / chapter_file, at) as encoder:
                    for samples, cues in chapter.pieces():
                        piece = np.asarray(samples, dtype=np.float32)
                        encoder.encode(piece)
                        pcm.write(piece.tobytes())
                        length += len(piece)
                        for c in cues:
                            cue_count += 1
                            # Word times stay relative to the chapter, as they always were in the VTT.
                            cue = Cue(round(c.start + start, 3), round(c.end + start, 3), c.text, c.words)
                            srt.write(("\n" if cue_count > 1 else "") + srt_block(cue_count, cue))
                            vtt.write("\n" + vtt_block(cue_count, cue))
                at += length
                marks.append((chapter.title, start, at / rate))
                entries.append(
                    {
                        "number": n,
                        "title": chapter.title,
                        "parents": list(chapter.parents),
                        "start": round(start, 3),
                        "duration": round(length / rate, 3),
                        "file": chapter_file,
                    }
                )
                if n < len(chapters) and len(silence):
                    pcm.write(silence.tobytes())
                    at += len(silence)
                if on_chapter is not None:
                    on_chapter(n)
        steps["read_s"] = time.perf_counter() - started
        write_m4b_blocks(
            out / "book.m4b",
            _spool_blocks(spool, rate),
            rate,
            marks,
            title=title,
            author=author,
            cover=cover,
            cover_type=cover_type,
        )
        steps["m4b_s"] = time.perf_counter() - started - steps["read_s"]
        encodes.wait()
        steps["mp3_wait_s"] = time.perf_counter() - started - steps["read_s"] - steps["m4b_s"]
    finally:
        if encodes is not None:
            encodes.close()
        spool.unlink(missing_ok=True)
    manifest = {
        "title": title,
        "author": author,
        "sample_rate": rate,
        "duration": round(at / rate, 3),
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

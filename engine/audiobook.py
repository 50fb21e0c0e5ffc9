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
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from engine.audio import FileEncoder
from engine.chunk import WordTiming
from engine.exceptions import BookError
from engine.subtitles import VTT_HEADER, Cue, srt_block, vtt_block

#: Bit rate of the whole-book AAC stream (speech at 24 kHz mono).
BOOK_BITRATE = 64_000

#: Options of the book's AAC encoder. Without perceptual noise substitution the decoder draws no
#: random noise, whose state would carry across a splice: a fixed book's copied chapters then
#: decode to exactly the samples they did before (see :class:`_Splice`).
AAC_OPTIONS = {"aac_pns": "0"}

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
    """One chapter to assemble piece by piece: title, sample rate, parts, and a function giving its pieces.

    ``encoded``: the chapter's file, already encoded from these same pieces (a fixed book's unchanged
    chapter): it is copied rather than encoded again; with its ``cues`` (times from the chapter's
    start) and ``length`` too, a rebuild need not read its pieces at all. ``meta`` goes into the
    chapter's manifest entry.
    """

    title: str
    sample_rate: int
    pieces: Callable[[], Iterable[Piece]]
    parents: tuple[str, ...] = ()
    encoded: Path | None = None
    meta: dict = field(default_factory=dict)
    cues: Sequence[Cue] | None = None  # with ``encoded`` and ``length``: nothing of the chapter is read
    length: int | None = None  # samples


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
        stream.codec_context.options = dict(AAC_OPTIONS)
        _set_chapters(container, chapters)
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
    tag_m4b(path, title=title, author=author, cover=cover, cover_type=cover_type)


def _set_chapters(container: Any, chapters: Sequence[tuple[str, float, float]]) -> None:
    """The M4B's chapter marks, in milliseconds (set before the first packet is muxed)."""
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


def tag_m4b(
    path: Path, *, title: str, author: str, cover: bytes | None = None, cover_type: str | None = None
) -> None:
    """Write the audiobook tags (title, author, genre, media kind, cover) into an M4B."""
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


class _NoEncoder:
    """Stands in for a chapter's encoder when its file is copied from an earlier assembly."""

    def encode(self, samples: object) -> None:
        """Nothing to encode."""

    def __enter__(self) -> _NoEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


#: Samples per AAC frame: the M4B's packets each hold this many (the last may hold fewer).
AAC_FRAME = 1024


@dataclass
class PreviousM4B:
    """The M4B a fixed book's new revision replaces: its file and each chapter's (first, end) sample."""

    path: Path
    spans: list[tuple[int, int]]


class _Splice:
    """How a fixed book's M4B is rebuilt from the previous one: old packets copied, changed chapters encoded.

    Each run of changed chapters is encoded afresh from a packet boundary in the silent gap before it
    to one in the gap after it; the packets between are the previous M4B's, copied as they are (no
    decoding, no encoding). A splice point keeps two frames of silence on either side, so the
    decoder's frame overlap never mixes old and new audio. A chapter next to a gap too short for
    one is encoded with its neighbour.
    """

    def __init__(self, previous: PreviousM4B, changed: list[bool]) -> None:
        spans = previous.spans
        count = len(spans)
        self.previous = previous
        self.spans = spans
        self.points: list[int | None] = []
        for k in range(count - 1):
            end, start = spans[k][1], spans[k + 1][0]
            point = int(round((end + start) / 2 / AAC_FRAME)) * AAC_FRAME
            self.points.append(point if end + 2 * AAC_FRAME <= point <= start - 2 * AAC_FRAME else None)
        encode = list(changed)
        grown = True
        while grown:
            grown = False
            for k in range(count):
                if not encode[k]:
                    continue
                for other, point in ((k - 1, k - 1), (k + 1, k)):
                    if 0 <= other < count and not encode[other] and self.points[point] is None:
                        encode[other] = grown = True
        self.encode = encode
        with av.open(str(previous.path)) as container:
            self.packet_count = sum(1 for p in container.demux(container.streams.audio[0]) if p.size)
        # The new stream in order: ("copy", first old packet, end old packet) or ("new", packet file, count).
        self.regions: list[tuple[str, Any, int]] = []
        self.next_packet = 0  # packets of the new stream laid out so far
        self._encoder: _RunEncoder | None = None

    @property
    def feasible(self) -> bool:
        """False when every chapter must be encoded anyway (nothing to copy)."""
        return not all(self.encode)

    def copy_start(self, k: int) -> int:
        """Where chapter ``k`` (0-based, copied) starts on the new timeline; lays out its region if it opens one."""
        if k == 0 or self.encode[k - 1]:
            first = 0 if k == 0 else self.points[k - 1] // AAC_FRAME + 1  # type: ignore[operator]
            last = len(self.spans) - 1
            end = k
            while end < last and not self.encode[end + 1]:
                end += 1
            stop = self.packet_count if end == last else self.points[end] // AAC_FRAME + 1  # type: ignore[operator]
            self._shift = self.next_packet - first
            self.regions.append(("copy", first, stop))
            self.next_packet += stop - first
        return self.spans[k][0] + self._shift * AAC_FRAME

    def begin_run(self, k: int, rate: int, path: Path) -> int:
        """Start encoding the run that opens with chapter ``k``; return where the chapter starts."""
        lead = 0 if k == 0 else self.spans[k][0] - self.points[k - 1] - AAC_FRAME  # type: ignore[operator]
        self._encoder = _RunEncoder(path, rate)
        self._run_start = self.next_packet * AAC_FRAME
        self._encoder.encode(np.zeros(lead, dtype=np.float32))
        return self._run_start + lead

    def _run(self) -> _RunEncoder:
        if self._encoder is None:
            raise BookError("A rebuilt M4B was fed audio outside a run of changed chapters; this is a bug.")
        return self._encoder

    def feed(self, samples: np.ndarray) -> None:
        """Encode the next samples of the current run (begun by :meth:`begin_run`)."""
        self._run().encode(samples)

    def end_run(self, k: int, gap: int) -> None:
        """Finish the run whose last chapter is ``k``: pad the gap so the next copied chapter keeps its place."""
        encoder = self._run()
        if k < len(self.spans) - 1:
            point = int(self.points[k])  # type: ignore[arg-type]  (a run ends only where a splice point is)
            # The gap after the run is ``gap`` to within half a frame: the copied packets sit on the frame grid.
            tail = max(AAC_FRAME, gap - (self.spans[k + 1][0] - point) - AAC_FRAME // 2)
            encoder.encode(np.zeros(tail, dtype=np.float32))
        count = encoder.close()
        self.regions.append(("new", encoder.path, count))
        self.next_packet += count
        self._encoder = None

    def write(self, path: Path, rate: int, marks: Sequence[tuple[str, float, float]]) -> None:
        """Mux the regions into ``path`` with the chapter marks (tags are written by the caller)."""
        with av.open(str(self.previous.path)) as old, av.open(str(path), "w", format="ipod") as new:
            source = old.streams.audio[0]
            stream = new.add_stream_from_template(source)
            _set_chapters(new, marks)
            packets = (p for p in old.demux(source) if p.size)
            index = 0  # old packets read so far
            position = 0  # new packets written
            base = Fraction(1, rate)
            for kind, where, stop in self.regions:
                if kind == "copy":
                    while index < where:
                        next(packets)
                        index += 1
                    while index < stop:
                        packet = next(packets)
                        index += 1
                        _mux(new, stream, packet, position, base)
                        position += 1
                else:
                    for data, duration in _read_packets(where):
                        packet = av.Packet(data)
                        packet.duration = duration
                        _mux(new, stream, packet, position, base)
                        position += 1


def _mux(container: Any, stream: Any, packet: Any, position: int, base: Fraction) -> None:
    """Mux ``packet`` as the stream's packet number ``position`` (the first is the encoder's priming frame)."""
    packet.stream = stream
    packet.time_base = base
    packet.pts = packet.dts = position * AAC_FRAME - AAC_FRAME
    if not packet.duration:
        packet.duration = AAC_FRAME
    container.mux(packet)


class _RunEncoder:
    """An AAC encoder for one run of chapters, its packets kept in a file (length, duration, bytes)."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.count = 0
        self._file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._codec = av.CodecContext.create("aac", "w")
        self._codec.sample_rate = rate
        self._codec.layout = "mono"
        self._codec.format = "fltp"
        self._codec.bit_rate = BOOK_BITRATE
        self._codec.options = dict(AAC_OPTIONS)
        self._codec.time_base = Fraction(1, rate)
        self._codec.open()
        self._offset = 0

    def encode(self, samples: np.ndarray) -> None:
        """Encode the next samples (a second at a time)."""
        for at in range(0, len(samples), self.rate):
            piece = np.ascontiguousarray(samples[at : at + self.rate], dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self._offset
            self._offset += piece.shape[1]
            self._write(self._codec.encode(frame))

    def _write(self, packets: Iterable[Any]) -> None:
        for packet in packets:
            data = bytes(packet)
            self._file.write(len(data).to_bytes(4, "little") + int(packet.duration or AAC_FRAME).to_bytes(4, "little"))
            self._file.write(data)
            self.count += 1

    def close(self) -> int:
        """Flush the encoder; return how many packets the run has."""
        self._write(self._codec.encode(None))
        self._file.close()
        return self.count


def _read_packets(path: Path) -> Iterator[tuple[bytes, int]]:
    """The packets a :class:`_RunEncoder` kept, in order: (bytes, duration in samples)."""
    with open(path, "rb") as fh:
        while head := fh.read(8):
            size, duration = int.from_bytes(head[:4], "little"), int.from_bytes(head[4:], "little")
            yield fh.read(size), duration


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
    extra: dict | None = None,
    previous: PreviousM4B | None = None,
    cues_file: Path | None = None,
) -> dict:
    """:func:`assemble` with each chapter's audio taken piece by piece: memory does not grow with the book.

    ``on_chapter(n)`` is called after chapter ``n`` (1-based) is written (a caller renews its lock
    there, or raises to stop). The outputs are byte for byte those of :func:`assemble`, and the same
    with ``concurrent`` off (each chapter MP3 encoded on this thread as its chapter ends, then the M4B).
    ``timings`` receives the wall seconds of the steps: ``read_s`` (the pieces into the spool and
    subtitles; the chapter MP3s too when not concurrent), ``m4b_s`` and ``mp3_wait_s`` (after the
    M4B, for the chapter files still encoding). ``extra`` fields are added to the manifest;
    ``cues_file`` receives each chapter's cues (JSON, times from the chapter's start) for a later
    rebuild.

    A fixed book (``previous``: the M4B it replaces; chapters whose ``encoded`` file, ``cues`` and
    ``length`` are given are unchanged) gets its M4B by copying the unchanged chapters' packets and
    encoding only the changed ones (:class:`_Splice`): nothing unchanged is read, decoded or
    encoded. The gap after a changed chapter then holds ``gap`` to within half an AAC frame.
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
    splice = None
    if previous is not None and len(previous.spans) == len(chapters):
        unchanged = [c.encoded is not None and c.cues is not None and c.length is not None for c in chapters]
        splice = _Splice(previous, [not u for u in unchanged])
        if not splice.feasible:
            splice = None
    marks: list[tuple[str, float, float]] = []
    entries = []
    chapter_cues: list[list[list[Any]]] = []
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
                k = n - 1
                copied = splice is not None and not splice.encode[k]
                if splice is None:
                    offset = at
                elif copied:
                    offset = splice.copy_start(k)
                elif k == 0 or not splice.encode[k - 1]:
                    offset = splice.begin_run(k, rate, out / f".run-{n}.aac")
                else:
                    offset = at  # inside a run: after the previous chapter and the gap fed to the encoder
                start = offset / rate
                chapter_file = f"{safe_name(chapter.title, n)}.{CHAPTER_FORMAT}"
                length = 0
                if chapter.encoded is not None:
                    shutil.copyfile(chapter.encoded, out / chapter_file)
                kept: list[list[Any]] = []
                if copied:
                    length = int(chapter.length or 0)
                    pieces: Iterable[Piece] = [(np.zeros(0, dtype=np.float32), list(chapter.cues or ()))]
                else:
                    pieces = chapter.pieces()
                encoder: FileEncoder | _NoEncoder | _SpanEncoder
                if chapter.encoded is not None:
                    encoder = _NoEncoder()  # its file is the earlier assembly's, copied above
                elif splice is None:
                    encoder = encodes.chapter(out / chapter_file, at)  # encoded from its span of the spool
                else:
                    encoder = FileEncoder(out / chapter_file, CHAPTER_FORMAT, rate)  # a rebuild writes no spool
                with encoder:
                    for samples, cues in pieces:
                        piece = np.asarray(samples, dtype=np.float32)
                        encoder.encode(piece)
                        if splice is None:
                            pcm.write(piece.tobytes())
                        elif not copied:
                            splice.feed(piece)
                        length += len(piece)
                        for c in cues:
                            cue_count += 1
                            kept.append([c.start, c.end, c.text, [[w.word, w.start, w.end] for w in c.words]])
                            # Word times stay relative to the chapter, as they always were in the VTT.
                            cue = Cue(round(c.start + start, 3), round(c.end + start, 3), c.text, c.words)
                            srt.write(("\n" if cue_count > 1 else "") + srt_block(cue_count, cue))
                            vtt.write("\n" + vtt_block(cue_count, cue))
                chapter_cues.append(kept)
                at = offset + length
                marks.append((chapter.title, start, at / rate))
                entries.append(
                    {
                        "number": n,
                        "title": chapter.title,
                        "parents": list(chapter.parents),
                        "start": round(start, 3),
                        "duration": round(length / rate, 3),
                        "file": chapter_file,
                        "offset": offset,
                        "samples": length,
                        **chapter.meta,
                    }
                )
                if splice is not None and not copied:
                    if n < len(chapters) and splice.encode[k + 1]:
                        splice.feed(silence)
                        at += len(silence)
                    else:
                        splice.end_run(k, len(silence))
                elif n < len(chapters) and len(silence):
                    if splice is None:
                        pcm.write(silence.tobytes())
                    at += len(silence)
                if on_chapter is not None:
                    on_chapter(n)
        steps["read_s"] = time.perf_counter() - started
        if splice is not None:
            splice.write(out / "book.m4b", rate, marks)
            tag_m4b(out / "book.m4b", title=title, author=author, cover=cover, cover_type=cover_type)
        else:
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
        for run in out.glob(".run-*.aac"):
            run.unlink(missing_ok=True)
    if cues_file is not None:
        cues_file.write_text(json.dumps(chapter_cues), encoding="utf-8")
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
        **({"m4b": "rebuilt: unchanged chapters copied"} if splice is not None else {}),
        **(extra or {}),
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest


def cues_from_json(data: list[list[Any]]) -> list[Cue]:
    """One chapter's cues as ``assemble_streamed`` kept them in its ``cues_file``."""
    return [
        Cue(float(s), float(e), str(t), tuple(WordTiming(str(w), float(a), float(b)) for w, a, b in words))
        for s, e, t, words in data
    ]

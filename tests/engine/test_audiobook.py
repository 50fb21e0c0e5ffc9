"""A small book made in the test, rendered with the real model and assembled into an audiobook."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from mutagen.mp4 import MP4

from engine import Engine
from engine.audio import decode_audio
from engine.audiobook import ChapterAudio, ChapterSource, assemble, assemble_streamed
from engine.book import load_book
from engine.subtitles import cues_from_chunks
from tests.engine.test_book import make_epub

CHAPTERS = [
    ("The Door", "Alice found a tiny door."),
    ("The Key", "A golden key lay on the table."),
    ("The Garden", "She stepped into the garden."),
]


@pytest.fixture(scope="module")
def audiobook(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, list[ChapterAudio]]:
    tmp = tmp_path_factory.mktemp("book")
    book = load_book(make_epub(tmp / "small.epub", CHAPTERS))
    rendered = []
    for chapter in book.select():
        samples, chunks = engine.synthesize(chapter.text, voice="af_heart")
        rendered.append(ChapterAudio(chapter.title, samples, engine.sample_rate, cues_from_chunks(chunks)))
    out = tmp / "out"
    manifest = assemble(rendered, out, title=book.title, author=book.author, gap=1.0)
    return out, manifest, rendered


def test_chapter_marks_read_back_from_the_m4b(audiobook: tuple) -> None:
    out, manifest, rendered = audiobook
    m4b = MP4(str(out / "book.m4b"))
    titles = [c.title for c in m4b.chapters]
    assert titles == [name for name, _ in CHAPTERS]
    starts = [c.start for c in m4b.chapters]
    assert starts == pytest.approx([c["start"] for c in manifest["chapters"]], abs=0.01)
    assert m4b.tags["\xa9nam"] == ["Small Book"] and m4b.tags["\xa9ART"] == ["A. Writer"]


def test_durations_add_up(audiobook: tuple) -> None:
    out, manifest, rendered = audiobook
    chapters = sum(c.duration for c in rendered)
    assert manifest["duration"] == pytest.approx(chapters + 2 * 1.0, abs=0.01)
    m4b = MP4(str(out / "book.m4b"))
    assert m4b.info.length == pytest.approx(manifest["duration"], abs=0.1)
    for entry, chapter in zip(manifest["chapters"], rendered, strict=True):
        samples, rate = decode_audio((out / entry["file"]).read_bytes(), "mp3")
        assert len(samples) / rate == pytest.approx(chapter.duration, abs=0.06)


def test_subtitles_are_ordered_and_inside_the_audio(audiobook: tuple) -> None:
    out, manifest, _ = audiobook
    srt = (out / "book.srt").read_text().strip().split("\n\n")
    assert len(srt) >= 3
    previous_end = 0.0

    def seconds(stamp: str) -> float:
        h, m, rest = stamp.split(":")
        s, ms = rest.split(",")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    for block in srt:
        number, times, text = block.split("\n", 2)
        start, end = (seconds(t) for t in times.split(" --> "))
        assert previous_end <= start < end <= manifest["duration"] + 1e-3
        previous_end = end
        assert text.strip()
    vtt = (out / "book.vtt").read_text()
    assert vtt.startswith("WEBVTT") and "<00:00:" in vtt  # word timings inline


def test_manifest_matches_the_files(audiobook: tuple) -> None:
    out, manifest, _ = audiobook
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    for name in manifest["files"]:
        assert (out / name).stat().st_size > 0
    assert [c["title"] for c in manifest["chapters"]] == [name for name, _ in CHAPTERS]


def test_gap_between_chapters_is_silence(audiobook: tuple) -> None:
    import av

    out, manifest, rendered = audiobook
    with av.open(str(out / "book.m4b")) as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    audio = np.concatenate(frames)
    first_end = manifest["chapters"][0]["start"] + manifest["chapters"][0]["duration"]
    second = manifest["chapters"][1]["start"]
    # AAC has a priming delay of a frame or two: look inside the gap with a margin.
    gap = audio[int((first_end + 0.15) * rate) : int((second - 0.15) * rate)]
    assert len(gap) > 0.5 * rate
    assert np.abs(gap).max() < 0.01


def _in_pieces(chapters: list[ChapterAudio]) -> list[ChapterSource]:
    """The chapters as sources of three pieces each (cues with the first), as the service feeds them."""
    return [
        ChapterSource(
            c.title,
            c.sample_rate,
            lambda c=c: [
                (part, c.cues if k == 0 else []) for k, part in enumerate(np.array_split(c.samples, 3))
            ],
        )
        for c in chapters
    ]


def test_concurrent_encodes_give_the_same_files_as_one_thread(audiobook: tuple, tmp_path: Path) -> None:
    out, manifest, rendered = audiobook
    steps: dict[str, float] = {}
    threaded = assemble_streamed(
        _in_pieces(rendered),
        tmp_path / "threaded",
        title="Small Book",
        author="A. Writer",
        gap=1.0,
        timings=steps,
    )
    serial = assemble_streamed(
        _in_pieces(rendered),
        tmp_path / "serial",
        title="Small Book",
        author="A. Writer",
        gap=1.0,
        concurrent=False,
    )
    assert threaded == serial == manifest
    assert set(steps) == {"read_s", "m4b_s", "mp3_wait_s"} and all(v >= 0 for v in steps.values())
    for name in [*manifest["files"], "manifest.json"]:
        # The M4B and every chapter MP3, byte for byte: the threads change when, not what, is encoded.
        assert (tmp_path / "threaded" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
        assert (tmp_path / "threaded" / name).read_bytes() == (out / name).read_bytes(), name
    m4b = MP4(str(tmp_path / "threaded" / "book.m4b"))
    assert [(c.title, round(c.start, 2)) for c in m4b.chapters] == [
        (c["title"], round(c["start"], 2)) for c in manifest["chapters"]
    ]
    assert m4b.info.length == pytest.approx(manifest["duration"], abs=0.1)
    for entry, chapter in zip(manifest["chapters"], rendered, strict=True):
        samples, rate = decode_audio((tmp_path / "threaded" / entry["file"]).read_bytes(), "mp3")
        assert len(samples) / rate == pytest.approx(chapter.duration, abs=0.06)
    assert not list((tmp_path / "threaded").glob(".book.f32"))


def test_an_assembly_stopped_mid_way_leaves_no_spool_and_no_encoder_thread(
    audiobook: tuple, tmp_path: Path
) -> None:
    _, _, rendered = audiobook

    def stop(n: int) -> None:
        if n == 2:
            raise RuntimeError("lock lost")

    with pytest.raises(RuntimeError, match="lock lost"):
        assemble_streamed(_in_pieces(rendered), tmp_path, title="Small Book", on_chapter=stop)
    assert not (tmp_path / ".book.f32").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("spool-chapter-mp3")]
    assert (tmp_path / "01-the-door.mp3").stat().st_size > 0  # chapter 1 was encoded before the stop

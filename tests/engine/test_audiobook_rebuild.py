"""Rebuilding a fixed book's M4B from the previous one: unchanged chapters' packets copied, one chapter encoded.

The audio is made here (no model): each chapter a distinct tone with a moving envelope, so a
misplaced or re-encoded chapter shows in its decoded samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from mutagen.mp4 import MP4

from engine.audiobook import ChapterSource, PreviousM4B, assemble_streamed, cues_from_json
from engine.subtitles import Cue

RATE = 24_000


def _tone(seconds: float, freq: float) -> np.ndarray:
    """A tone with a moving envelope under noise (noise is what the encoder's noise substitution would take)."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))
    return (tone + 0.05 * np.random.default_rng(int(freq)).standard_normal(len(t))).astype(np.float32)


def _source(title: str, samples: np.ndarray, **extra: object) -> ChapterSource:
    cue = Cue(0.0, round(len(samples) / RATE, 3), f"{title} words")
    return ChapterSource(title, RATE, lambda: [(samples[: RATE], [cue]), (samples[RATE:], [])], **extra)  # type: ignore[arg-type]


def _decoded(path: Path) -> tuple[np.ndarray, list[tuple[int, int]]]:
    with av.open(str(path)) as container:
        marks = [
            (round(float(c["start"] * c["time_base"]) * RATE), round(float(c["end"] * c["time_base"]) * RATE))
            for c in container.chapters()
        ]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return samples, marks


def test_a_rebuilt_m4b_keeps_unchanged_chapters_and_encodes_only_the_changed_one(tmp_path: Path) -> None:
    audio = [_tone(3.0, 220.0), _tone(2.5, 330.0), _tone(3.2, 440.0)]
    first = assemble_streamed(
        [_source(f"Chapter {n}", a) for n, a in enumerate(audio, start=1)],
        tmp_path / "r1",
        title="Tones",
        gap=1.5,
        cues_file=tmp_path / "r1-cues.json",
    )
    assert "m4b" not in first  # the first assembly encodes everything
    changed = _tone(4.1, 550.0)
    kept = json.loads((tmp_path / "r1-cues.json").read_text())
    sources = []
    for n, entry in enumerate(first["chapters"], start=1):
        if n == 2:
            sources.append(_source("Chapter 2", changed))
            continue
        sources.append(
            _source(
                entry["title"],
                np.zeros(0, dtype=np.float32),  # never read: the chapter is copied
                encoded=tmp_path / "r1" / entry["file"],
                cues=cues_from_json(kept[n - 1]),
                length=entry["samples"],
            )
        )
    spans = [(c["offset"], c["offset"] + c["samples"]) for c in first["chapters"]]
    second = assemble_streamed(
        sources, tmp_path / "r2", title="Tones", gap=1.5, previous=PreviousM4B(tmp_path / "r1" / "book.m4b", spans)
    )
    assert second["m4b"].startswith("rebuilt")
    old, _ = _decoded(tmp_path / "r1" / "book.m4b")
    new, new_marks = _decoded(tmp_path / "r2" / "book.m4b")
    # The marks in the file are the manifest's, and the chapters have their new lengths.
    for (mark, _), chapter in zip(new_marks, second["chapters"], strict=True):
        assert abs(mark - chapter["offset"]) <= RATE // 1000  # marks are kept in milliseconds
    assert [c["samples"] for c in second["chapters"]] == [len(audio[0]), len(changed), len(audio[2])]
    # Unchanged chapters decode to the very same samples (their packets were copied); chapter 2 is new.
    for n in (0, 2):
        a0, b0 = first["chapters"][n]["offset"], second["chapters"][n]["offset"]
        size = first["chapters"][n]["samples"]
        assert np.array_equal(old[a0 : a0 + size], new[b0 : b0 + size]), n
    start = second["chapters"][1]["offset"]
    heard = new[start : start + len(changed)]
    assert np.corrcoef(heard[RATE : 2 * RATE], changed[RATE : 2 * RATE])[0, 1] > 0.9
    # The gaps are silence and keep their length (the one after the changed chapter to half a frame).
    gaps = [
        second["chapters"][n + 1]["offset"] - (second["chapters"][n]["offset"] + second["chapters"][n]["samples"])
        for n in (0, 1)
    ]
    assert gaps[0] == int(1.5 * RATE) and abs(gaps[1] - int(1.5 * RATE)) <= 512
    end = second["chapters"][0]["offset"] + second["chapters"][0]["samples"]
    assert np.abs(new[end + 2048 : end + gaps[0] - 2048]).max() < 0.01
    assert MP4(str(tmp_path / "r2" / "book.m4b")).info.length == pytest.approx(second["duration"], abs=0.1)
    srt = (tmp_path / "r2" / "book.srt").read_text()
    assert srt.count("-->") == 3 and "Chapter 3 words" in srt
    name = first["chapters"][0]["file"]
    assert (tmp_path / "r2" / name).read_bytes() == (tmp_path / "r1" / name).read_bytes()

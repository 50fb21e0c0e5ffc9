"""Cost of automatic QA (issue 17 part 4): recogniser CPU seconds per audio minute vs synthesis, side by side.

One process, one engine thread and one recogniser thread (a worker's defaults). Each round renders
every segment of the text (CPU time measured), then runs QA over them as a worker does (windows of
consecutive segments) and, for comparison, on each segment alone; ``--rounds`` rounds, so all see the
same machine load. Also reported: the largest word error rate of a clean segment (how far a clean
render is from the threshold: false flags), and how many segments QA flags when every one is
replaced by silence (it should flag all).

Usage: python benchmarks/qa_cost.py [--text minute|tiny|PATH] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ASSETS, describe_machine, load_text, machine, median, save_json, table

from config import defaults
from engine import Engine
from engine.qa import Transcriber, bundled_model_dir, check_chunk, check_chunks


def measure(fn: Any) -> tuple[Any, float, float]:
    """Run ``fn()``; return its result, the process CPU seconds and the wall seconds it took."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default="minute", help="tiny, a built-in text name, or a file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--voice", default="af_heart")
    parser.add_argument("--threshold", type=float, default=defaults.QA_THRESHOLD)
    parser.add_argument("--json")
    args = parser.parse_args()

    name, text = load_text(args.text)
    before = machine()
    engine, load_tts, _ = measure(lambda: Engine.from_assets(Path(ASSETS), threads=1))
    asr, load_asr, _ = measure(lambda: Transcriber(bundled_model_dir(), threads=1))
    voice = engine.check(args.voice, 1.0)
    segments = engine.segments(text, voice.lang)
    rounds: list[dict[str, float]] = []
    alone_wers: list[float] = []
    window_wers: list[float] = []
    flagged_alone = flagged_window = flagged_silent = 0
    for r in range(args.rounds):
        chunks: list[Any] = []
        tts_cpu = tts_wall = 0.0
        for i, seg in enumerate(segments):
            chunk, cpu, wall = measure(
                lambda seg=seg, i=i: engine.synthesize_segment(seg, voice, is_last=i == len(segments) - 1)
            )
            chunks.append(chunk)
            tts_cpu, tts_wall = tts_cpu + cpu, tts_wall + wall
        # What a worker runs: windows of consecutive segments (service.qa.QaRun).
        window, win_cpu, win_wall = measure(lambda chunks=chunks: check_chunks(asr, chunks, args.threshold, voice.lang))
        # Each segment transcribed on its own, for comparison.
        alone, alone_cpu, alone_wall = measure(
            lambda chunks=chunks: [check_chunk(asr, c, args.threshold, voice.lang) for c in chunks]
        )
        if r == 0:
            window_wers, alone_wers = [c.wer for c in window], [c.wer for c in alone]
            flagged_window, flagged_alone = sum(c.flagged for c in window), sum(c.flagged for c in alone)
            silent = [dataclasses.replace(c, samples=np.zeros_like(c.samples)) for c in chunks]
            flagged_silent = sum(c.flagged for c in check_chunks(asr, silent, args.threshold, voice.lang))
        rounds.append(
            {
                "audio_s": sum(c.duration for c in chunks),
                "tts_cpu": tts_cpu,
                "tts_wall": tts_wall,
                "qa_cpu": win_cpu,
                "qa_wall": win_wall,
                "alone_cpu": alone_cpu,
                "alone_wall": alone_wall,
            }
        )
    after = machine()

    per_min = 60.0 / rounds[0]["audio_s"]
    rows = [
        [label, median(r[key] * per_min for r in rounds)]
        for label, key in (
            ("synthesis CPU s / audio min", "tts_cpu"),
            ("QA (windows) CPU s / audio min", "qa_cpu"),
            ("QA (segment alone) CPU s / audio min", "alone_cpu"),
            ("synthesis wall s / audio min", "tts_wall"),
            ("QA (windows) wall s / audio min", "qa_wall"),
        )
    ]
    rows.append(["QA (windows) / synthesis, CPU", median(r["qa_cpu"] / r["tts_cpu"] for r in rounds)])
    rows.append(["QA (alone) / synthesis, CPU", median(r["alone_cpu"] / r["tts_cpu"] for r in rounds)])
    print(describe_machine(before))
    print(f"# text {name}: {len(segments)} segments, {rounds[0]['audio_s']:.1f} s of audio; "
          f"{args.rounds} rounds, medians; engine load {load_tts:.2f} CPU s, recogniser load {load_asr:.2f} CPU s")
    print(table(["measure", "value"], rows))
    print(f"# clean render, WER max: windows {max(window_wers):.3f}, alone {max(alone_wers):.3f}; flagged at "
          f"{args.threshold}: windows {flagged_window}, alone {flagged_alone} of {len(segments)}; "
          f"all silenced: {flagged_silent} of {len(segments)} flagged")
    print(describe_machine(after))
    save_json(
        args.json,
        {
            "machine_before": before,
            "machine_after": after,
            "text": name,
            "segments": len(segments),
            "rounds": rounds,
            "wers": {"windows": window_wers, "alone": alone_wers},
            "flagged_clean": {"windows": flagged_window, "alone": flagged_alone},
            "flagged_silent": flagged_silent,
            "threshold": args.threshold,
            "load_seconds": {"engine": load_tts, "recogniser": load_asr},
        },
    )


if __name__ == "__main__":
    main()

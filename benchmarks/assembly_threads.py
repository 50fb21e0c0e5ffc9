"""The book assembly's encoders on one thread or two: wall, process CPU and the critical path (issue 18).

``engine.audiobook.assemble_streamed`` over a synthetic book (speech-like audio made without the
model, ``tests/fixtures/synthetic_book.py``, in pieces of ``--segment`` seconds), once with the
chapter MP3s encoded on this thread as each chapter ends and then the M4B (``serial``, as before),
once with the MP3s on a second thread while the M4B is encoded (``concurrent``), in alternating
rounds. Reported: wall, CPU of the process, and CPU of the calling thread, which is the
assembly's critical path when a second core is free (the end of a book on N >= 2 workers). The
files are byte for byte the same (``tests/engine/test_audiobook.py``).

    python benchmarks/assembly_threads.py --seconds 660 --chapters 1 --rounds 3   # Alice chapter 1's audio
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from common import describe_machine, machine, median, save_json, table  # noqa: E402


def main() -> None:
    """Assemble the synthetic book in both modes, alternating; print medians."""
    from engine.audiobook import ChapterSource, assemble_streamed
    from tests.fixtures.synthetic_book import RATE, _audio

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=660.0, help="audio seconds in the book (default 660)")
    p.add_argument("--chapters", type=int, default=1)
    p.add_argument("--segment", type=float, default=5.5, help="seconds per piece (a checkpoint)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args()
    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    rng = np.random.default_rng(0)
    per_chapter = int(round(args.seconds / args.chapters / args.segment))
    book = [[_audio(rng, args.segment)[0] for _ in range(per_chapter)] for _ in range(args.chapters)]
    sources = [
        ChapterSource(f"Chapter {n}", RATE, lambda ps=pieces: ((s, []) for s in ps))
        for n, pieces in enumerate(book, start=1)
    ]
    tmp = Path(tempfile.mkdtemp(prefix="spool-assembly-threads-"))
    runs = []
    try:
        for rnd in range(args.rounds):
            modes = [False, True] if rnd % 2 == 0 else [True, False]
            for concurrent in modes:
                out = tmp / f"r{rnd}-{int(concurrent)}"
                steps: dict[str, float] = {}
                t0, c0, th0 = time.perf_counter(), time.process_time(), time.thread_time()
                manifest = assemble_streamed(
                    sources, out, title="Bench", concurrent=concurrent, timings=steps
                )
                r = {
                    "mode": "concurrent" if concurrent else "serial",
                    "round": rnd,
                    "wall_s": time.perf_counter() - t0,
                    "cpu_s": time.process_time() - c0,
                    "thread_cpu_s": time.thread_time() - th0,
                    "audio_s": manifest["duration"],
                    **steps,
                }
                runs.append(r)
                print(
                    f"# round {rnd + 1} {r['mode']}: wall {r['wall_s']:.2f} s, CPU {r['cpu_s']:.2f} s, "
                    f"calling thread {r['thread_cpu_s']:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
                shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for mode in ("serial", "concurrent"):
        rs = [r for r in runs if r["mode"] == mode]
        rows.append(
            [
                mode,
                *(
                    median(r[k] for r in rs)
                    for k in ("wall_s", "cpu_s", "thread_cpu_s", "read_s", "m4b_s", "mp3_wait_s")
                ),
            ]
        )
    print(describe_machine(machine()))
    print(
        f"# {args.seconds:.0f} s of audio in {args.chapters} chapter(s), pieces of {args.segment} s, medians of {args.rounds}"
    )
    print(
        table(["encoders", "wall s", "CPU s", "calling thread CPU s", "read s", "m4b s", "mp3 wait s"], rows)
    )
    save_json(args.json, {"benchmark": "assembly_threads", "machine": info, "args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()

"""Worker layouts on one machine: processes x engine threads, side by side in one run.

Each layout starts its processes (one warm engine each), releases them together on a
barrier, and has every process render the same text once. Printed per layout: wall time
(the slowest process), audio seconds made by all, throughput (audio s per wall s) and
each process's time to its first chunk. ``spin=off`` turns off onnxruntime's thread
spinning (``session.intra_op.allow_spinning=0``), which matters when processes share cores.

    python benchmarks/layouts.py
    python benchmarks/layouts.py --chars 300 --layouts 1x2,2x1    # quicker
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

from common import ASSETS, describe_machine, load_text, machine, save_json, table

#: Layouts measured by default: processes x threads, spinning on or off.
DEFAULT_LAYOUTS = "1x2,2x1,2x2,2x2-nospin"


def _work(threads: int, spin: bool, text: str, assets: str, barrier: object, results: object) -> None:
    """One worker process: load an engine, wait for the others, render ``text`` once."""
    import engine.kokoro as kokoro
    from engine import Engine

    if not spin:
        plain = kokoro.session_options

        def no_spin(n: int | None) -> object:
            opts = plain(n)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return opts

        kokoro.session_options = no_spin
    eng = Engine.from_assets(assets, threads=threads)
    barrier.wait()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    first = None
    audio = 0.0
    for chunk in eng.stream(text, voice="af_heart"):
        if first is None:
            first = time.perf_counter() - t0
        audio += len(chunk.samples) / chunk.sample_rate
    results.put((time.perf_counter() - t0, first, audio))  # type: ignore[attr-defined]


def run_layout(procs: int, threads: int, spin: bool, text: str, assets: str) -> dict:
    """Measure one layout; return its figures."""
    barrier = mp.Barrier(procs)
    results: mp.Queue = mp.Queue()
    workers = [
        mp.Process(target=_work, args=(threads, spin, text, assets, barrier, results)) for _ in range(procs)
    ]
    for w in workers:
        w.start()
    got = [results.get(timeout=1800) for _ in workers]
    for w in workers:
        w.join()
    wall = max(g[0] for g in got)
    audio = sum(g[2] for g in got)
    return {
        "processes": procs,
        "threads": threads,
        "spin": spin,
        "wall_s": wall,
        "audio_s": audio,
        "throughput": audio / wall,
        "first_chunk_s": [g[1] for g in got],
    }


def parse_layout(spec: str) -> tuple[int, int, bool]:
    """``2x1`` or ``2x2-nospin`` -> (processes, threads, spin)."""
    spin = not spec.endswith("-nospin")
    procs, threads = spec.removesuffix("-nospin").split("x")
    return int(procs), int(threads), spin


def main() -> None:
    """Parse arguments, measure each layout, print a table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="paragraph", help="text name or path (default paragraph)")
    p.add_argument("--chars", type=int, default=700, help="use the first N characters (default 700)")
    p.add_argument("--layouts", default=DEFAULT_LAYOUTS, help=f"comma list (default {DEFAULT_LAYOUTS})")
    p.add_argument("--assets", default=str(ASSETS), help="assets dir (default $SPOOL_ASSETS_DIR or ~/.cache/spool)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    args = p.parse_args()
    print(describe_machine(machine()), file=sys.stderr, flush=True)
    _, text = load_text(args.text)
    text = text[: args.chars]
    rows = []
    results = []
    for spec in args.layouts.split(","):
        procs, threads, spin = parse_layout(spec.strip())
        r = run_layout(procs, threads, spin, text, args.assets)
        results.append(r)
        rows.append(
            [
                f"{procs}x{threads}",
                "on" if spin else "off",
                f"{r['wall_s']:.1f}",
                f"{r['audio_s']:.1f}",
                f"{r['throughput']:.2f}",
                " ".join(f"{s:.2f}" for s in r["first_chunk_s"]),
            ]
        )
        print(f"# {spec}: done", file=sys.stderr, flush=True)
    print(table(["layout", "spin", "wall s", "audio s", "audio s / wall s", "first chunk s"], rows))
    save_json(args.json, {"machine": machine(), "chars": args.chars, "layouts": results})


if __name__ == "__main__":
    main()

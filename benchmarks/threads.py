"""Is one model call on two threads as steady as two one-thread calls on two processes?

The same short input (a job's typical first segment) is run in rounds, side by side in one
run. Each round times, one after the other:

- ``2 threads``: one call on a session with two intra-op threads;
- ``1 thread``: one call on a session with one thread, nothing else running;
- ``2 procs x 1``: one call in each of two worker processes (one thread each) at once.

The input, and so the work, is identical in every call (the output is bit-identical across
thread counts). Printed: p10/p50/p90 and p90/p10 per variant, and how many rounds the
two-thread call took more than 1.2x its fastest. A two-thread call synchronises its threads
at every operator; two processes never do. When the two show different spreads in the same
seconds, the spread comes from that synchronisation (where the host puts the two vCPUs),
not from the cores being busy.

    python benchmarks/threads.py
    python benchmarks/threads.py --rounds 10 --text "Alice was not"
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

from common import ASSETS, MODEL, describe_machine, fmt, machine, percentile, save_json, table, verdict

#: The default input: the opening segment of benchmarks/texts/paragraph.txt at the default budget.
DEFAULT_TEXT = "Alice was not a bit hurt,"


def _session(threads: int, assets: str):  # noqa: ANN202 (onnxruntime type)
    """A session on the durations model with Spool's options and ``threads`` intra-op threads."""
    import onnxruntime as ort

    from engine import kokoro

    model = Path(assets) / MODEL.name
    timed = kokoro.prepare_timed_model(model) or model  # the file the engine runs
    return ort.InferenceSession(
        str(timed), sess_options=kokoro.session_options(threads), providers=["CPUExecutionProvider"]
    )


def _feeds(text: str, assets: str, voice: str) -> dict:
    """Model inputs for ``text`` as the engine builds them."""
    import numpy as np

    from engine import Engine

    eng = Engine.from_assets(assets, threads=1, warmup=False)
    rv = eng.check(voice, 1.0, None)
    ids, _ = eng.model.tokenize(eng.g2p(text, rv.lang).text)
    return {
        "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
        "style": rv.voice.style_for(len(ids)).reshape(1, -1).astype(np.float32),
        "speed": np.array([1.0], dtype=np.float32),
    }


def _timed(session, feeds: dict) -> float:  # noqa: ANN001
    """Seconds for one call."""
    t0 = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - t0


def _worker(feeds: dict, assets: str, start: object, results: object, rounds: int) -> None:
    """A one-thread process: on each release of ``start``, run once and report the time."""
    session = _session(1, assets)
    session.run(None, feeds)
    results.put(None)  # ready
    for _ in range(rounds):
        start.wait()
        results.put(_timed(session, feeds))


def _lead_seconds(audio, rate: int = 24000) -> float:  # noqa: ANN001
    """Seconds of near-silence the model's output opens with (the engine's speech level)."""
    from engine.chunk import speech_onset

    onset = speech_onset(audio)
    return (onset if onset is not None else len(audio)) / rate


def stats(values: list[float]) -> dict:
    """p10, p50, p90 and p90/p10 of seconds."""
    p10, p50, p90 = (percentile(values, q) for q in (10, 50, 90))
    return {"p10": p10, "p50": p50, "p90": p90, "spread": p90 / p10, "values": values}


def main() -> None:
    """Parse arguments, run the rounds, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--text", default=DEFAULT_TEXT, help=f"input text (default {DEFAULT_TEXT!r})")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--assets", default=str(ASSETS))
    p.add_argument("--json", default=None, metavar="OUT", help="also write all results to this JSON file")
    args = p.parse_args()

    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    feeds = _feeds(args.text, args.assets, args.voice)
    two, one = _session(2, args.assets), _session(1, args.assets)
    audio = two.run(None, feeds)[0].reshape(-1)
    same = bool((one.run(None, feeds)[0].reshape(-1) == audio).all())
    lead = _lead_seconds(audio)

    ctx = mp.get_context("spawn")
    start = ctx.Barrier(3)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(feeds, args.assets, start, results, args.rounds), daemon=True)
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        results.get(timeout=300)

    times: dict[str, list[float]] = {"2 threads": [], "1 thread": [], "2 procs x 1": []}
    for r in range(args.rounds):
        times["2 threads"].append(_timed(two, feeds))
        times["1 thread"].append(_timed(one, feeds))
        start.wait()
        times["2 procs x 1"].append(max(results.get(timeout=300) for _ in procs))
        print(
            f"#   {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
            file=sys.stderr,
            flush=True,
        )
    for proc in procs:
        proc.join(timeout=30)

    summary = {k: stats(v) for k, v in times.items()}
    fastest = min(times["2 threads"])
    slow_rounds = sum(t > 1.2 * fastest for t in times["2 threads"])
    print(describe_machine(info))
    print(f"# input {args.text!r}, voice {args.voice}, {args.rounds} rounds, variants interleaved")
    print(
        f"# output: {len(audio) / 24000:.2f} s of audio, bit-identical on 1 and 2 threads: {same}; "
        f"it opens with {lead:.2f} s of near-silence (the model's pause for its leading pad)"
    )
    rows = [[k, *(fmt(s[q], 3) for q in ("p10", "p50", "p90")), fmt(s["spread"])] for k, s in summary.items()]
    print(table(["seconds per call", "p10", "p50", "p90", "p90/p10"], rows))
    print(f"2-thread rounds over 1.2x the fastest 2-thread call: {slow_rounds} of {args.rounds}")
    print(
        f"p90/p10 <= 1.2: 2 threads {verdict(summary['2 threads']['spread'], 1.2, True)}, "
        f"1 thread {verdict(summary['1 thread']['spread'], 1.2, True)}, "
        f"2 procs x 1 {verdict(summary['2 procs x 1']['spread'], 1.2, True)}"
    )
    save_json(
        args.json,
        {
            "benchmark": "threads",
            "machine": info,
            "machine_after": machine()["loadavg"],
            "args": vars(args),
            "summary": summary,
            "slow_two_thread_rounds": slow_rounds,
            "audio_s": len(audio) / 24000,
            "identical_outputs": same,
            "lead_silence_s": lead,
        },
    )


if __name__ == "__main__":
    main()

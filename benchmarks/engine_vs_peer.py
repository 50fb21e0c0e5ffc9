"""Spool's engine vs kokoro-onnx (same int8 model, same voice), side by side in one run (issue 3).

Every measurement runs in a fresh child process for each system, in alternating order, and
the table shows medians over ``--repeats``. Metrics: time until the system is ready (model
load; Spool's load includes its warm-up, and the peer gets one short warm-up render too),
time to first audio (from the call to the first yielded audio), total wall time, audio
seconds, speed (audio s per wall s) and peak resident memory (``VmHWM`` of the child).

    python benchmarks/engine_vs_peer.py                      # paragraph + chapter, 2 threads, 3 repeats
    python benchmarks/engine_vs_peer.py --texts tiny --repeats 1   # check the harness in a minute
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import (
    PEER_PYTHON,
    PEER_VOICES,
    describe_machine,
    ensure_peer_env,
    fmt,
    load_text,
    machine,
    median,
    project_python,
    ratio,
    run_child,
    save_json,
    table,
    verdict,
)

SYSTEM_NAMES = ("spool", "peer")
METRICS = ("ready_s", "ttfa_s", "wall_s", "audio_s", "rtf", "vmhwm_mb", "cpu_s", "pieces", "first_audio_s")


def child_args(system: str, text_file: str, threads: int, args: argparse.Namespace) -> tuple[str, list[str]]:
    """Interpreter and runner arguments for one measurement of ``system``."""
    common = ["--system", system, "--text-file", text_file, "--threads", str(threads), "--voice", args.voice]
    if args.assets:
        common += ["--assets", args.assets]
    if system == "spool":
        return project_python(), common
    extra = ["--peer-voices", str(PEER_VOICES)]
    if not args.no_peer_warmup:
        extra.append("--warmup")
    return str(PEER_PYTHON), common + extra


def measure(args: argparse.Namespace) -> dict:
    """Run every (text, threads, repeat, system) measurement and return raw results."""
    results: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="spool-bench-"))
    step = 0
    for spec in args.texts:
        name, text = load_text(spec)
        text_file = tmp / f"{name}.txt"
        text_file.write_text(text, encoding="utf-8")
        for threads in args.threads:
            for rep in range(args.repeats):
                order = args.systems if step % 2 == 0 else args.systems[::-1]
                step += 1
                for system in order:
                    python, cargs = child_args(system, str(text_file), threads, args)
                    print(
                        f"# {name} threads={threads} repeat={rep + 1}/{args.repeats} {system} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    load1 = os.getloadavg()[0]
                    res = run_child(python, cargs, timeout=args.timeout)
                    res["loadavg_before"] = load1
                    res.update(text=name, words=len(text.split()), repeat=rep, order=list(order))
                    print(
                        f"#   ttfa {fmt(res['ttfa_s'])} s  wall {fmt(res['wall_s'])} s  "
                        f"audio {fmt(res['audio_s'])} s  peak {fmt(res['vmhwm_mb'], 0)} MB",
                        file=sys.stderr,
                        flush=True,
                    )
                    results.append(res)
    return {"results": results}


def summarise(results: list[dict]) -> list[dict]:
    """Medians per (text, threads, system)."""
    keys = list(dict.fromkeys((r["text"], r["threads"], r["system"]) for r in results))
    rows = []
    for text, threads, system in keys:
        runs = [r for r in results if (r["text"], r["threads"], r["system"]) == (text, threads, system)]
        row = {"text": text, "threads": threads, "system": system, "n": len(runs), "words": runs[0]["words"]}
        for m in METRICS:
            row[m] = median(r.get(m) for r in runs)
        rows.append(row)
    return rows


def ratios(summary: list[dict]) -> list[dict]:
    """Spool/peer ratios per (text, threads) with the goals of issue 3."""
    out = []
    by = {(r["text"], r["threads"], r["system"]): r for r in summary}
    for text, threads in dict.fromkeys((r["text"], r["threads"]) for r in summary):
        s, p = by.get((text, threads, "spool")), by.get((text, threads, "peer"))
        if not s or not p:
            continue
        out.append(
            {
                "text": text,
                "threads": threads,
                "ttfa": ratio(s["ttfa_s"], p["ttfa_s"]),
                "throughput": ratio(s["rtf"], p["rtf"]),
                "same_text_speed": ratio(p["wall_s"], s["wall_s"]),
                "peak_memory": ratio(s["vmhwm_mb"], p["vmhwm_mb"]),
                "ready": ratio(s["ready_s"], p["ready_s"]),
            }
        )
    return out


def report(payload: dict) -> None:
    """Print the medians table and the ratios against the goals."""
    print(describe_machine(payload["machine"]))
    a = payload["args"]
    print(
        f"# voice {a['voice']}, medians of {a['repeats']} fresh processes per cell; "
        "rtf = audio s / wall s (higher is faster); peak = VmHWM of the child"
    )
    headers = [
        "text",
        "words",
        "thr",
        "system",
        "n",
        "ready s",
        "TTFA s",
        "wall s",
        "audio s",
        "rtf",
        "peak MB",
        "first audio s",
        "pieces",
    ]
    rows = [
        [
            r["text"],
            r["words"],
            r["threads"],
            r["system"],
            r["n"],
            r["ready_s"],
            r["ttfa_s"],
            r["wall_s"],
            r["audio_s"],
            r["rtf"],
            fmt(r["vmhwm_mb"], 0),
            r["first_audio_s"],
            fmt(r["pieces"], 0),
        ]
        for r in payload["summary"]
    ]
    print(table(headers, rows))
    print()
    print(
        "# Spool / kokoro-onnx. Goals (issue 3): TTFA <= 0.40x on the paragraph; throughput >= 1.0x; "
        "peak memory <= 0.60x on the chapter."
    )
    print(
        "# throughput: 'same text' = peer wall / Spool wall for the same text (the goal's verdict); "
        "'rtf' = ratio of audio s per wall s (counts each system's own pauses)"
    )
    if not payload["ratios"]:
        print("(no ratios: both systems must be measured)")
        return
    rrows = []
    for r in payload["ratios"]:
        ttfa_goal = verdict(r["ttfa"], 0.40, True) if r["text"] == "paragraph" else ""
        mem_goal = verdict(r["peak_memory"], 0.60, True) if r["text"] == "chapter" else ""
        rrows.append(
            [
                r["text"],
                r["threads"],
                fmt(r["ttfa"]) + "x",
                ttfa_goal,
                fmt(r["same_text_speed"]) + "x",
                verdict(r["same_text_speed"], 1.0, False),
                fmt(r["throughput"]) + "x",
                fmt(r["peak_memory"]) + "x",
                mem_goal,
                fmt(r["ready"]) + "x",
            ]
        )
    headers = ["text", "thr", "TTFA", "goal", "same text", "goal", "rtf", "peak mem", "goal", "ready"]
    print(table(headers, rrows))


def main() -> None:
    """Parse arguments, measure, print, save."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--texts",
        default="paragraph,chapter",
        help="comma-separated: tiny, paragraph, minute, chapter, alice-ch1, alice-ch2, or paths",
    )
    p.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--systems", default="spool,peer", help="which systems to run (default both)")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--assets", default=None, help="assets dir (default $SPOOL_ASSETS_DIR or ~/.cache/spool)")
    p.add_argument("--no-peer-warmup", action="store_true", help="measure the peer cold (no warm-up render)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    p.add_argument("--json", default=None, metavar="OUT", help="also write all results to this JSON file")
    args = p.parse_args()
    args.texts = [t.strip() for t in args.texts.split(",") if t.strip()]
    args.threads = [int(t) for t in args.threads.split(",")]
    args.systems = tuple(s for s in SYSTEM_NAMES if s in args.systems.split(","))

    ensure_peer_env()
    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    raw = measure(args)
    summary = summarise(raw["results"])
    payload = {
        "benchmark": "engine_vs_peer",
        "machine": info,
        "machine_after": machine()["loadavg"],
        "args": {**vars(args)},
        "summary": summary,
        "ratios": ratios(summary),
        **raw,
    }
    report(payload)
    save_json(args.json, payload)


if __name__ == "__main__":
    main()

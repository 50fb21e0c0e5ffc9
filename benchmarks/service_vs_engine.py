"""The whole service vs the engine alone, in one run (issue 4).

Part 1, overhead: the same ~60-second text rendered by the engine directly (a fresh child
process, 2 threads, encoding the same format) and through the service (a private Redis,
local or moto S3 storage, one Celery worker process with 2 engine threads, the web app
under gunicorn via ``spool serve``: POST /v1/jobs, poll until succeeded, download), in
alternating order. Goal: service wall / engine wall <= 1.05.

Part 2, throughput: N short jobs submitted at once to one worker process with two engine
threads, and to two worker processes with one thread each, alternating. Goal: two
processes >= 1.2x the audio seconds per wall second of one.

    python benchmarks/service_vs_engine.py                        # both parts, 3 repeats
    python benchmarks/service_vs_engine.py --part overhead --text tiny --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import (
    describe_machine,
    exit_on_sigterm,
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
from private_service import SpoolService, audio_seconds, parse_iso


def engine_run(text_file: Path, threads: int, fmt_name: str, voice: str) -> dict:
    """Render the text with the engine in a fresh child process (encoding ``fmt_name``)."""
    args = ["--system", "spool", "--text-file", str(text_file), "--threads", str(threads), "--voice", voice]
    if fmt_name:
        args += ["--encode", fmt_name]
    res = run_child(project_python(), args, timeout=3600)
    return {"wall_s": res["wall_s"], "audio_s": res["audio_s"], "encode_s": res.get("encode_s"), "raw": res}


def service_run(svc: SpoolService, text: str, fmt_name: str, voice: str, poll: float) -> dict:
    """Submit one job, wait for it, download it; client-side and server-side times."""
    t0_epoch = time.time()
    t0 = time.perf_counter()
    job = svc.submit(text, voice=voice, fmt=fmt_name)
    done = svc.wait(job["id"], interval=poll)
    t_done = time.perf_counter()
    data = svc.download(job["id"])
    t_end = time.perf_counter()
    download_s = t_end - t_done
    finished = parse_iso(done.get("finished_at"))
    started = parse_iso(done.get("started_at"))
    # Exact: the server's finish time (same clock) plus the download, free of the polling interval.
    exact = (finished - t0_epoch) + download_s if finished else None
    result = done.get("result") or {}
    return {
        "wall_s": exact if exact is not None else t_end - t0,
        "client_wall_s": t_end - t0,
        "queue_s": (started - t0_epoch) if started else None,
        "render_s": result.get("render_seconds"),
        "download_s": download_s,
        "audio_s": result.get("duration") or audio_seconds(data),
        "bytes": len(data),
        "job_id": job["id"],
    }


def overhead(args: argparse.Namespace, log_dir: Path) -> dict:
    """Part 1: alternate engine and service runs of the same text."""
    name, text = load_text(args.text)
    text_file = log_dir / f"{name}.txt"
    text_file.write_text(text, encoding="utf-8")
    runs: list[dict] = []
    print(
        f"# overhead: starting the service (1 worker x {args.threads} threads, {args.storage} storage)",
        file=sys.stderr,
        flush=True,
    )
    with SpoolService(workers=1, threads=args.threads, storage=args.storage, log_dir=log_dir) as svc:
        warm = svc.submit("Warming up the worker.", voice=args.voice, fmt=args.format)
        svc.wait(warm["id"])
        svc.download(warm["id"])
        for rep in range(args.repeats):
            order = ("engine", "service") if rep % 2 == 0 else ("service", "engine")
            for who in order:
                if who == "engine":
                    r = engine_run(text_file, args.threads, args.format, args.voice)
                else:
                    r = service_run(svc, text, args.format, args.voice, args.poll)
                r.update(who=who, repeat=rep)
                runs.append({k: v for k, v in r.items() if k != "raw"})
                print(
                    f"#   {rep + 1}/{args.repeats} {who}: wall {fmt(r['wall_s'])} s, "
                    f"audio {fmt(r['audio_s'])} s",
                    file=sys.stderr,
                    flush=True,
                )
    eng = [r for r in runs if r["who"] == "engine"]
    svc_runs = [r for r in runs if r["who"] == "service"]
    pair_ratios = [ratio(s["wall_s"], e["wall_s"]) for s, e in zip(svc_runs, eng, strict=False)]
    return {
        "text": name,
        "words": len(text.split()),
        "runs": runs,
        "engine_wall_s": median(r["wall_s"] for r in eng),
        "service_wall_s": median(r["wall_s"] for r in svc_runs),
        "service_client_wall_s": median(r["client_wall_s"] for r in svc_runs),
        "service_queue_s": median(r["queue_s"] for r in svc_runs),
        "service_render_s": median(r["render_s"] for r in svc_runs),
        "engine_audio_s": median(r["audio_s"] for r in eng),
        "service_audio_s": median(r["audio_s"] for r in svc_runs),
        "ratio": ratio(median(r["wall_s"] for r in svc_runs), median(r["wall_s"] for r in eng)),
        "ratio_of_pairs": median(pair_ratios),
    }


def short_texts(n: int) -> list[str]:
    """``n`` short texts (20-70 word paragraphs of Alice chapter 1, cycled if needed)."""
    _, chapter = load_text("alice-ch1")
    paras = [p.strip() for p in chapter.split("\n\n")[1:] if 20 <= len(p.split()) <= 70]
    return [paras[i % len(paras)] for i in range(n)]


def batch_run(svc: SpoolService, texts: list[str], args: argparse.Namespace) -> dict:
    """Submit every text at once, wait for all, download all; throughput in audio s per wall s."""
    t0 = time.perf_counter()
    jobs = [svc.submit(t, voice=args.voice, fmt=args.format) for t in texts]
    audio = 0.0
    for job in jobs:
        done = svc.wait(job["id"], interval=args.poll)
        svc.download(job["id"])
        audio += (done.get("result") or {}).get("duration") or 0.0
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "audio_s": audio, "throughput": audio / wall if wall else None}


def throughput(args: argparse.Namespace, log_dir: Path) -> dict:
    """Part 2: one 2-thread worker process vs two 1-thread processes, alternating."""
    texts = short_texts(args.jobs)
    layouts = {"1 proc x 2 thr": (1, 2), "2 proc x 1 thr": (2, 1)}
    names = list(layouts)
    runs: list[dict] = []
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            workers, threads = layouts[name]
            print(
                f"# throughput {rep + 1}/{args.repeats}: {name}, {len(texts)} jobs",
                file=sys.stderr,
                flush=True,
            )
            with SpoolService(workers=workers, threads=threads, storage=args.storage, log_dir=log_dir) as svc:
                warm = [svc.submit("Warming up.", voice=args.voice, fmt=args.format) for _ in range(workers)]
                for w in warm:
                    svc.wait(w["id"])
                r = batch_run(svc, texts, args)
            r.update(layout=name, repeat=rep)
            runs.append(r)
            print(
                f"#   wall {fmt(r['wall_s'])} s, audio {fmt(r['audio_s'])} s, {fmt(r['throughput'])} x",
                file=sys.stderr,
                flush=True,
            )
    summary = {n: median(r["throughput"] for r in runs if r["layout"] == n) for n in names}
    return {
        "jobs": len(texts),
        "words": sum(len(t.split()) for t in texts),
        "runs": runs,
        "throughput": summary,
        "ratio": ratio(summary[names[1]], summary[names[0]]),
    }


def report(payload: dict) -> None:
    """Print both parts' tables."""
    print(describe_machine(payload["machine"]))
    a = payload["args"]
    if "overhead" in payload:
        o = payload["overhead"]
        print(
            f"# overhead: text {o['text']} ({o['words']} words), format {a['format']}, {a['threads']} engine "
            f"threads, {a['storage']} storage, medians of {a['repeats']} (alternating order)"
        )
        rows = [
            ["engine (child process)", o["engine_wall_s"], o["engine_audio_s"], "-", "-", "-"],
            [
                "service (POST..download)",
                o["service_wall_s"],
                o["service_audio_s"],
                o["service_client_wall_s"],
                o["service_queue_s"],
                o["service_render_s"],
            ],
        ]
        print(table(["path", "wall s", "audio s", "client wall s", "queue s", "worker render s"], rows))
        print(
            f"service / engine wall: {fmt(o['ratio'])}x (median of pairs {fmt(o['ratio_of_pairs'])}x); "
            f"goal <= 1.05: {verdict(o['ratio'], 1.05, True)}"
        )
        print()
    if "throughput" in payload:
        t = payload["throughput"]
        print(
            f"# throughput: {t['jobs']} short jobs ({t['words']} words) submitted at once, "
            f"medians of {a['repeats']} (alternating order)"
        )
        rows = []
        for name, thr in t["throughput"].items():
            rs = [r for r in t["runs"] if r["layout"] == name]
            rows.append([name, median(r["wall_s"] for r in rs), median(r["audio_s"] for r in rs), thr])
        print(table(["layout", "wall s", "audio s", "audio s / wall s"], rows))
        print(f"2 processes / 1 process: {fmt(t['ratio'])}x; goal >= 1.2: {verdict(t['ratio'], 1.2, False)}")


def main() -> None:
    """Parse arguments, run the chosen parts, print, save."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("overhead", "throughput", "both"), default="both")
    p.add_argument(
        "--text", default="minute", help="text for the overhead part (name or path; default minute)"
    )
    p.add_argument("--threads", type=int, default=2, help="engine threads for the overhead part")
    p.add_argument("--jobs", type=int, default=6, help="short jobs for the throughput part")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--format", default="mp3", help="output format of the jobs (and of the engine's encode)")
    p.add_argument(
        "--storage", choices=("local", "s3"), default="local", help="s3: a moto server on loopback"
    )
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between job polls")
    p.add_argument("--json", default=None, metavar="OUT", help="also write all results to this JSON file")
    args = p.parse_args()
    exit_on_sigterm()
    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="spool-bench-logs-"))
    print(f"# service logs in {log_dir}", file=sys.stderr, flush=True)
    payload: dict = {"benchmark": "service_vs_engine", "machine": info, "args": vars(args)}
    if args.part in ("overhead", "both"):
        payload["overhead"] = overhead(args, log_dir)
    if args.part in ("throughput", "both"):
        payload["throughput"] = throughput(args, log_dir)
    payload["machine_after"] = machine()["loadavg"]
    report(payload)
    save_json(args.json, payload)


if __name__ == "__main__":
    main()

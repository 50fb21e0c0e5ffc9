"""The fair comparison: kokoro-onnx in its own best layout vs Spool's book route, in one run (issue 18).

The same chapter text (Alice chapter 1 by default, or its first paragraphs up to ``--chars``
characters), voice and int8 model, rendered by:

* ``peer-1xN``: kokoro-onnx 0.6.1 (``bench-env/``) in one process with N intra-op threads;
* ``peer-Nx1``: kokoro-onnx in N one-thread processes, each taking a contiguous part of the
  text (cut at paragraph boundaries, parts of about equal length), released together once
  all are loaded; wall is first start to last finish;
* ``spool-Nx1``: Spool's service with N one-thread workers: ``POST /v1/books`` with the text as
  a one-chapter plain-text book, until the book has succeeded (plan, fan-out, checkpoints and
  the assembly of the M4B, chapter MP3, subtitles and manifest included);
* optionally (``--setups``) ``spool-engine-Nx1``: Spool's engine alone in N one-thread
  processes with the same parts as the peer, to separate the engine from the service.

One Spool service is started before the first run and kept (warm, as a deployed one is);
the set-ups alternate, the order rotating each repeat. CPU is user + system time: for the
peer, each child's own during its render (``getrusage`` inside it, all its threads); for the
service, every process it started and their descendants (redis, gunicorn, Celery and the worker processes,
and the children they reaped, e.g. ffmpeg; found by parent pid), read from ``/proc/<pid>/stat`` before and after
the book. Reported: audio minutes per wall minute and per CPU minute, and Spool / peer-best.

    python benchmarks/peer_layouts.py                      # chapter 1, N=2, 1 repeat
    python benchmarks/peer_layouts.py --chars 1500 --repeats 1    # quick check of the harness
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from book_phases import print_phases, render_book
from common import (
    ASSETS,
    PEER_PYTHON,
    PEER_VOICES,
    RUNNER,
    describe_machine,
    ensure_peer_env,
    exit_on_sigterm,
    fmt,
    load_text,
    machine,
    median,
    project_python,
    save_json,
    table,
)
from private_service import SpoolService

_TICK = os.sysconf("SC_CLK_TCK")


def chapter_text(spec: str, chars: int | None) -> str:
    """The chapter's heading and whole paragraphs (all, or up to about ``chars`` characters)."""
    _, text = load_text(spec)
    paras = [p.strip() for p in text.split("\n\n") if p.strip()]
    if chars:
        kept = paras[:2]
        for p in paras[2:]:
            if sum(len(x) for x in kept) + len(p) > chars:
                break
            kept.append(p)
        paras = kept
    return "\n\n".join(paras)


def split_parts(text: str, n: int) -> list[str]:
    """Cut ``text`` at paragraph boundaries into ``n`` contiguous parts of about equal length."""
    paras = text.split("\n\n")
    if len(paras) > 1 and len(paras[0]) < 80:  # a heading goes with the paragraph after it
        paras = [paras[0] + "\n\n" + paras[1], *paras[2:]]
    total = sum(len(p) for p in paras)
    parts: list[list[str]] = [[]]
    done = 0
    for p in paras:
        # Start the next part once this one has its share (never leaving a later part empty).
        if parts[-1] and len(parts) < n and done >= total * len(parts) / n:
            parts.append([])
        parts[-1].append(p)
        done += len(p)
    return ["\n\n".join(ps) for ps in parts]


def tree_cpu(root_pids: set[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants, reaped children included.

    Descendants are found by parent pid, not by session: ``spool serve`` starts each child in a
    session of its own (so a signal to one does not reach the others).
    """
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        # fields[0] is the state (stat field 3): ppid is field 4, utime..cstime fields 14-17.
        stats[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [p for p in root_pids if p in stats], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def run_children(system: str, parts: list[str], threads: int, args: argparse.Namespace, tmp: Path) -> dict:
    """Render each part in its own fresh child (``_runner.py``), all released together once loaded."""
    python = str(PEER_PYTHON) if system == "peer" else project_python()
    tag = f"{system}-{len(parts)}x{threads}-{time.monotonic_ns()}"
    go = tmp / f"{tag}.go"
    procs = []
    for k, part in enumerate(parts):
        f = tmp / f"{tag}-part{k}.txt"
        f.write_text(part, encoding="utf-8")
        cmd = [python, str(RUNNER), "--system", system, "--threads", str(threads), "--voice", args.voice]
        cmd += ["--text-file", str(f), "--assets", str(args.assets), "--go-file", str(go)]
        cmd += ["--ready-file", str(tmp / f"{tag}-ready{k}")]
        if system == "peer":
            cmd += ["--peer-voices", str(PEER_VOICES), "--warmup"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 600
    while not all((tmp / f"{tag}-ready{k}").exists() for k in range(len(parts))):
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                p.kill()
            raise RuntimeError(f"{tag}: a child did not get ready: {procs[0].communicate()[1][-2000:]}")
        time.sleep(0.05)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=4 * 3600)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"{tag}: child failed (rc={p.returncode}): {err[-2000:]}")
        import json

        results.append(json.loads(lines[-1]))
    wall = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    return {
        "wall_s": wall,
        "audio_s": sum(r["audio_s"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
        "parts_wall_s": [r["wall_s"] for r in results],
        "parts_audio_s": [r["audio_s"] for r in results],
    }


def run_service(svc: SpoolService, text: str, args: argparse.Namespace) -> dict:
    """Render the text as a one-chapter book through the running service; CPU of all its processes."""
    roots = {proc.pid for _, proc in svc.procs}
    cpu0 = tree_cpu(roots)
    # The book's phases (upload, plan, render, assembly, gaps) with their wall and CPU, printed per run.
    r = render_book(svc, text, args.voice, poll=0.2)
    r["cpu_s"] = tree_cpu(roots) - cpu0
    print_phases(r, out=sys.stderr)
    return r


def main() -> None:
    """Parse arguments, run the set-ups interleaved, print the table with Spool / peer-best."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="alice-ch1", help="text name or path (default alice-ch1)")
    p.add_argument("--chars", type=int, default=None, help="only whole paragraphs up to N characters")
    p.add_argument("-n", "--n", type=int, default=2, help="threads / processes / workers (default 2)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--setups", default="peer-1xN,peer-Nx1,spool-Nx1", help="comma list; add spool-engine-Nx1")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--storage", choices=("local", "s3"), default="local")
    p.add_argument("--assets", default=str(ASSETS))
    p.add_argument("--json", default=None, metavar="OUT", help="also write every measurement here")
    args = p.parse_args()
    exit_on_sigterm()
    ensure_peer_env()

    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    n = args.n
    text = chapter_text(args.text, args.chars)
    parts = split_parts(text, n)
    names = [s.strip() for s in args.setups.split(",") if s.strip()]
    labels = {
        "peer-1xN": f"kokoro-onnx, 1 process x {n} threads",
        "peer-Nx1": f"kokoro-onnx, {n} processes x 1 thread (text split in {n})",
        "spool-Nx1": f"Spool service, book route, {n} workers x 1 thread",
        "spool-engine-Nx1": f"Spool engine alone, {n} processes x 1 thread (text split in {n})",
    }
    tmp = Path(tempfile.mkdtemp(prefix="spool-peer-layouts-"))
    runs: list[dict] = []
    with SpoolService(workers=n, threads=1, storage=args.storage, log_dir=tmp) as svc:
        # One warm-up book so the workers' first book pays no one-off costs in the timed runs.
        run_service(svc, "Warm up.\n\nOne short paragraph.", args)
        for rep in range(args.repeats):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                print(f"# {rep + 1}/{args.repeats}: {labels[name]} ...", file=sys.stderr, flush=True)
                if name == "peer-1xN":
                    r = run_children("peer", [text], n, args, tmp)
                elif name == "peer-Nx1":
                    r = run_children("peer", parts, 1, args, tmp)
                elif name == "spool-engine-Nx1":
                    r = run_children("spool", parts, 1, args, tmp)
                else:
                    r = run_service(svc, text, args)
                r.update(setup=name, repeat=rep, loadavg=list(os.getloadavg()))
                r["per_wall"] = r["audio_s"] / r["wall_s"]
                r["per_cpu"] = r["audio_s"] / r["cpu_s"] if r.get("cpu_s") else None
                runs.append(r)
                print(
                    f"#   wall {fmt(r['wall_s'])} s, audio {fmt(r['audio_s'])} s, CPU {fmt(r.get('cpu_s'))} s",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {}
    for name in names:
        rs = [r for r in runs if r["setup"] == name]
        summary[name] = {
            k: median(r.get(k) for r in rs) for k in ("wall_s", "audio_s", "cpu_s", "per_wall", "per_cpu")
        }
    peers = [s for s in names if s.startswith("peer")]
    best_wall = max((summary[s]["per_wall"] for s in peers), default=None)
    best_cpu = max((summary[s]["per_cpu"] or 0 for s in peers), default=None)
    # Audio minutes reward longer pauses; the text is the same in every set-up, so the ratio of
    # wall times says how much faster the same words were read, whatever the pauses.
    best_text_wall = min((summary[s]["wall_s"] for s in peers), default=None)
    rows = []
    for name in names:
        s = summary[name]
        rows.append(
            [
                labels[name],
                s["wall_s"],
                s["audio_s"],
                s["cpu_s"],
                s["per_wall"],
                s["per_cpu"],
                fmt(s["per_wall"] / best_wall) + "x" if best_wall else "-",
                fmt(s["per_cpu"] / best_cpu) + "x" if best_cpu and s["per_cpu"] else "-",
                fmt(best_text_wall / s["wall_s"]) + "x" if best_text_wall else "-",
            ]
        )
    print(describe_machine(info))
    print(
        f"# {args.text}: {len(text.split())} words in {len(text.split(chr(10) * 2))} paragraphs, voice {args.voice}, medians of {args.repeats}"
    )
    print(
        table(
            [
                "set-up",
                "wall s",
                "audio s",
                "CPU s",
                "audio min / wall min",
                "audio min / CPU min",
                "vs peer-best wall",
                "vs peer-best CPU",
                "same text: peer-best wall / wall",
            ],
            rows,
        )
    )
    print(f"# load avg after: {' '.join(str(x) for x in machine()['loadavg'])}")
    save_json(
        args.json,
        {"benchmark": "peer_layouts", "machine": info, "args": vars(args), "summary": summary, "runs": runs},
    )


if __name__ == "__main__":
    main()

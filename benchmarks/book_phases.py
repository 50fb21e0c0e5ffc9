"""Where a book's time and CPU go in the service: upload, plan, render, assembly, and the gaps (issue 18).

One book is rendered through a private service (``private_service.SpoolService``: Redis, local
storage, ``spool serve`` with N one-thread workers); while it renders, the CPU of every service
process is sampled from ``/proc`` at each poll, by role (web, Redis, Celery's main process, each
worker). Afterwards the book's record (``created_at``, ``planned_at``, ``finished_at``) and its
event log (``book:<id>:log``: the ``plan``, ``segment`` and ``assembly`` events, each with its
worker-side start, wall seconds and CPU) give the phases:

* **upload/parse**: the POST sent until the record exists (the web process parses the file);
* **queue -> plan**, **plan** (the ``spool.book_plan`` task: segmentation and queueing the batches);
* **plan -> first segment** (Celery hands out the first batches);
* **render**: first segment start to last segment done, with each worker's busy fraction
  (its segments' wall over the span);
* **last segment -> assembly**, **assembly** (spool pass, M4B, chapter MP3s, zip, uploads);
* **finished -> seen**: until the client's poll sees the book succeeded.

The CPU of a phase is that of all the service's processes between its ends (interpolated between
samples); the worker-side CPU of the plan, the segments and the assembly is their own thread's.

    python benchmarks/book_phases.py --chars 3000            # reduced size: a few paragraphs
    python benchmarks/book_phases.py                         # Alice chapter 1 whole
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import time
from collections import defaultdict

from book_throughput import book_duration, multipart
from common import REPO, describe_machine, exit_on_sigterm, fmt, machine, save_json, table
from private_service import ServiceError, SpoolService

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, user + system CPU seconds with reaped children, command line)."""
    out: dict[int, tuple[int, float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                raw = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK, cmd)
    return out


def role_cpu(roots: set[int]) -> dict[str, float]:
    """CPU seconds of the processes under ``roots``, by role: web, redis, celery, worker:<pid>, other."""
    procs = _proc_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in procs.items():
        children[ppid].append(pid)
    roles: dict[str, float] = defaultdict(float)
    todo = [(p, "") for p in roots if p in procs]
    seen: set[int] = set()
    while todo:
        pid, parent_role = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        _, cpu, cmd = procs[pid]
        if "redis-server" in cmd:
            role = "redis"
        elif "gunicorn" in cmd or "werkzeug" in cmd or "app.web" in cmd or parent_role == "web":
            role = "web"
        elif "celery" in cmd:
            # The pool's processes are forks of Celery's main process (same command line).
            role = f"worker:{pid}" if parent_role == "celery" else "celery"
        else:
            role = "other"
        roles[role] += cpu
        todo.extend((c, role) for c in children.get(pid, ()))
    return dict(roles)


class CpuTimeline:
    """CPU samples of the service's processes by role, so a phase's CPU can be read between two times."""

    def __init__(self, roots: set[int]) -> None:
        self.roots = roots
        self.times: list[float] = []
        self.samples: list[dict[str, float]] = []

    def sample(self) -> None:
        """Record the CPU of every role now."""
        self.times.append(time.time())
        self.samples.append(role_cpu(self.roots))

    def total(self, at: float) -> float:
        """All roles' CPU seconds at time ``at``, interpolated between the samples around it."""
        if not self.times:
            return 0.0
        sums = [sum(s.values()) for s in self.samples]
        k = bisect.bisect_left(self.times, at)
        if k <= 0:
            return sums[0]
        if k >= len(self.times):
            return sums[-1]
        t0, t1 = self.times[k - 1], self.times[k]
        share = (at - t0) / (t1 - t0) if t1 > t0 else 1.0
        return sums[k - 1] + share * (sums[k] - sums[k - 1])

    def between(self, a: float, b: float) -> float:
        """CPU seconds of the whole service between times ``a`` and ``b``."""
        return self.total(b) - self.total(a)

    def by_role(self) -> dict[str, float]:
        """Each role's CPU seconds from the first sample to the last."""
        first, last = self.samples[0], self.samples[-1]
        return {r: round(last.get(r, 0.0) - first.get(r, 0.0), 3) for r in sorted(set(first) | set(last))}


def book_log(svc: SpoolService, book_id: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The book's record and its event log, read from the service's Redis."""
    import redis

    from service.keys import Keys

    keys = Keys()
    client = redis.Redis.from_url(svc.redis_url, decode_responses=True)
    try:
        record = client.hgetall(keys.book(book_id))
        events = [dict(v, id=i) for i, v in client.xrange(keys.book_log(book_id))]
    finally:
        client.close()
    return record, events


def render_book(svc: SpoolService, text: str, voice: str = "af_heart", poll: float = 0.2) -> dict:
    """Render ``text`` as a one-chapter book; wall, audio, CPU (all processes, by role) and the phases."""
    roots = {proc.pid for _, proc in svc.procs}
    timeline = CpuTimeline(roots)
    body, content_type = multipart(
        {"voice": voice, "format": "mp3"}, "file", "chapter.txt", text.encode(), "text/plain"
    )
    timeline.sample()
    t_post = time.time()
    status, raw = svc.http.request("POST", "/v1/books", body=body, headers={"Content-Type": content_type})
    if status >= 400:
        raise ServiceError(f"POST /v1/books: HTTP {status}: {raw[:500]!r}")
    book_id = json.loads(raw)["id"]
    while True:
        book = svc.http.json("GET", f"/v1/books/{book_id}")
        timeline.sample()
        if book.get("state") in ("succeeded", "failed", "cancelled"):
            break
        svc._alive()
        time.sleep(poll)
    t_seen = time.time()
    if book["state"] != "succeeded":
        raise ServiceError(f"book {book_id} {book['state']}: {book.get('error')}")
    record, events = book_log(svc, book_id)
    result = {
        "book_id": book_id,
        "wall_s": t_seen - t_post,
        "audio_s": book_duration(book),
        "cpu_s": timeline.between(timeline.times[0], timeline.times[-1]),
        "cpu_by_role": timeline.by_role(),
        "samples": len(timeline.times),
    }
    result["phases"] = phases(t_post, t_seen, record, events, timeline)
    return result


def phases(
    t_post: float, t_seen: float, record: dict[str, str], events: list[dict[str, str]], timeline: CpuTimeline
) -> dict:
    """The phase table of one book: each phase's span, wall and CPU, and the render's per-worker busy time."""

    def num(value: str | None) -> float | None:
        return float(value) if value not in (None, "") else None

    plan = next((e for e in events if e["event"] == "plan"), None)
    segs = [e for e in events if e["event"] == "segment"]
    assembly = next((e for e in events if e["event"] == "assembly"), None)
    created, finished = num(record.get("created_at")), num(record.get("finished_at"))
    seg_start = min(float(e["t0"]) for e in segs)
    seg_end = max(float(e["t0"]) + float(e["dt"]) for e in segs)
    marks: list[tuple[str, float | None, float | None, float | None]] = []  # name, start, end, worker CPU
    plan_start = num(plan["t0"]) if plan else None
    plan_end = plan_start + float(plan["dt"]) if plan and plan_start is not None else None
    asm_start = num(assembly["t0"]) if assembly else None
    asm_end = asm_start + float(assembly["dt"]) if assembly and asm_start is not None else None
    marks.append(("upload/parse (web)", t_post, created, None))
    marks.append(("queued -> plan starts", created, plan_start, None))
    marks.append(
        ("plan (segmentation, queue batches)", plan_start, plan_end, num(plan["cpu"]) if plan else None)
    )
    marks.append(("plan -> first segment", plan_end, seg_start, None))
    marks.append(
        ("render (first segment -> last done)", seg_start, seg_end, sum(float(e["cpu"]) for e in segs))
    )
    marks.append(("last segment -> assembly starts", seg_end, asm_start, None))
    marks.append(("assembly", asm_start, asm_end, num(assembly["cpu"]) if assembly else None))
    marks.append(("assembled -> finished (record)", asm_end, finished, None))
    marks.append(("finished -> seen by the client's poll", finished, t_seen, None))
    total = t_seen - t_post
    rows = []
    for name, a, b, worker_cpu in marks:
        if a is None or b is None:
            rows.append(
                {"phase": name, "wall_s": None, "share": None, "cpu_s": None, "worker_cpu_s": worker_cpu}
            )
            continue
        rows.append(
            {
                "phase": name,
                "start_s": round(a - t_post, 3),
                "wall_s": round(b - a, 3),
                "share": round((b - a) / total, 4),
                "cpu_s": round(timeline.between(a, b), 3),
                "worker_cpu_s": None if worker_cpu is None else round(worker_cpu, 3),
            }
        )
    span = seg_end - seg_start
    workers: dict[str, dict[str, float]] = defaultdict(lambda: {"segments": 0, "busy_s": 0.0, "cpu_s": 0.0})
    for e in segs:
        w = workers[e["worker"]]
        w["segments"] += 1
        w["busy_s"] += float(e["dt"])
        w["cpu_s"] += float(e["cpu"])
    busy = {
        name: {
            "segments": int(w["segments"]),
            "busy_s": round(w["busy_s"], 3),
            "busy_fraction": round(w["busy_s"] / span, 4) if span > 0 else None,
            "cpu_s": round(w["cpu_s"], 3),
        }
        for name, w in sorted(workers.items())
    }
    steps = {}
    if assembly:
        steps = {k: float(v) for k, v in assembly.items() if k.endswith("_s")}
        end_of_encode = num(assembly.get("encoded_at"))
        zipped = num(assembly.get("zipped_at"))
        if end_of_encode is not None and zipped is not None and asm_end is not None:
            steps["zip_s"] = zipped - end_of_encode
            steps["upload_s"] = asm_end - zipped
        steps = {k: round(v, 3) for k, v in steps.items()}
    return {"total_wall_s": round(total, 3), "rows": rows, "workers": busy, "assembly_steps": steps}


def print_phases(result: dict, out: object = sys.stdout) -> None:
    """Print one book's phase table, its workers' busy fractions and the CPU by role."""
    ph = result["phases"]
    rows = [
        [
            r["phase"],
            r.get("start_s"),
            r["wall_s"],
            fmt(100 * r["share"], 1) + "%" if r["share"] is not None else "-",
            r["cpu_s"],
            r["worker_cpu_s"],
        ]
        for r in ph["rows"]
    ]
    rows.append(["total", 0.0, ph["total_wall_s"], "100%", round(result["cpu_s"], 3), None])
    print(
        table(
            ["phase", "at s", "wall s", "share of wall", "CPU s (all processes)", "CPU s (worker thread)"],
            rows,
        ),
        file=out,
    )
    print(
        table(
            ["worker", "segments", "busy s", "busy fraction of the render", "segment CPU s"],
            [
                [w, v["segments"], v["busy_s"], v["busy_fraction"], v["cpu_s"]]
                for w, v in ph["workers"].items()
            ],
        ),
        file=out,
    )
    if ph["assembly_steps"]:
        print(
            "# assembly steps (wall s): " + ", ".join(f"{k} {v}" for k, v in ph["assembly_steps"].items()),
            file=out,
        )
    print(
        "# CPU s by process role: " + ", ".join(f"{k} {v}" for k, v in result["cpu_by_role"].items()),
        file=out,
    )


def parse_variants(spec: str) -> list[tuple[str, dict[str, str]]]:
    """``label:KEY=VALUE+KEY=VALUE,label2:...`` -> [(label, env)]; "" -> one variant with the defaults."""
    if not spec:
        return [("defaults", {})]
    out = []
    for item in spec.split(","):
        label, _, assignments = item.partition(":")
        env = dict(a.split("=", 1) for a in assignments.split("+") if a)
        out.append((label.strip(), env))
    return out


def main() -> None:
    """Start one service per variant, warm each, render the book in turn, print each phase table."""
    from contextlib import ExitStack

    from peer_layouts import chapter_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="alice-ch1", help="text name or path (default alice-ch1)")
    p.add_argument("--chars", type=int, default=None, help="only whole paragraphs up to N characters")
    p.add_argument("-n", "--workers", type=int, default=2, help="one-thread workers (default 2)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between the client's polls")
    p.add_argument(
        "--variants",
        default="",
        help="before/after in one run: label:ENV=VALUE[+ENV=VALUE],... one service each, books alternating "
        "(e.g. serial:SPOOL_ASSEMBLY_CONCURRENT=0,concurrent:SPOOL_ASSEMBLY_CONCURRENT=1)",
    )
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args()
    exit_on_sigterm()
    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    text = chapter_text(args.text, args.chars)
    variants = parse_variants(args.variants)
    runs = []
    with ExitStack() as stack:
        services = []
        for label, env in variants:
            svc = stack.enter_context(
                SpoolService(workers=args.workers, threads=1, storage="local", extra_env=env)
            )
            render_book(svc, "Warm up.\n\nOne short paragraph.", args.voice, args.poll)
            services.append((label, svc))
        for rep in range(args.repeats):
            order = services if rep % 2 == 0 else services[::-1]
            for label, svc in order:
                r = render_book(svc, text, args.voice, args.poll)
                r.update(variant=label, repeat=rep, loadavg=list(os.getloadavg()))
                runs.append(r)
                print(
                    f"# {rep + 1}/{args.repeats} {label}: {len(text.split())} words, wall {fmt(r['wall_s'])} s, "
                    f"audio {fmt(r['audio_s'])} s, CPU {fmt(r['cpu_s'])} s, load {os.getloadavg()[0]:.2f}"
                )
                print_phases(r)
                sys.stdout.flush()
    save_json(args.json, {"benchmark": "book_phases", "machine": info, "args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()

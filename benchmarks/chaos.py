"""Chaos run (issue 13 item 6): a small book and short jobs through the whole system while it breaks.

Real parts only: a private redis-server with AOF (as ``spool serve`` runs it), two Celery worker
processes with the real model, and moto's S3 server as a process of its own (restarted with its
recorder, ``tests/fixtures/moto_process.py``). The same book and jobs are first rendered calmly on
a deployment of their own (local storage), then again on the chaos deployment while, on a schedule:

1. one worker is SIGKILLed as soon as work is under way, and started again;
2. Redis is SIGKILLed once a few more segments are done, and started again on the same port/dir;
3. the moto process is killed, kept down for ``--outage`` seconds, and started again.

It prints jobs accepted / succeeded / failed / lost, book segments needed / rendered (from
``BookStore.renders``) and whether every result is byte-identical to the calm render.

    PYTHONPATH=. .venv/bin/python benchmarks/chaos.py [--jobs 6] [--outage 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import boto3  # noqa: E402
from common import ASSETS, describe_machine, machine  # noqa: E402

from config.settings import Settings  # noqa: E402
from engine.book import load_book  # noqa: E402
from service.books import BookSpec  # noqa: E402
from service.jobs import JobSpec  # noqa: E402
from service.services import Services  # noqa: E402
from tests.fixtures.durability import PrivateRedis, isolated_settings  # noqa: E402
from tests.fixtures.moto_process import MotoProcess  # noqa: E402
from tests.fixtures.service import WorkerPool, WorkerProcess, free_port  # noqa: E402

#: Bucket on the chaos moto server.
BUCKET = "spool-chaos"

#: Words the run draws its sentences from (a fresh draw each run: nothing is cached from an earlier one).
WORDS = (
    "harbour lantern orchard meadow violin copper river garden window pebble thunder candle "
    "forest bridge sparrow marble ladder basket winter engine velvet island kettle saddle "
    "compass feather tunnel cellar glacier pepper quarry ribbon tiger walnut anchor beacon"
).split()

#: Longest wait for everything to finish after the last fault.
FINISH_TIMEOUT = 900.0


def sentence(rng: random.Random) -> str:
    """A short sentence of drawn words."""
    a, b, c, d = rng.sample(WORDS, 4)
    return f"The {a} by the {b} was quiet, and the {c} waited for the {d}."


@dataclass
class Inputs:
    """The run's book file and job texts."""

    book: Path
    jobs: list[str]


def make_inputs(root: Path, jobs: int, seed: int) -> Inputs:
    """Three short chapters and ``jobs`` two-sentence texts, drawn from ``seed``."""
    rng = random.Random(seed)
    chapters = []
    for n in (1, 2, 3):
        body = " ".join(sentence(rng) for _ in range(4))
        chapters.append(f"Chapter {n}\n\n{body}\n")
    book = root / "book.txt"
    book.write_text("\n".join(chapters), encoding="utf-8")
    return Inputs(book, [f"{sentence(rng)} {sentence(rng)}" for _ in range(jobs)])


@dataclass
class Outcome:
    """What one deployment produced."""

    job_ids: list[str] = field(default_factory=list)
    book_id: str = ""
    states: dict[str, str] = field(default_factory=dict)
    audio: dict[str, bytes] = field(default_factory=dict)
    book_files: dict[str, bytes] = field(default_factory=dict)
    book_state: str = ""
    renders: dict[int, int] = field(default_factory=dict)
    segments_total: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)


def safe(fn: Any, default: Any = None) -> Any:
    """``fn()``, or ``default`` while Redis or storage does not answer."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 (an outage is expected here)
        return default


def poll(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` (errors count as not yet) until truthy; RuntimeError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = safe(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def submit(svc: Services, inputs: Inputs, out: Outcome) -> None:
    """Submit the book and the jobs."""
    out.book_id = svc.books.create(load_book(inputs.book), BookSpec(gap=0.5), "chaos", source_name="book.txt")
    for text in inputs.jobs:
        job, _ = svc.submit(JobSpec(text=text, format="wav"), owner="chaos")
        out.job_ids.append(job.id)


def finished(svc: Services, out: Outcome) -> bool:
    """True once the book and every job are terminal."""
    if svc.books.state(out.book_id) not in ("succeeded", "failed", "cancelled"):
        return False
    return all((j := svc.jobs.find(i)) is not None and j.is_terminal for i in out.job_ids)


def collect(svc: Services, out: Outcome) -> None:
    """Read states, audio, book files and render counts."""
    for job_id in out.job_ids:
        job = safe(lambda i=job_id: svc.jobs.find(i))
        out.states[job_id] = job.state if job is not None else "lost"
        if job is not None and job.state == "succeeded":
            out.audio[job_id] = svc.storage.get(job.result_key)
    rec = svc.books.record(out.book_id)
    out.book_state = rec.state
    out.segments_total = rec.segments_total
    out.renders = svc.books.renders(out.book_id)
    if rec.state == "succeeded":
        manifest = json.loads(svc.redis.hget(svc.keys.book(out.book_id), "manifest"))
        for name in manifest["files"]:
            out.book_files[name] = svc.storage.get(svc.keys.book_file(out.book_id, name))


def segments_done(svc: Services, out: Outcome) -> int:
    """Book segments checkpointed plus job segments rendered so far."""
    done = svc.redis.scard(svc.keys.book_done(out.book_id))
    for job_id in out.job_ids:
        job = svc.jobs.find(job_id)
        done += job.segments_done if job is not None else 0
    return done


def base_settings(redis_url: str, storage_url: str, var_dir: Path) -> Settings:
    """Settings of a deployment: one engine thread per worker, a 120 s storage retry window."""
    return Settings(
        redis_url=redis_url,
        storage_url=storage_url,
        s3_access_key="chaos",
        s3_secret_key="chaos",
        s3_region="us-east-1",
        assets_dir=str(ASSETS),
        engine_threads=1,
        queue="cpu",
        worker_queues=("cpu",),
        speech_timeout=300,
        var_dir=str(var_dir),
        storage_retry_window=120,
        reconcile_grace=5.0,
    )


def start_workers(pool: WorkerPool, count: int, tag: str) -> list[WorkerProcess]:
    """Start ``count`` workers at once and wait until each has a warm engine."""
    workers = [pool.start(name=f"{tag}{n}", wait=False) for n in range(1, count + 1)]
    for worker in workers:
        pool.wait_ready(worker)
    return workers


def calm_run(inputs: Inputs, root: Path, workers: int) -> Outcome:
    """Render the inputs on an undisturbed deployment (its own Redis, local storage)."""
    server = PrivateRedis(root / "calm-redis").start()
    own = isolated_settings(
        base_settings(server.url, str(root / "calm-storage"), root / "calm-var"), reconcile_interval=1.0
    )
    svc = Services(own)
    pool = WorkerPool(own, root)
    out = Outcome()
    try:
        start_workers(pool, workers, "calm")
        submit(svc, inputs, out)
        poll(lambda: finished(svc, out), FINISH_TIMEOUT, "the calm run", interval=0.3)
        collect(svc, out)
    finally:
        pool.stop_all()
        svc.close()
        server.stop()
    return out


def chaos_run(inputs: Inputs, root: Path, workers: int, outage: float) -> Outcome:
    """Render the inputs while a worker, Redis and the S3 endpoint are killed on a schedule."""
    server = PrivateRedis(root / "chaos-redis").start()
    moto = MotoProcess(free_port(), root)
    moto.start()
    boto3.client(
        "s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="chaos",
        aws_secret_access_key="chaos",
    ).create_bucket(Bucket=BUCKET)
    own = isolated_settings(
        base_settings(server.url, f"s3://{BUCKET}/results?endpoint={moto.url}", root / "chaos-var")
    )
    svc = Services(own)
    pool = WorkerPool(own, root)
    out = Outcome()
    t0 = time.monotonic()

    def event(what: str) -> None:
        out.events.append((round(time.monotonic() - t0, 1), what))
        print(f"  t={out.events[-1][0]:6.1f} s  {what}", flush=True)

    try:
        procs = start_workers(pool, workers, "chaos")
        t0 = time.monotonic()
        submit(svc, inputs, out)
        event(f"submitted 1 book + {len(out.job_ids)} jobs")
        # 1. A worker SIGKILLed mid-render, once some segment is done and work is left.
        poll(lambda: segments_done(svc, out) >= 2, 300, "work under way", interval=0.05)
        victim = procs[0]
        pool.kill(victim)
        event(f"SIGKILL worker {victim.name} (pid {victim.pid}); done so far {segments_done(svc, out)}")
        replacement = pool.start(name="chaos-restarted", wait=False)
        event("worker restarted (loading its engine)")
        # 2. Redis SIGKILLed a few segments later, down until a worker has noticed, then restarted.
        mark = safe(lambda: segments_done(svc, out), 0)
        poll(lambda: segments_done(svc, out) >= mark + 2, 300, "more progress", interval=0.05)
        server.kill()
        event("SIGKILL redis-server")
        live = [w for w in (procs[1], replacement) if w.alive()]
        poll(lambda: any("Redis unreachable" in w.log_path.read_text(errors="replace") for w in live),
             60, "a worker to notice the Redis outage", interval=0.1)
        server.start()
        event(f"redis-server restarted on port {server.port} (AOF reload)")
        # 3. The S3 endpoint down for ``outage`` seconds.
        poll(lambda: segments_done(svc, out) >= 1, 60, "Redis to answer again", interval=0.1)
        moto.stop()
        event("SIGKILL moto (S3 endpoint down)")
        down_at = time.monotonic()
        while time.monotonic() - down_at < outage:  # the outage itself, not a synchronisation
            time.sleep(0.5)
        moto.start()
        event(f"moto restarted after {time.monotonic() - down_at:.0f} s (recording replayed)")
        poll(lambda: finished(svc, out), FINISH_TIMEOUT, "everything to finish", interval=0.3)
        event("book and jobs terminal")
        collect(svc, out)
    finally:
        pool.stop_all()
        svc.close()
        moto.stop()
        server.stop()
    return out


def compare(calm: Outcome, chaos: Outcome, worker_kills: int) -> dict[str, Any]:
    """The table's figures."""
    states = list(chaos.states.values())
    identical = sum(
        1 for a, b in zip(calm.job_ids, chaos.job_ids, strict=True)
        if b in chaos.audio and chaos.audio[b] == calm.audio.get(a)
    )
    book_identical = chaos.book_state == "succeeded" and chaos.book_files == calm.book_files
    needed = chaos.segments_total
    counts = chaos.renders
    twice = {i: n for i, n in counts.items() if n > 1}
    return {
        "jobs_accepted": len(chaos.job_ids),
        "jobs_succeeded": states.count("succeeded"),
        "jobs_failed": states.count("failed"),
        "jobs_lost": len(states) - states.count("succeeded") - states.count("failed"),
        "jobs_identical": identical,
        "book_state": chaos.book_state,
        "segments_needed": needed,
        "segments_rendered": len([i for i in counts if 0 <= i < needed]),
        "segments_missing": sorted(set(range(needed)) - set(counts)),
        "renders_total": sum(counts.values()),
        "segments_rendered_twice": twice,
        "extra_renders_allowed": worker_kills,
        "book_files": sorted(chaos.book_files),
        "book_identical": book_identical,
        "calm_renders": calm.renders,
        "events": chaos.events,
    }


def print_table(r: dict[str, Any]) -> None:
    """Print the result table."""
    extra = r["renders_total"] - r["segments_rendered"]
    jobs_ok = r["jobs_lost"] == 0 and r["jobs_identical"] == r["jobs_accepted"]
    seg_ok = not r["segments_missing"] and extra <= r["extra_renders_allowed"]
    rows = [
        ("jobs accepted", r["jobs_accepted"]),
        ("jobs succeeded", r["jobs_succeeded"]),
        ("jobs failed", r["jobs_failed"]),
        ("jobs lost", r["jobs_lost"]),
        ("jobs byte-identical to calm", f"{r['jobs_identical']}/{r['jobs_accepted']}"),
        ("book state", r["book_state"]),
        ("book segments needed", r["segments_needed"]),
        ("book segments rendered", r["segments_rendered"]),
        ("book segments missing", len(r["segments_missing"])),
        ("book model renders (total)", r["renders_total"]),
        ("book segments rendered twice", f"{len(r['segments_rendered_twice'])} {r['segments_rendered_twice'] or ''}"),
        ("extra renders allowed (worker kills)", r["extra_renders_allowed"]),
        ("book files byte-identical to calm", f"{r['book_identical']} ({', '.join(r['book_files'])})"),
    ]
    print()
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    verdict = "PASS" if jobs_ok and seg_ok and r["book_identical"] else "FAIL"
    print(f"\ngoal: 0 lost, 100% identical, no segment missing or rendered twice beyond a kill: {verdict}")


def main() -> None:
    """Calm run, chaos run, table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6, help="short jobs to submit (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the S3 endpoint stays down")
    parser.add_argument("--seed", type=int, default=None, help="word draw (default: a fresh one)")
    parser.add_argument("--json", type=Path, help="save the figures here")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed")
    seed = args.seed if args.seed is not None else uuid.uuid4().int % 10**6
    print(describe_machine(machine()))
    print(f"seed {seed}; {args.jobs} jobs, 1 book of 3 chapters, {args.workers} workers, outage {args.outage:g} s")
    root = Path(tempfile.mkdtemp(prefix="spool-chaos-"))
    inputs = make_inputs(root, args.jobs, seed)
    started = time.monotonic()
    print("calm run ...", flush=True)
    calm = calm_run(inputs, root, args.workers)
    print(f"calm run done in {time.monotonic() - started:.0f} s; chaos run ...", flush=True)
    mid = time.monotonic()
    chaos = chaos_run(inputs, root, args.workers, args.outage)
    print(f"chaos run done in {time.monotonic() - mid:.0f} s")
    result = compare(calm, chaos, worker_kills=1)
    result.update(seed=seed, calm_seconds=round(mid - started), chaos_seconds=round(time.monotonic() - mid))
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"logs: {root}  uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()

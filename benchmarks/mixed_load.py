"""Interactive jobs while a book renders, next to the same on an idle system, in one run (issue 19).

A private service (``spool serve``'s layout: one one-thread worker per core) gets, in order:

1. **idle**: ``--jobs`` interactive jobs one after another (``POST /v1/jobs`` + ``GET .../stream``
   as pcm, each read to its end before the next), timed to the first audio byte;
2. **book alone**: the book (``--book``, cut to ``--book-words``) from upload until it has succeeded;
3. **book + jobs**: the same book again (its segment checkpoints deleted first, so it renders
   everything again) and, once its first segment is done, the same ``--jobs`` jobs one after another.

Reported: first-audio p50/p90 idle and under load with their ratio, each job's wait in the queue,
the book's throughput (seconds of audio per wall second from its upload to its end) alone
and with the jobs, and the share of worker time the jobs themselves took. Goals on the 2-core
machine: interactive p90 under load <= 1.3x idle p90; book throughput at most 10% lower.

    python benchmarks/mixed_load.py
    python benchmarks/mixed_load.py --jobs 5 --book-words 700      # reduced
    python benchmarks/mixed_load.py --jobs 2 --book-words 120      # harness check

``--two-keys`` measures fair sharing instead (issue 19): a service with two API keys, a book by the
first key, and once it renders the same book in another voice (nothing shared) by the second; printed: each book's
segments per wall second while both rendered, when each finished, and the widest gap between their
segment counts in the order the workers finished them (``book:<id>:log``).

    python benchmarks/mixed_load.py --two-keys --book-words 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from book_throughput import multipart
from common import describe_machine, exit_on_sigterm, fmt, machine, percentile, save_json, table
from private_service import ServiceError, SpoolService, parse_iso
from ttfa_http import header_bytes, long_text, one_request

#: What a listener asks for: the first sentence of the held paragraph (no comma in it).
JOB_TEXT = (
    "The night train to the coast left the city a little after ten o'clock and ran for most of an "
    "hour along the dark river before it turned toward the hills."
)


def submit_book(svc: SpoolService, text: str, voice: str) -> str:
    """Upload a text as a one-chapter book; return its id."""
    body, ctype = multipart({"voice": voice}, "file", "book.txt", text.encode(), "text/plain")
    status, raw = svc.http.request("POST", "/v1/books", body=body, headers={"Content-Type": ctype})
    if status >= 400:
        raise ServiceError(f"POST /v1/books: HTTP {status}: {raw[:300]!r}")
    return json.loads(raw)["id"]


def wait_book(svc: SpoolService, book_id: str, until: tuple[str, ...], timeout: float = 7200) -> dict:
    """Poll a book until its state is one of ``until`` (or it has rendered a segment, for ``rendering``)."""
    deadline = time.monotonic() + timeout
    while True:
        book = svc.http.json("GET", f"/v1/books/{book_id}")
        if book["state"] in until or ("rendering" in until and book["progress"]["segments_done"] > 0):
            return book
        if book["state"] in ("failed", "cancelled"):
            raise ServiceError(f"book {book_id} {book['state']}: {book.get('error')}")
        if time.monotonic() > deadline:
            raise ServiceError(f"book {book_id} still {book['state']} after {timeout:.0f} s")
        svc._alive()
        time.sleep(0.2)


#: The two keys of the --two-keys run and the owner names they map to.
TWO_KEYS = {"alice": "bench-key-alice-0001", "bob": "bench-key-bob-00002"}


def submit_book_as(svc: SpoolService, text: str, voice: str, key: str) -> str:
    """Upload a text as a one-chapter book under an API key; return its id."""
    body, ctype = multipart({"voice": voice}, "file", "book.txt", text.encode(), "text/plain")
    headers = {"Content-Type": ctype, "Authorization": f"Bearer {key}"}
    status, raw = svc.http.request("POST", "/v1/books", body=body, headers=headers)
    if status >= 400:
        raise ServiceError(f"POST /v1/books: HTTP {status}: {raw[:300]!r}")
    return json.loads(raw)["id"]


def two_keys(args: argparse.Namespace, book_text: str, log_dir: Path) -> dict:
    """Two books by two keys on the same workers: each one's rate while both render, and how even it was."""
    env = {"SPOOL_API_KEYS": ",".join(f"{k}:{o}" for o, k in TWO_KEYS.items())}
    # The second book: the same text in another voice, so no checkpoint is shared with the first.
    other_voice = "af_bella" if args.voice != "af_bella" else "af_heart"
    with SpoolService(workers=args.workers, threads=args.threads, log_dir=log_dir, extra_env=env) as svc:
        auth = {o: {"Authorization": f"Bearer {k}"} for o, k in TWO_KEYS.items()}
        t0 = time.perf_counter()
        first = submit_book_as(svc, book_text, args.voice, TWO_KEYS["alice"])
        while svc.http.json("GET", f"/v1/books/{first}", headers=auth["alice"])["progress"]["segments_done"] < 1:
            svc._alive()
            time.sleep(0.2)
        second = submit_book_as(svc, book_text, other_voice, TWO_KEYS["bob"])
        books = {"alice": first, "bob": second}
        finished: dict[str, float] = {}
        reasons: dict[str, str] = {}
        while len(finished) < 2:
            for owner, book_id in books.items():
                if owner in finished:
                    continue
                body = svc.http.json("GET", f"/v1/books/{book_id}", headers=auth[owner])
                if body.get("queue") and "Sharing" in body["queue"]["reason"]:
                    reasons[owner] = body["queue"]["reason"]
                if body["state"] in ("succeeded", "failed", "cancelled"):
                    finished[owner] = time.perf_counter() - t0
            svc._alive()
            time.sleep(0.2)
        logs = {owner: svc_log(svc, book_id) for owner, book_id in books.items()}
    order = sorted((at, owner) for owner, times in logs.items() for at in times)
    both_from = min(logs["bob"]) if logs["bob"] else None
    both_until = min(max(times) for times in logs.values() if times) if all(logs.values()) else None
    rates, widest, counts = {}, 0, {"alice": 0, "bob": 0}
    for owner, times in logs.items():
        inside = [t for t in times if both_from is not None and both_from <= t <= (both_until or t)]
        span = (both_until or 0) - (both_from or 0)
        rates[owner] = len(inside) / span if span > 0 else None
    for at, owner in order:
        if both_from is not None and at >= both_from and (both_until is None or at <= both_until):
            counts[owner] += 1
            widest = max(widest, abs(counts["alice"] - counts["bob"]))
    return {
        "finished_s": finished,
        "segments": {o: len(t) for o, t in logs.items()},
        "rate_while_both": rates,
        "widest_gap_segments": widest,
        "reasons": reasons,
        "order": "".join(o[0] for _, o in order),
    }


def svc_log(svc: SpoolService, book_id: str) -> list[float]:
    """When each segment of a book was finished (seconds since the epoch), from its Redis log stream."""
    import redis

    client = redis.Redis.from_url(svc.redis_url)
    try:
        entries = client.xrange(f"spool:book:{book_id}:log")
    finally:
        client.close()
    return sorted(
        int(entry_id.decode().split("-")[0]) / 1000 for entry_id, fields in entries if fields.get(b"event") == b"segment"
    )


def book_rate(book: dict, submitted: float) -> dict:
    """Audio seconds, wall seconds from its upload to its end (assembly included), and their ratio."""
    audio = float(book["progress"]["audio_seconds"])
    wall = time.perf_counter() - submitted
    return {"audio_s": audio, "wall_s": wall, "rate": audio / wall if wall > 0 else None, "id": book["id"]}


def run_jobs(svc: SpoolService, n: int, args: argparse.Namespace, header_len: int, label: str) -> list[dict]:
    """``n`` interactive jobs one after another; each run's first-audio time, queue wait and render time."""
    runs = []
    for i in range(n):
        r = one_request(svc, args.job_text, "jobs", args, header_len)
        job = svc.job(r["job_id"])
        created, started, finished = (
            parse_iso(job.get(k)) for k in ("created_at", "started_at", "finished_at")
        )
        r["queue_wait_s"] = started - created if created and started else None
        r["render_s"] = finished - started if started and finished else None
        r["label"] = label
        runs.append(r)
        print(
            f"#   {label} {i + 1}/{n}: first audio {fmt(r['ttfa_s'], 3)} s, queue wait {fmt(r['queue_wait_s'], 3)} s, "
            f"margin {fmt(r['underrun_margin_s'], 2)} s",
            file=sys.stderr,
            flush=True,
        )
    return runs


def stats(values: list[float | None]) -> dict:
    """p50 and p90 of the values given."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"p50": None, "p90": None, "n": 0}
    return {"p50": percentile(vals, 50), "p90": percentile(vals, 90), "n": len(vals)}


def main() -> None:
    """Parse arguments, measure, print, save."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10, help="interactive jobs per phase (default 10)")
    p.add_argument("--job-text", default=JOB_TEXT, help="text of each interactive job")
    p.add_argument("--book", default="alice-ch1", help="book text name or path (default alice-ch1)")
    p.add_argument(
        "--book-words", type=int, default=2200, help="words of it, cut at a sentence end (default 2200)"
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2, one per core)")
    p.add_argument("--threads", type=int, default=1, help="engine threads per worker (default 1)")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--json", default=None, metavar="OUT", help="also write all results to this JSON file")
    p.add_argument("--two-keys", action="store_true", help="measure two books by two keys sharing the workers")
    args = p.parse_args()
    args.format = "pcm"
    exit_on_sigterm()
    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    book_name, book_text = long_text(args.book, args.book_words)
    header_len = header_bytes(args.format)
    log_dir = Path(tempfile.mkdtemp(prefix="spool-bench-mixed-"))
    if args.two_keys:
        result = two_keys(args, book_text, log_dir)
        print(describe_machine(info))
        print(f"# load average after: {machine()['loadavg']}")
        print(f"# {args.workers} worker(s) x {args.threads} thread(s); two books of {book_name}, keys alice and bob")
        print(
            table(
                ["book", "segments", "finished at s", "segments per s while both rendered"],
                [
                    [o, str(result["segments"][o]), fmt(result["finished_s"].get(o), 1),
                     fmt(result["rate_while_both"].get(o), 3)]
                    for o in ("alice", "bob")
                ],
            )
        )
        print(f"widest gap between their segment counts while both rendered: {result['widest_gap_segments']}")
        print(f"order of segments finished (a = alice, b = bob): {result['order']}")
        for owner, reason in result["reasons"].items():
            print(f"status of {owner}'s book while shared: {reason}")
        save_json(args.json, {"benchmark": "mixed_load --two-keys", "machine": info, "args": vars(args)} | result)
        return
    with SpoolService(workers=args.workers, threads=args.threads, log_dir=log_dir) as svc:
        svc.wait(svc.submit("Warming up.", voice=args.voice, fmt=args.format)["id"])
        print(f"# idle: {args.jobs} jobs", file=sys.stderr, flush=True)
        idle = run_jobs(svc, args.jobs, args, header_len, "idle")
        print(f"# book alone: {book_name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        alone = book_rate(wait_book(svc, submit_book(svc, book_text, args.voice), ("succeeded",)), t0)
        print(f"#   {fmt(alone['audio_s'], 1)} s of audio in {fmt(alone['wall_s'], 1)} s", file=sys.stderr)
        shutil.rmtree(svc.tmp / "storage" / "segments", ignore_errors=True)  # render it all again
        print(f"# book + {args.jobs} jobs", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        book_id = submit_book(svc, book_text, args.voice)
        wait_book(svc, book_id, ("rendering", "succeeded"))
        loaded = run_jobs(svc, args.jobs, args, header_len, "loaded")
        during = svc.http.json("GET", f"/v1/books/{book_id}")["state"] == "rendering"
        mixed = book_rate(wait_book(svc, book_id, ("succeeded",)), t0)
        print(f"#   {fmt(mixed['audio_s'], 1)} s of audio in {fmt(mixed['wall_s'], 1)} s", file=sys.stderr)

    idle_s, loaded_s = stats([r["ttfa_s"] for r in idle]), stats([r["ttfa_s"] for r in loaded])
    wait_idle, wait_loaded = (
        stats([r["queue_wait_s"] for r in idle]),
        stats([r["queue_wait_s"] for r in loaded]),
    )
    p90_ratio = loaded_s["p90"] / idle_s["p90"] if loaded_s["p90"] and idle_s["p90"] else None
    rate_ratio = mixed["rate"] / alone["rate"] if mixed["rate"] and alone["rate"] else None
    job_work = sum(r["render_s"] or 0.0 for r in loaded)
    share = job_work / (mixed["wall_s"] * args.workers) if mixed["wall_s"] else None
    payload = {
        "benchmark": "mixed_load",
        "machine": info,
        "machine_after": machine()["loadavg"],
        "args": vars(args),
        "book": book_name,
        "idle": idle_s,
        "loaded": loaded_s,
        "queue_wait": {"idle": wait_idle, "loaded": wait_loaded},
        "p90_ratio": p90_ratio,
        "book_alone": alone,
        "book_mixed": mixed,
        "book_rate_ratio": rate_ratio,
        "jobs_worker_share": share,
        "book_rendering_through_jobs": during,
        "runs": idle + loaded,
    }
    print(describe_machine(info))
    print(f"# load average after: {machine()['loadavg']}")
    print(
        f"# {args.workers} worker(s) x {args.threads} thread(s); {args.jobs} jobs per phase of "
        f"{len(args.job_text.split())} words; book {book_name}"
    )
    print(
        table(
            ["seconds", "idle p50", "idle p90", "under load p50", "under load p90", "p90 ratio"],
            [
                [
                    "first audio byte",
                    fmt(idle_s["p50"], 3),
                    fmt(idle_s["p90"], 3),
                    fmt(loaded_s["p50"], 3),
                    fmt(loaded_s["p90"], 3),
                    fmt(p90_ratio, 2),
                ],
                [
                    "wait in the queue",
                    fmt(wait_idle["p50"], 3),
                    fmt(wait_idle["p90"], 3),
                    fmt(wait_loaded["p50"], 3),
                    fmt(wait_loaded["p90"], 3),
                    "",
                ],
            ],
        )
    )
    print(
        table(
            ["book", "audio s", "wall s", "audio s per wall s"],
            [
                ["alone", fmt(alone["audio_s"], 1), fmt(alone["wall_s"], 1), fmt(alone["rate"], 3)],
                ["with the jobs", fmt(mixed["audio_s"], 1), fmt(mixed["wall_s"], 1), fmt(mixed["rate"], 3)],
            ],
        )
    )
    print(
        f"book throughput with the jobs / alone: {fmt(rate_ratio, 3)} (the jobs' own renders took "
        f"{fmt(100 * share if share is not None else None, 1)}% of the workers' time meanwhile; "
        f"book still rendering after the last job: {during})"
    )
    print(
        f"goals: p90 under load <= 1.3x idle: {'yes' if p90_ratio and p90_ratio <= 1.3 else 'no'}; "
        f"book throughput >= 0.9x: {'yes' if rate_ratio and rate_ratio >= 0.9 else 'no'}"
    )
    save_json(args.json, payload)


if __name__ == "__main__":
    main()

"""Time to first audio through HTTP, next to the engine's own first-segment time (issue 5).

A private service (Redis, local storage, ``spool serve``: gunicorn + Celery workers) gets the
same one-paragraph text ``--runs`` times in a row. Each run times from just before the POST
to the first audio byte after the format's header of the progressive stream
(``POST /v1/jobs`` + ``GET /v1/jobs/<id>/stream?format=pcm``, or ``--path speech``:
``POST /v1/audio/speech`` with ``stream: true``), then reads the stream to its end so the
next run starts on an idle worker. In the same run a fresh engine process with the same
thread count renders the text ``--runs`` times (warm) and reports its first-chunk time.
For ``pcm`` it also reports when speech is first heard: the first byte's time plus the
near-silence that opens the stream (what a listener waits for, not just the first byte).
Goals on the 2-core machine: p50 < 800 ms, p90/p10 <= 1.2.

    python benchmarks/ttfa_http.py
    python benchmarks/ttfa_http.py --runs 3 --text tiny       # quick check of the harness
"""

from __future__ import annotations

import argparse
import os
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
    percentile,
    project_python,
    run_child,
    save_json,
    table,
    verdict,
)
from private_service import ServiceError, SpoolService

#: Header bytes before the first audio byte, for formats whose header has a fixed length.
HEADER_BYTES = {"pcm": 0, "wav": 44}


#: Bytes of 16-bit PCM kept from the start of each stream (5 s at 24 kHz) to find the first speech.
HEAD_KEEP_BYTES = 5 * 24000 * 2

def silence_before_speech(pcm: bytes, rate: int = 24000) -> float | None:
    """Seconds of near-silence at the start of 16-bit mono PCM, by the engine's own level (None: no speech)."""
    import numpy as np

    from engine.chunk import speech_onset

    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32767.0
    onset = speech_onset(samples)
    return onset / rate if onset is not None else None


def header_bytes(fmt_name: str) -> int:
    """Length of the stream header of ``fmt_name`` (from the engine's StreamEncoder when available)."""
    try:
        from engine import StreamEncoder

        return len(StreamEncoder(fmt_name, 24000).header())
    except ImportError:
        if fmt_name not in HEADER_BYTES:
            raise SystemExit(
                f"format {fmt_name!r}: use pcm or wav until engine.StreamEncoder exists"
            ) from None
        return HEADER_BYTES[fmt_name]


def one_request(svc: SpoolService, text: str, args: argparse.Namespace, header_len: int) -> dict:
    """One run: POST, open the stream, time the first audio byte, read to the end."""
    conn = svc.http.connect()
    t0 = time.perf_counter()
    job_id = None
    try:
        if args.path == "jobs":
            job = svc.submit(text, voice=args.voice, fmt=args.format)
            job_id = job["id"]
            t_posted = time.perf_counter()
            conn.request("GET", f"/v1/jobs/{job_id}/stream?format={args.format}")
        else:
            import json

            body = {
                "model": "kokoro",
                "input": text,
                "voice": args.voice,
                "response_format": args.format,
                "stream": True,
            }
            conn.request(
                "POST",
                "/v1/audio/speech",
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            t_posted = time.perf_counter()
        resp = conn.getresponse()
        t_headers = time.perf_counter()
        if resp.status != 200:
            raise ServiceError(f"stream answered HTTP {resp.status}: {resp.read()[:300]!r}")
        job_id = job_id or resp.getheader("X-Job-Id")
        received = 0
        t_first = None
        head = bytearray()  # the start of the stream, to find where speech begins
        while True:
            data = resp.read1(65536)
            if not data:
                break
            received += len(data)
            if len(head) < header_len + HEAD_KEEP_BYTES:
                head += data
            if t_first is None and received > header_len:
                t_first = time.perf_counter()
        t_end = time.perf_counter()
    finally:
        conn.close()
    audio_bytes = max(0, received - header_len)
    lead = silence_before_speech(bytes(head[header_len:])) if args.format == "pcm" else None
    return {
        "ttfa_s": (t_first - t0) if t_first else None,
        "lead_silence_s": lead,
        "first_speech_s": (t_first - t0 + lead) if t_first and lead is not None else None,
        "post_s": t_posted - t0,
        "headers_s": t_headers - t0,
        "total_s": t_end - t0,
        "bytes": received,
        "audio_s": audio_bytes / 2 / 24000 if args.format == "pcm" else None,
        "job_id": job_id,
    }


def engine_first_segment(
    text_file: Path, threads: int, runs: int, voice: str, first_phonemes: int | None = None
) -> dict:
    """The engine's own time to its first chunk, ``runs`` warm renders in one fresh process."""
    extra = ["--first-phonemes", str(first_phonemes)] if first_phonemes else []
    res = run_child(
        project_python(),
        [
            *extra,
            "--system",
            "spool",
            "--text-file",
            str(text_file),
            "--threads",
            str(threads),
            "--voice",
            voice,
            "--repeat",
            str(runs),
        ],
        timeout=3600,
    )
    return {
        "ttfa": [r["ttfa_s"] for r in res["runs"]],
        "first_audio_s": res.get("first_audio_s"),
        "first_segment": res.get("first_segment"),
        "load_s": res.get("load_s"),
    }


def stats(values: list[float]) -> dict:
    """p10, p50, p90 and p90/p10 of a list of seconds."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"p10": None, "p50": None, "p90": None, "spread": None, "n": 0}
    p10, p50, p90 = (percentile(vals, q) for q in (10, 50, 90))
    return {"p10": p10, "p50": p50, "p90": p90, "spread": p90 / p10 if p10 else None, "n": len(vals)}


def main() -> None:
    """Parse arguments, measure, print, save."""
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="paragraph", help="text name or path (default paragraph)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument(
        "--path",
        choices=("jobs", "speech"),
        default="jobs",
        help="jobs: POST /v1/jobs + GET stream; speech: POST /v1/audio/speech stream=true",
    )
    p.add_argument("--format", default="pcm", help="stream format (default pcm)")
    p.add_argument(
        "--workers", type=int, default=cores, help="worker processes (default: one per core, as spool serve)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="engine threads per worker (default cores/workers)"
    )
    p.add_argument(
        "--first-phonemes",
        type=int,
        default=None,
        help="first-segment phoneme budget for the engine and the workers (default: Spool's, 40)",
    )
    p.add_argument("--storage", choices=("local", "s3"), default="local")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--json", default=None, metavar="OUT", help="also write all results to this JSON file")
    args = p.parse_args()
    args.threads = args.threads or max(1, cores // max(1, args.workers))
    exit_on_sigterm()

    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    name, text = load_text(args.text)
    log_dir = Path(tempfile.mkdtemp(prefix="spool-bench-logs-"))
    text_file = log_dir / f"{name}.txt"
    text_file.write_text(text, encoding="utf-8")
    header_len = header_bytes(args.format)

    print(f"# engine alone: {args.runs} warm renders, {args.threads} thread(s)", file=sys.stderr, flush=True)
    engine = engine_first_segment(text_file, args.threads, args.runs, args.voice, args.first_phonemes)
    print(
        f"# service: {args.workers} worker(s) x {args.threads} thread(s); logs in {log_dir}",
        file=sys.stderr,
        flush=True,
    )
    runs = []
    with SpoolService(
        workers=args.workers,
        threads=args.threads,
        storage=args.storage,
        log_dir=log_dir,
        extra_env={"SPOOL_FIRST_SEGMENT_PHONEMES": str(args.first_phonemes)} if args.first_phonemes else None,
    ) as svc:
        warm = svc.submit("Warming up.", voice=args.voice, fmt=args.format)
        svc.wait(warm["id"])
        for i in range(args.runs):
            r = one_request(svc, text, args, header_len)
            r["run"] = i
            runs.append(r)
            print(
                f"#   {i + 1}/{args.runs}: first audio {fmt(r['ttfa_s'], 3)} s, all {fmt(r['total_s'])} s",
                file=sys.stderr,
                flush=True,
            )

    http = stats([r["ttfa_s"] for r in runs])
    heard = stats([r["first_speech_s"] for r in runs])
    eng = stats(engine["ttfa"])
    payload = {
        "benchmark": "ttfa_http",
        "machine": info,
        "machine_after": machine()["loadavg"],
        "args": vars(args),
        "text": name,
        "words": len(text.split()),
        "http": http,
        "first_speech": heard,
        "engine": {**eng, **engine},
        "runs": runs,
    }
    print(describe_machine(info))
    print(
        f"# text {name} ({payload['words']} words), path {args.path}, format {args.format}, "
        f"{args.workers} worker(s) x {args.threads} thread(s), {args.runs} runs in a row"
    )
    if engine.get("first_segment"):
        print(
            f"# engine's first segment ({fmt(engine['first_audio_s'])} s audio): {engine['first_segment']!r}"
        )
    rows = [
        ["HTTP: POST -> first audio byte", http["p10"], http["p50"], http["p90"], http["spread"]],
        ["engine: call -> first chunk", eng["p10"], eng["p50"], eng["p90"], eng["spread"]],
    ]
    if heard["n"]:
        rows.insert(
            1,
            ["HTTP: POST -> first speech heard", heard["p10"], heard["p50"], heard["p90"], heard["spread"]],
        )
    print(
        table(
            ["seconds", "p10", "p50", "p90", "p90/p10"], [[r[0], *[fmt(v, 3) for v in r[1:]]] for r in rows]
        )
    )
    over = (http["p50"] - eng["p50"]) if http["p50"] is not None and eng["p50"] is not None else None
    print(f"HTTP p50 - engine p50: {fmt(over, 3)} s")
    print(
        f"goals: p50 < 0.800 s: {verdict(http['p50'], 0.8, True)}; p90/p10 <= 1.2: "
        f"{verdict(http['spread'], 1.2, True)}"
    )
    save_json(args.json, payload)


if __name__ == "__main__":
    main()

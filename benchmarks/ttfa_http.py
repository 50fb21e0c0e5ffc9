"""Time to first audio through HTTP, next to the engine's own first-segment time (issue 5).

A private service (Redis, local storage, ``spool serve``: gunicorn + Celery workers) gets the
same one-paragraph text ``--runs`` times per route, the routes interleaved (issue 15):

* ``jobs``: ``POST /v1/jobs`` + ``GET /v1/jobs/<id>/stream?format=pcm``;
* ``speech``: ``POST /v1/audio/speech`` with OpenAI's defaults, exactly what the official SDK sends
  (``model: tts-1``, no ``stream`` field: Spool streams by default, as OpenAI does).

Each run times from just before the POST to the first audio byte after the format's header,
then reads the stream to its end so the next run starts on an idle worker. For ``pcm``/``wav``
it also reports when speech is first heard (first byte + the near-silence that opens the
stream) and the **underrun margin**: for a listener who starts playing at the first byte, the
minimum over the stream of (audio delivered - wall time since the first byte), taken just
before each new piece arrives; below zero the player would have stalled. After the paragraph
runs, each route reads a ~5-minute text (``--long-text``, cut to ``--long-words`` at a sentence
end) ``--long-runs`` times for the same margin. In the same run a fresh engine process with the
same thread count renders the paragraph ``--engine-runs`` times (warm) for its first-chunk time.
Goals on the 2-core machine: p50 < 800 ms, p90/p10 <= 1.2.

    python benchmarks/ttfa_http.py
    python benchmarks/ttfa_http.py --runs 3 --text tiny --long-runs 0 --engine-runs 0   # harness check
"""

from __future__ import annotations

import argparse
import json
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


def bytes_per_second(fmt_name: str) -> float | None:
    """Audio bytes per second of a stream of ``fmt_name`` (16-bit mono at 24 kHz), None when compressed."""
    return 2 * 24000.0 if fmt_name in ("pcm", "wav") else None


def speech_body(text: str, args: argparse.Namespace) -> dict:
    """The body the official OpenAI SDK sends for ``audio.speech.create`` (no Spool extensions)."""
    return {"model": "tts-1", "input": text, "voice": args.voice, "response_format": args.format}


def one_request(svc: SpoolService, text: str, path: str, args: argparse.Namespace, header_len: int) -> dict:
    """One run on ``path``: POST, open the stream, time the first audio byte, read to the end."""
    conn = svc.http.connect()
    rate_bytes = bytes_per_second(args.format)
    t0 = time.perf_counter()
    job_id = None
    try:
        if path == "jobs":
            job = svc.submit(text, voice=args.voice, fmt=args.format)
            job_id = job["id"]
            t_posted = time.perf_counter()
            conn.request("GET", f"/v1/jobs/{job_id}/stream?format={args.format}")
        else:
            conn.request(
                "POST",
                "/v1/audio/speech",
                body=json.dumps(speech_body(text, args)),
                headers={"Content-Type": "application/json", "Accept": "application/octet-stream"},
            )
            t_posted = time.perf_counter()
        resp = conn.getresponse()
        t_headers = time.perf_counter()
        if resp.status != 200:
            raise ServiceError(f"{path} answered HTTP {resp.status}: {resp.read()[:300]!r}")
        job_id = job_id or resp.getheader("X-Job-Id")
        received = 0
        t_first = None
        margin = None  # min over arrivals of (audio delivered so far - wall since the first byte)
        late_margin = None  # the same, over arrivals from one second after the first byte on
        late_at = None  # (seconds since the first byte, audio seconds delivered) where late_margin is
        head = bytearray()  # the start of the stream, to find where speech begins
        while True:
            data = resp.read1(65536)
            now = time.perf_counter()
            if not data:
                break
            if t_first is not None and rate_bytes:
                delivered = max(0, received - header_len) / rate_bytes
                here = delivered - (now - t_first)
                margin = here if margin is None else min(margin, here)
                if now - t_first >= 1.0 and (late_margin is None or here < late_margin):
                    late_margin, late_at = here, (now - t_first, delivered)
            received += len(data)
            if len(head) < header_len + HEAD_KEEP_BYTES:
                head += data
            if t_first is None and received > header_len:
                t_first = now
        t_end = time.perf_counter()
    finally:
        conn.close()
    audio_bytes = max(0, received - header_len)
    audio_s = audio_bytes / rate_bytes if rate_bytes else None
    if margin is None and audio_s is not None:
        margin = audio_s  # everything came in one piece: nothing could run dry
    lead = silence_before_speech(bytes(head[header_len:])) if args.format == "pcm" else None
    return {
        "path": path,
        "ttfa_s": (t_first - t0) if t_first else None,
        "lead_silence_s": lead,
        "first_speech_s": (t_first - t0 + lead) if t_first and lead is not None else None,
        "underrun_margin_s": margin,
        "late_margin_s": late_margin if late_margin is not None else audio_s,
        "late_margin_at_s": late_at[0] if late_at else None,
        "late_margin_audio_s": late_at[1] if late_at else None,
        "post_s": t_posted - t0,
        "headers_s": t_headers - t0,
        "total_s": t_end - t0,
        "bytes": received,
        "audio_s": audio_s,
        "job_id": job_id,
    }


def long_text(spec: str, words: int) -> tuple[str, str]:
    """The first ``words`` words of a text, cut back to the end of a sentence (about 5 minutes at 975)."""
    name, text = load_text(spec)
    cut = " ".join(text.split(" ")[:words]) if len(text.split()) > words else text
    end = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind("\n\n"))
    if len(cut) < len(text) and end > 0:
        cut = cut[: end + 1]
    return f"{name}[:{len(cut.split())}w]", cut


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


def margin_stats(runs: list[dict], key: str = "underrun_margin_s") -> dict:
    """The worst and the median per-run underrun margin, in seconds, and where the worst one fell."""
    have = [r for r in runs if r.get(key) is not None]
    if not have:
        return {"min": None, "p50": None, "n": 0, "at_s": None, "audio_s": None}
    worst = min(have, key=lambda r: r[key])
    return {
        "min": worst[key],
        "p50": percentile([r[key] for r in have], 50),
        "n": len(have),
        "at_s": worst.get("late_margin_at_s"),  # seconds after the first byte (late margin only)
        "audio_s": worst.get("late_margin_audio_s"),
    }


def main() -> None:
    """Parse arguments, measure, print, save."""
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="paragraph", help="text name or path (default paragraph)")
    p.add_argument("--runs", type=int, default=10, help="paragraph runs per route (default 10)")
    p.add_argument(
        "--path",
        choices=("both", "jobs", "speech"),
        default="both",
        help="jobs: POST /v1/jobs + GET stream; speech: POST /v1/audio/speech as the OpenAI SDK sends it; "
        "both (default): interleaved",
    )
    p.add_argument("--format", default="pcm", help="stream format (default pcm)")
    p.add_argument("--long-text", default="chapter", help="text for the long-stream margin (default chapter)")
    p.add_argument("--long-words", type=int, default=975, help="words of it to read (default 975: ~5 min)")
    p.add_argument("--long-runs", type=int, default=1, help="long-text runs per route (default 1; 0 skips)")
    p.add_argument(
        "--engine-runs", type=int, default=None, help="engine-alone renders (default --runs; 0 skips)"
    )
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
    engine_runs = args.runs if args.engine_runs is None else args.engine_runs
    paths = ("jobs", "speech") if args.path == "both" else (args.path,)
    exit_on_sigterm()

    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    name, text = load_text(args.text)
    long_name, long_body = long_text(args.long_text, args.long_words)
    log_dir = Path(tempfile.mkdtemp(prefix="spool-bench-logs-"))
    text_file = log_dir / f"{name}.txt"
    text_file.write_text(text, encoding="utf-8")
    header_len = header_bytes(args.format)

    engine: dict = {"ttfa": []}
    if engine_runs:
        print(
            f"# engine alone: {engine_runs} warm renders, {args.threads} thread(s)",
            file=sys.stderr,
            flush=True,
        )
        engine = engine_first_segment(text_file, args.threads, engine_runs, args.voice, args.first_phonemes)
    print(
        f"# service: {args.workers} worker(s) x {args.threads} thread(s); logs in {log_dir}",
        file=sys.stderr,
        flush=True,
    )
    runs: list[dict] = []
    long_runs: list[dict] = []

    def measure(body: str, path: str, i: int, label: str, into: list[dict]) -> None:
        r = one_request(svc, body, path, args, header_len)
        r["run"] = i
        into.append(r)
        print(
            f"#   {label} {path}: first audio {fmt(r['ttfa_s'], 3)} s, margin {fmt(r['underrun_margin_s'], 2)} s, "
            f"audio {fmt(r['audio_s'])} s, all {fmt(r['total_s'])} s",
            file=sys.stderr,
            flush=True,
        )
        if args.json:  # a crash keeps the runs made so far
            partial = {"partial": True, "runs": runs, "long_runs": long_runs}
            Path(args.json).write_text(json.dumps(partial, indent=2, default=str) + "\n", encoding="utf-8")

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
            for path in paths:  # interleaved, so drift in the machine's speed hits both routes alike
                measure(text, path, i, f"{i + 1}/{args.runs}", runs)
        for i in range(args.long_runs):
            for path in paths:
                measure(long_body, path, i, f"long {i + 1}/{args.long_runs}", long_runs)

    by_path = {
        path: {
            "http": stats([r["ttfa_s"] for r in runs if r["path"] == path]),
            "first_speech": stats([r["first_speech_s"] for r in runs if r["path"] == path]),
            "margin": margin_stats([r for r in runs if r["path"] == path]),
            "long_margin": margin_stats([r for r in long_runs if r["path"] == path]),
            "late_margin": margin_stats([r for r in runs if r["path"] == path], "late_margin_s"),
            "long_late_margin": margin_stats([r for r in long_runs if r["path"] == path], "late_margin_s"),
        }
        for path in paths
    }
    eng = stats(engine["ttfa"])
    payload = {
        "benchmark": "ttfa_http",
        "machine": info,
        "machine_after": machine()["loadavg"],
        "args": vars(args),
        "text": name,
        "words": len(text.split()),
        "long_text": long_name,
        "paths": by_path,
        "engine": {**eng, **engine},
        "runs": runs,
        "long_runs": long_runs,
    }
    print(describe_machine(info))
    print(
        f"# text {name} ({payload['words']} words), format {args.format}, {args.workers} worker(s) x "
        f"{args.threads} thread(s), {args.runs} runs per route, interleaved; long text {long_name}"
    )
    if engine.get("first_segment"):
        print(
            f"# engine's first segment ({fmt(engine['first_audio_s'])} s audio): {engine['first_segment']!r}"
        )
    labels = {"jobs": "POST /v1/jobs + GET stream", "speech": "POST /v1/audio/speech (SDK defaults)"}
    rows = []
    for path in paths:
        http, heard = by_path[path]["http"], by_path[path]["first_speech"]
        rows.append(
            [f"{labels[path]}: first audio byte", http["p10"], http["p50"], http["p90"], http["spread"]]
        )
        if heard["n"]:
            rows.append(
                [
                    f"{labels[path]}: first speech heard",
                    heard["p10"],
                    heard["p50"],
                    heard["p90"],
                    heard["spread"],
                ]
            )
    if eng["n"]:
        rows.append(["engine: call -> first chunk", eng["p10"], eng["p50"], eng["p90"], eng["spread"]])
    print(
        table(
            ["seconds", "p10", "p50", "p90", "p90/p10"], [[r[0], *[fmt(v, 3) for v in r[1:]]] for r in rows]
        )
    )
    margin_rows = []
    for path in paths:
        res = by_path[path]
        long_audio = [r["audio_s"] for r in long_runs if r["path"] == path and r["audio_s"]]
        margin_rows.append(
            [
                labels[path],
                fmt(res["margin"]["min"], 2),
                fmt(res["margin"]["p50"], 2),
                fmt(res["long_margin"]["min"], 2),
                fmt(long_audio[0] if long_audio else None, 1),
            ]
        )
    print("underrun margin (audio delivered - wall since first byte; < 0: the player stalls), seconds:")
    print(table(["route", "paragraph min", "paragraph p50", "~5 min text min", "its audio s"], margin_rows))
    late_rows = []
    for path in paths:
        for what, key in (("paragraph", "late_margin"), ("~5 min text", "long_late_margin")):
            m = by_path[path][key]
            late_rows.append(
                [
                    labels[path],
                    what,
                    fmt(m["min"], 2),
                    fmt(m["p50"], 2),
                    fmt(m["at_s"], 2),
                    fmt(m["audio_s"], 2),
                ]
            )
    print("after the first second (goal: never below zero); where the worst run's minimum fell:")
    print(table(["route", "text", "min", "p50", "at s after 1st byte", "audio s delivered then"], late_rows))
    if len(paths) == 2:
        jobs50, speech50 = by_path["jobs"]["http"]["p50"], by_path["speech"]["http"]["p50"]
        ratio = speech50 / jobs50 if jobs50 and speech50 else None
        print(f"first audio p50, OpenAI route / jobs route: {fmt(ratio, 2)}x")
    for path in paths:
        http = by_path[path]["http"]
        print(
            f"goals ({path}): p50 < 0.800 s: {verdict(http['p50'], 0.8, True)}; p90/p10 <= 1.2: "
            f"{verdict(http['spread'], 1.2, True)}"
        )
    save_json(args.json, payload)


if __name__ == "__main__":
    main()

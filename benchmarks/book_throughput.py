"""Audiobook throughput: audio minutes per wall minute with one and two workers, next to the engine (issue 6).

In one run: the engine alone (a fresh child process, ``--threads`` threads, rendering each
chapter in turn), then the service with one worker process (``--threads`` threads) and
with two worker processes (one thread each), each rendering the whole book through
``POST /v1/books`` (multipart upload) until the book has succeeded (assembly included).
The order of the three alternates between repeats.

The book is Alice's Adventures in Wonderland, chapters 1-2 by default (``--chapters``),
uploaded as a plain-text file with one ``CHAPTER ...`` heading per chapter (or the EPUB
itself with ``--epub``, the chapters chosen by the ``chapters`` form field).

    python benchmarks/book_throughput.py
    python benchmarks/book_throughput.py --chapters 1 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import (
    describe_machine,
    exit_on_sigterm,
    fmt,
    machine,
    median,
    project_python,
    run_child,
    save_json,
    table,
)
from make_texts import DEFAULT_EPUB, chapters
from private_service import ServiceError, SpoolService


def parse_chapters(spec: str) -> list[int]:
    """Parse ``1-2`` or ``1,3,5`` into 1-based chapter numbers."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def book_texts(numbers: list[int]) -> list[str]:
    """The chosen chapters of Alice as texts (heading line, blank line, paragraphs)."""
    chs = chapters(DEFAULT_EPUB)
    return [chs[n - 1][0] + "\n\n" + "\n\n".join(chs[n - 1][1]) for n in numbers]


def multipart(
    fields: dict[str, str], file_field: str, filename: str, data: bytes, ctype: str
) -> tuple[bytes, str]:
    """Encode form fields and one file as multipart/form-data; return (body, content type)."""
    boundary = "spoolbench" + uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def engine_run(files: list[Path], threads: int, voice: str) -> dict:
    """Render every chapter with the engine in one fresh child process."""
    args = ["--system", "spool", "--threads", str(threads), "--voice", voice]
    for f in files:
        args += ["--text-file", str(f)]
    res = run_child(project_python(), args, timeout=4 * 3600)
    return {"wall_s": res["wall_s"], "audio_s": res["audio_s"]}


def book_duration(book: dict) -> float | None:
    """Audio seconds of a finished book from its JSON (total, or the sum of its chapters)."""
    for key in ("duration", "audio_seconds"):
        if isinstance(book.get(key), (int, float)):
            return float(book[key])
    result = book.get("result") or {}
    if isinstance(result.get("duration"), (int, float)):
        return float(result["duration"])
    chs = book.get("chapters") or []
    durs = [c.get("duration") for c in chs if isinstance(c.get("duration"), (int, float))]
    return float(sum(durs)) if durs else None


def service_run(svc: SpoolService, upload: tuple[str, bytes, str], args: argparse.Namespace) -> dict:
    """Upload the book, wait until it has succeeded; wall time and audio seconds."""
    filename, data, ctype = upload
    fields = {"voice": args.voice, "format": args.format}
    if args.epub:
        fields["chapters"] = args.chapters
    body, content_type = multipart(fields, "file", filename, data, ctype)
    t0 = time.perf_counter()
    status, raw = svc.http.request("POST", "/v1/books", body=body, headers={"Content-Type": content_type})
    if status >= 400:
        raise ServiceError(f"POST /v1/books: HTTP {status}: {raw[:500]!r}")
    book_id = json.loads(raw)["id"]
    while True:
        book = svc.http.json("GET", f"/v1/books/{book_id}")
        if book.get("state") in ("succeeded", "failed", "cancelled"):
            break
        svc._alive()
        time.sleep(args.poll)
    wall = time.perf_counter() - t0
    if book["state"] != "succeeded":
        raise ServiceError(f"book {book_id} {book['state']}: {book.get('error')}")
    return {"wall_s": wall, "audio_s": book_duration(book), "book_id": book_id}


def main() -> None:
    """Parse arguments, measure the three set-ups in alternating order, print, save."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chapters", default="1-2", help="Alice chapters, e.g. 1-2 or 1,3 (default 1-2)")
    p.add_argument("--epub", action="store_true", help="upload the EPUB itself instead of a text file")
    p.add_argument(
        "--threads", type=int, default=2, help="engine threads: engine alone and the 1-worker service"
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--format", default="mp3", help="book output format field (default mp3)")
    p.add_argument("--storage", choices=("local", "s3"), default="local")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between book polls")
    p.add_argument("--skip", default="", help="comma list of set-ups to skip: engine,1worker,2workers")
    p.add_argument("--json", default=None, metavar="OUT", help="also write all results to this JSON file")
    args = p.parse_args()
    exit_on_sigterm()

    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    numbers = parse_chapters(args.chapters)
    texts = book_texts(numbers)
    log_dir = Path(tempfile.mkdtemp(prefix="spool-bench-logs-"))
    files = []
    for n, t in zip(numbers, texts, strict=True):
        f = log_dir / f"chapter-{n}.txt"
        f.write_text(t, encoding="utf-8")
        files.append(f)
    if args.epub:
        upload = (DEFAULT_EPUB.name, DEFAULT_EPUB.read_bytes(), "application/epub+zip")
    else:
        upload = ("alice.txt", "\n\n\n".join(texts).encode(), "text/plain")
    words = sum(len(t.split()) for t in texts)

    setups = {
        "engine": f"engine alone, {args.threads} threads",
        "1worker": f"service, 1 worker x {args.threads} threads",
        "2workers": "service, 2 workers x 1 thread",
    }
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    names = [n for n in setups if n not in skip]
    runs: list[dict] = []
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            print(
                f"# {rep + 1}/{args.repeats}: {setups[name]} ({words} words) ...", file=sys.stderr, flush=True
            )
            if name == "engine":
                r = engine_run(files, args.threads, args.voice)
            else:
                workers, threads = (1, args.threads) if name == "1worker" else (2, 1)
                with SpoolService(
                    workers=workers, threads=threads, storage=args.storage, log_dir=log_dir
                ) as svc:
                    r = service_run(svc, upload, args)
            r.update(setup=name, repeat=rep)
            r["speed"] = r["audio_s"] / r["wall_s"] if r.get("audio_s") and r["wall_s"] else None
            runs.append(r)
            print(
                f"#   wall {fmt(r['wall_s'])} s, audio {fmt(r['audio_s'])} s, {fmt(r['speed'])}x real time",
                file=sys.stderr,
                flush=True,
            )

    rows = []
    summary = {}
    for name in names:
        rs = [r for r in runs if r["setup"] == name]
        s = {k: median(r.get(k) for r in rs) for k in ("wall_s", "audio_s", "speed")}
        summary[name] = s
        rows.append([setups[name], len(rs), s["wall_s"], s["audio_s"], s["speed"]])
    base = (summary.get("engine") or {}).get("speed")
    for row, name in zip(rows, names, strict=True):
        sp = summary[name]["speed"]
        row.append(fmt(sp / base) + "x" if sp and base else "-")
    payload = {
        "benchmark": "book_throughput",
        "machine": info,
        "machine_after": machine()["loadavg"],
        "args": vars(args),
        "chapters": numbers,
        "words": words,
        "summary": summary,
        "runs": runs,
    }
    print(describe_machine(info))
    print(f"# Alice chapters {args.chapters} ({words} words), voice {args.voice}, medians of {args.repeats}")
    print(table(["set-up", "n", "wall s", "audio s", "audio min / wall min", "vs engine"], rows))
    save_json(args.json, payload)


if __name__ == "__main__":
    main()

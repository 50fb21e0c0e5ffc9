"""Peak memory and time of book assembly, for books of a given length (issue 13, item 4).

A faithful synthetic book (``tests/fixtures/synthetic_book.py``: real record, plan and one
checkpoint per ~10 s segment in local storage, audio made without the model) is assembled in a
fresh interpreter, once per implementation:

* ``new``: ``service.book_render.assemble_book`` (chapters streamed from checkpoints through the
  encoders to files on disk, the zip built on disk, every output uploaded from its file);
* ``old``: the assembly as it was before (commit 329ebaa): every chapter's samples held, the
  whole book joined in memory, the zip built in memory; run from that commit's own
  ``engine/audiobook.py`` and its service code, read with ``git show``.

Peak RSS is the child's ``ru_maxrss``; "base" is its RSS after imports and set-up, before the
assembly starts. Needs Redis (``--redis``; keys under a unique prefix, removed afterwards).

    python benchmarks/assembly_memory.py --hours 2 20 --impl new old --json out/assembly_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from common import describe_machine, machine, project_python, table  # noqa: E402

#: The commit whose assembly is measured as "old".
OLD_COMMIT = "329ebaa"

#: Seconds of audio per synthetic segment (a real book's segments are 5-15 s).
SEGMENT_SECONDS = 10.0

#: Chapters per hour of audio (a chapter of about 20 minutes).
CHAPTERS_PER_HOUR = 3


def _rss_mb() -> float:
    """This process's current resident set size in MB (from /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def _old_assembly(old_dir: Path) -> Any:
    """The assembly function of OLD_COMMIT (its engine.audiobook loaded under another name)."""
    import importlib.util
    import io
    import zipfile

    import numpy as np

    spec = importlib.util.spec_from_file_location("old_audiobook", old_dir / "audiobook.py")
    old = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["old_audiobook"] = old  # its dataclasses look their module up
    spec.loader.exec_module(old)  # type: ignore[union-attr]
    from engine.subtitles import cues_from_chunks
    from service.books import decode_checkpoint, plan_segment, segment_digest

    def assemble_book(store: Any, engine: Any, book_id: str) -> list[str]:
        # service/book_render.py's assemble_book at OLD_COMMIT, step for step.
        svc = store.svc
        rec = store.record(book_id)
        store.start_assembly(book_id)
        spec = rec.render_spec
        rv = engine.check(spec.voice, spec.speed, spec.language)
        plan = store.plan(book_id)
        chapters = []
        for chapter in plan["chapters"]:
            chunks = []
            for seg in plan["segments"][chapter["first"] : chapter["first"] + chapter["count"]]:
                key = svc.keys.segment_checkpoint(
                    segment_digest(seg, rv.spec, rv.speed, rv.lang, engine.model_id)
                )
                chunks.append(decode_checkpoint(svc.storage.get(key), plan_segment(seg)))
            samples = np.concatenate([c.samples for c in chunks]).astype(np.float32)
            chapters.append(
                old.ChapterAudio(
                    chapter["title"],
                    samples,
                    rv.sample_rate,
                    cues_from_chunks(chunks),
                    tuple(chapter["parents"]),
                )
            )
        keys = []
        with tempfile.TemporaryDirectory(prefix="spool-book-") as tmp:
            out = Path(tmp)
            manifest = old.assemble(chapters, out, title=rec.title, author=rec.author, gap=spec.gap)
            zipped = io.BytesIO()
            with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_STORED) as archive:
                for name in [*manifest["files"], "manifest.json"]:
                    archive.write(out / name, arcname=name)
            for name in [*manifest["files"], "manifest.json"]:
                key = svc.keys.book_file(book_id, name)
                with open(out / name, "rb") as fh:
                    svc.storage.put(key, fh, "application/octet-stream")
                keys.append(key)
            key = svc.keys.book_file(book_id, "book.zip")
            svc.storage.put(key, zipped.getvalue(), "application/zip")
            keys.append(key)
        store.succeed(book_id, manifest)
        return keys

    return assemble_book


def child(args: argparse.Namespace) -> None:
    """Assemble the prepared book once and print one JSON line: peak RSS, base RSS, seconds."""
    from config.settings import Settings
    from service.book_render import assemble_book
    from service.services import Services
    from service.storage import LocalStorage
    from tests.fixtures.synthetic_book import SyntheticEngine

    settings = Settings(redis_url=args.redis, key_prefix=args.prefix)
    svc = Services(settings, storage=LocalStorage(args.dir))
    impl = args.impl[0]
    run = _old_assembly(Path(args.old_dir)) if impl == "old" else assemble_book
    if impl == "new":
        assert svc.books.try_assembly(args.book)
    base = _rss_mb()
    started = time.perf_counter()
    keys = run(svc.books, SyntheticEngine(), args.book)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    assert svc.books.state(args.book) == "succeeded" and keys, "the assembly did not finish"
    size = svc.storage.size(svc.keys.book_file(args.book, "book.zip"))
    print(json.dumps({"peak_mb": peak, "base_mb": base, "seconds": seconds, "zip_mb": size / 1e6}))
    svc.close()


def _hwm_mb(pid: int) -> float | None:
    """A running process's peak RSS so far (VmHWM), in MB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e3
    except OSError:
        return None
    return None


def _run_child(cmd: list[str], time_limit: float) -> dict[str, Any] | None:
    """Run one assembly; with a time limit, stop it there and report the peak RSS it had reached."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _hwm_mb(proc.pid) or 0.0)
        if time_limit and time.perf_counter() - started > time_limit:
            proc.kill()
            proc.communicate()
            return {
                "peak_mb": peak,
                "base_mb": None,
                "seconds": time_limit,
                "zip_mb": None,
                "complete": False,
            }
        time.sleep(1.0)  # sampling period of the peak, not a synchronisation
    out, err = proc.communicate()
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        return None
    return json.loads(out.strip().splitlines()[-1]) | {"complete": True}


def prepare(redis: str, prefix: str, directory: Path, hours: float) -> tuple[str, float]:
    """Write a synthetic book of ``hours`` of audio; return its id and its seconds of audio."""
    from config.settings import Settings
    from service.services import Services
    from service.storage import LocalStorage
    from tests.fixtures.synthetic_book import make_book

    chapters = max(1, round(hours * CHAPTERS_PER_HOUR))
    per_chapter = max(1, round(hours * 3600 / SEGMENT_SECONDS / chapters))
    svc = Services(Settings(redis_url=redis, key_prefix=prefix), storage=LocalStorage(directory))
    book = make_book(
        svc, chapters=chapters, segments_per_chapter=per_chapter, segment_seconds=SEGMENT_SECONDS
    )
    svc.close()
    return book.id, book.seconds


def reset(redis: str, prefix: str, book_id: str) -> None:
    """Put the book back to rendering (all segments done, no lock, no manifest) for the next run."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis)
    client.hset(f"{prefix}book:{book_id}", mapping={"state": "rendering", "manifest": ""})
    client.delete(f"{prefix}book:{book_id}:lock")
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, nargs="+", default=[2.0, 20.0])
    parser.add_argument("--impl", nargs="+", choices=["new", "old"], default=["new", "old"])
    parser.add_argument("--old-max-hours", type=float, default=2.0, help="skip 'old' above this length")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=0,
        help="stop an assembly after this many seconds and report the peak RSS it reached so far (0: none)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--book", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--old-dir", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    info = machine()
    print(describe_machine(info), flush=True)
    prefix = f"spool-bench-{uuid.uuid4().hex[:8]}:"
    work = Path(tempfile.mkdtemp(prefix="spool-assembly-bench-"))
    old_dir = work / "old"
    old_dir.mkdir()
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:engine/audiobook.py"], cwd=REPO, capture_output=True, check=True
    ).stdout
    (old_dir / "audiobook.py").write_bytes(source)
    rows, results = [], []
    try:
        for hours in args.hours:
            storage = work / f"storage-{hours:g}h"
            started = time.perf_counter()
            book_id, seconds = prepare(args.redis, prefix, storage, hours)
            print(
                f"# {hours:g} h book: {seconds / 3600:.2f} h of audio prepared in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            for impl in args.impl:
                if impl == "old" and hours > args.old_max_hours:
                    continue
                reset(args.redis, prefix, book_id)
                cmd = [
                    project_python(),
                    __file__,
                    "--child",
                    "--impl",
                    impl,
                    "--book",
                    book_id,
                    "--dir",
                    str(storage),
                    "--old-dir",
                    str(old_dir),
                    "--prefix",
                    prefix,
                    "--redis",
                    args.redis,
                ]
                result = _run_child(cmd, args.time_limit)
                if result is None:
                    raise SystemExit(f"{impl} at {hours:g} h failed")
                result.update({"hours": hours, "audio_hours": seconds / 3600, "impl": impl})
                results.append(result)
                rows.append(
                    [
                        f"{hours:g}",
                        impl,
                        result["peak_mb"],
                        result["base_mb"],
                        result["seconds"],
                        result["zip_mb"],
                        "yes" if result["complete"] else f"no: stopped at {args.time_limit:g} s",
                    ]
                )
                print(
                    f"# {impl} {hours:g} h: peak {result['peak_mb']:.0f} MB, {result['seconds']:.0f} s",
                    flush=True,
                )
            shutil.rmtree(storage, ignore_errors=True)
    finally:
        import redis as redis_lib

        client = redis_lib.Redis.from_url(args.redis)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
        shutil.rmtree(work, ignore_errors=True)
    print(table(["book hours", "impl", "peak RSS MB", "base RSS MB", "seconds", "zip MB", "complete"], rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()

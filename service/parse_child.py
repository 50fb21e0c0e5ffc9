"""The child process that parses one uploaded book under resource limits (run by ``service.book_parse``).

``python -I -S service/parse_child.py JOB.json``: it limits its own address space (RLIMIT_AS), CPU
time (RLIMIT_CPU) and core size first, asks to die with its parent, and only then reads the upload, so
an upload bomb ends this process (MemoryError, SIGXCPU) and never the worker that started it.

Only the standard library and ``engine/book.py`` are loaded: the ``engine`` package is entered without
running its ``__init__`` (which imports onnxruntime and numpy, about 240 MB of address space), so the
address-space limit can be tight. Outputs, in the job's directory: ``meta.json`` (title, author, cover
type, chapter count, the plan preview, or the parser's error), ``source.json`` (the chosen chapters
with their text, as ``service.books`` stores it) and ``cover``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import types
from pathlib import Path
from typing import Any

#: Exit status of a child that ran out of address space (MemoryError).
MEMORY_EXIT = 17

#: Exit status of a child given arguments it cannot use.
USAGE_EXIT = 2


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    """Bound this process before it touches the upload."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # SIGXCPU at the soft limit (its default action ends the process), SIGKILL a second later.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the worker that started it dies (a killed worker's parse ends)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the CPU limit still ends an orphaned parse


def _book_module() -> Any:
    """``engine.book`` without ``engine/__init__`` (see the module docstring)."""
    root = Path(__file__).resolve().parents[1]
    package = types.ModuleType("engine")
    package.__path__ = [str(root / "engine")]
    sys.modules["engine"] = package
    import importlib

    return importlib.import_module("engine.book")


def _parse(job: dict[str, Any], out: Path) -> dict[str, Any]:
    """Parse the upload named in ``job``; write source.json and the cover; return the meta record."""
    book_mod = _book_module()
    from engine.exceptions import BookError

    try:
        data = Path(job["upload"]).read_bytes()
        book = book_mod.load_book(job["filename"], data=data, filename=job["filename"])
        del data
        chapters = list(job.get("chapters") or ()) or None
        include = bool(job.get("include_matter"))
        chosen = book.select(include_matter=include, chapters=chapters)
        preview = book.preview(include_matter=include, chapters=chapters, speed=float(job.get("speed", 1.0)))
    except BookError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    except RecursionError:
        return {
            "ok": False,
            "code": "invalid_book",
            "message": "The book's markup is nested too deeply to read: it is damaged or hostile.",
        }
    source = {
        "chapters": [c.report() | {"text": c.text} for c in chosen],
        "skipped": [c.report() for c in book.skipped(include_matter=include)],
        "warnings": list(book.warnings),
    }
    with (out / "source.json").open("w", encoding="utf-8") as fh:
        json.dump(source, fh)
    if book.cover:
        (out / "cover").write_bytes(book.cover)
    return {
        "ok": True,
        "title": book.title,
        "author": book.author,
        "cover_type": book.cover_type or ("image/jpeg" if book.cover else ""),
        "chapters": len(chosen),
        "preview": preview,
    }


def main(argv: list[str]) -> int:
    """Run one parse job (its JSON file named by the only argument); the exit status says how it ended."""
    if len(argv) != 2:
        print("usage: parse_child.py JOB.json", file=sys.stderr)
        return USAGE_EXIT
    job_path = Path(argv[1])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    _limit(int(job["memory_bytes"]), int(job["cpu_seconds"]))
    _die_with_parent()
    out = job_path.parent
    try:
        meta = _parse(job, out)
    except MemoryError:
        # The frames holding the book are gone; report by the exit status alone (writing may fail too).
        os._exit(MEMORY_EXIT)
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

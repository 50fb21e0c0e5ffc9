"""Shared helpers for the benchmarks: paths, child processes, statistics, tables, machine description.

Stdlib only, so it can be imported from the project's venv and from the peer's bench-env.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEXTS = HERE / "texts"
RUNNER = HERE / "_runner.py"
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
BENCH_ENV = Path(os.environ.get("BENCH_ENV", REPO / "bench-env"))
PEER_PYTHON = BENCH_ENV / "bin" / "python"
PEER_VOICES = BENCH_ENV / "voices-v1.0.npz"
ASSETS = Path(os.environ.get("SPOOL_ASSETS_DIR", "~/.cache/spool")).expanduser()
MODEL = ASSETS / "kokoro-v1.0.int8.onnx"

#: Built-in texts by name (files under benchmarks/texts/).
TEXT_FILES = {
    "paragraph": TEXTS / "paragraph.txt",
    "plain": TEXTS / "plain.txt",  # a paragraph whose first sentence has no comma (issue 15)
    "minute": TEXTS / "minute.txt",
    "chapter": TEXTS / "chapter.txt",
    "alice-ch1": TEXTS / "alice-ch1.txt",
    "alice-ch2": TEXTS / "alice-ch2.txt",
}

#: A two-sentence text for checking the harness quickly.
TINY_TEXT = "Alice was not a bit hurt. She jumped up on to her feet in a moment."


def load_text(spec: str) -> tuple[str, str]:
    """Resolve a text spec (a built-in name, ``tiny``, or a file path) to (name, text)."""
    if spec == "tiny":
        return "tiny", TINY_TEXT
    path = TEXT_FILES.get(spec) or Path(spec)
    if not path.is_file():
        raise SystemExit(f"unknown text {spec!r}: use one of tiny, {', '.join(TEXT_FILES)} or a file path")
    return (spec if spec in TEXT_FILES else path.stem), path.read_text(encoding="utf-8")


def project_python() -> str:
    """The interpreter of the project's venv (falls back to the running one)."""
    return str(PROJECT_PYTHON) if PROJECT_PYTHON.exists() else sys.executable


def ensure_peer_env() -> None:
    """Create the peer's virtual environment (kokoro-onnx) with setup_peer.sh when it is missing."""
    if PEER_PYTHON.exists() and PEER_VOICES.exists() and (BENCH_ENV / ".ready").exists():
        return
    print(f"# peer environment missing: running {HERE / 'setup_peer.sh'}", file=sys.stderr, flush=True)
    subprocess.run(["bash", str(HERE / "setup_peer.sh")], check=True)


def run_child(python: str, args: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run ``_runner.py`` in a fresh interpreter and return the JSON object it prints last."""
    cmd = [python, str(RUNNER), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or "")[-3000:]
        raise RuntimeError(f"child failed (rc={proc.returncode}): {' '.join(cmd)}\n{tail}")
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    """Describe the machine: CPU model, core count, load average, Python and onnxruntime versions."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line describing the machine for the top of a table."""
    load = " ".join(str(x) for x in info["loadavg"])
    return f"# machine: {info['cpu']}, {info['cores']} CPUs, load avg {load} at {info['time']}"


def median(values: Iterable[float | None]) -> float | None:
    """Median of the non-None values, or None when there are none."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def percentile(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0-100) with linear interpolation between closest ranks."""
    vals = sorted(values)
    if not vals:
        raise ValueError("no values")
    pos = (len(vals) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value: Any, digits: int = 2) -> str:
    """Format a number for a table cell ('-' for None)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render a plain-text table with right-aligned numeric columns."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True))
        )
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    """True when a table cell holds a number (right-aligned)."""
    try:
        float(cell.rstrip("x%"))
    except ValueError:
        return False
    return True


def verdict(value: float | None, goal: float, lower_is_better: bool) -> str:
    """'PASS' or 'FAIL' against a goal, '-' when unmeasured."""
    if value is None:
        return "-"
    ok = value <= goal if lower_is_better else value >= goal
    return "PASS" if ok else "FAIL"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_json(path: str | None, payload: dict) -> None:
    """Write results as JSON when ``path`` is given."""
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"# results written to {path}")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``with`` blocks stop the services this process started."""
    import signal

    def _handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _handler)

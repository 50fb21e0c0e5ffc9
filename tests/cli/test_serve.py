"""``spool serve`` as a supervisor, run for real: readiness, a crashed child restarted, clean stops.

Each test starts the whole system (private Redis with AOF, gunicorn, a Celery worker with the real
model) in a temporary directory, on free ports, and checks what is left after the signal: no process
of the tree alive, no port bound.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from cli.main import main
from tests.fixtures.durability import PrivateRedis
from tests.fixtures.service import REPO_ROOT, free_port, wait_until

#: Long enough that several segments are left when the signal comes.
LONG_TEXT = " ".join(
    f"Sentence number {n} of this passage is read aloud, slowly and clearly, to the very end." for n in range(1, 9)
)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    """A process's command line ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """GET (or POST JSON) and decode the JSON answer, errors included; (0, {}) when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError):
        return 0, {}


@dataclass
class Served:
    """A running ``spool serve``."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    var_dir: Path
    log: Path

    def log_text(self) -> str:
        """What it printed so far."""
        return self.log.read_text(errors="replace")

    def redis_url(self) -> str:
        """The private Redis' URL, from the line ``spool serve`` prints."""
        line = wait_until(
            lambda: next((ln for ln in self.log_text().splitlines() if "started a private Redis" in ln), None),
            30,
            what="the private Redis",
        )
        return line.split(" on ", 1)[1].split(" ", 1)[0]


def serve_env(tmp: Path, assets_path: Path) -> dict[str, str]:
    """A clean environment for ``spool serve`` in ``tmp``: no Redis answers where it looks, so it starts its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    env.update(
        SPOOL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        SPOOL_VAR_DIR=str(tmp / "var"),
        SPOOL_STORAGE_URL=str(tmp / "storage"),
        SPOOL_ASSETS_DIR=str(assets_path),
        SPOOL_HEARTBEAT_INTERVAL="1",
        SPOOL_HEARTBEAT_TTL="3",
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def served(tmp_path: Path, assets_path: Path) -> Iterator[Served]:
    """``spool serve`` with one worker process (one engine thread) and one web process."""
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "1",
               "--threads", "1", "--web-workers", "1", "--stop-timeout", "120"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=serve_env(tmp_path, assets_path),
                                   stdout=out, stderr=subprocess.STDOUT)
    running = Served(process, f"http://127.0.0.1:{port}", port, tmp_path / "var", log)
    try:
        yield running
    finally:
        if process.poll() is None:
            tree = descendants(process.pid)
            process.kill()
            process.wait()
            for pid in tree:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_serve_is_ready_only_with_a_warm_engine_restarts_a_killed_redis_and_stops_cleanly_on_sigterm(
    served: Served,
) -> None:
    url = served.url
    # Liveness first; readiness once the worker's heartbeat says its engine is loaded.
    wait_until(lambda: http(f"{url}/healthz")[0] == 200, 120, interval=0.2, what="/healthz")
    status, ready = wait_until(
        lambda: (r := http(f"{url}/readyz"))[0] == 200 and r, 240, interval=0.2, what="/readyz"
    )
    assert ready["ready"] and ready["workers_ready"], ready
    assert main(["ready", "--url", url, "--timeout", "30", "-q"]) == 0
    status_body = http(f"{url}/status")[1]
    assert status_body["ready"] is True
    warm = {w["name"] for w in status_body["workers"] if w["engine_ready"] and w["engine_load_seconds"]}
    assert set(ready["workers_ready"]) <= warm

    # The first job, sent as soon as /readyz is green, runs on a worker that had loaded its engine.
    code, first = http(f"{url}/v1/jobs", {"text": "Ready when you are.", "format": "wav"})
    assert code == 202, first
    done = wait_until(lambda: (j := http(f"{url}/v1/jobs/{first['id']}")[1]).get("state") == "succeeded" and j,
                      120, interval=0.2, what="the first job")
    client = redis_lib.Redis.from_url(served.redis_url())
    worker_of_first = client.hget(f"spool:job:{done['id']}", "worker").decode()
    assert worker_of_first in ready["workers_ready"]

    # A crashed child comes back: SIGKILL the private Redis; it restarts on the same port and data
    # directory, and the finished job is still there (AOF).
    redis_pid = next(p for p in descendants(served.process.pid) if "redis-server" in cmdline(p))
    os.kill(redis_pid, signal.SIGKILL)
    wait_until(
        lambda: any("redis-server" in cmdline(p) and p != redis_pid for p in descendants(served.process.pid)),
        60,
        interval=0.1,
        what="the private Redis to be restarted",
    )
    wait_until(lambda: http(f"{url}/v1/jobs/{first['id']}")[0] == 200, 60, interval=0.2,
               what="the job to be readable again")
    assert http(f"{url}/v1/jobs/{first['id']}")[1]["state"] == "succeeded"
    assert "redis exited" in served.log_text() and "restarting" in served.log_text()

    # SIGTERM mid-job: synchronise on the job's progress, with several segments still to render.
    code, long_job = http(f"{url}/v1/jobs", {"text": LONG_TEXT, "format": "wav"})
    assert code == 202, long_job

    def under_way() -> dict[str, Any] | None:
        job = http(f"{url}/v1/jobs/{long_job['id']}")[1]
        progress = job.get("progress") or {}
        done_, total = progress.get("segments_done") or 0, progress.get("segments_total") or 0
        return job if job.get("state") == "running" and done_ >= 1 and total - done_ >= 3 else None

    wait_until(under_way, 120, interval=0.05, what="the long job to be under way")
    tree = descendants(served.process.pid)
    redis_port = int(served.redis_url().rsplit(":", 1)[1].split("/")[0])
    assert len(tree) >= 4, tree  # redis, the worker and its pool process, gunicorn and its worker
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0, served.log_text()[-3000:]
    assert [p for p in tree if alive(p)] == []
    assert port_free(served.port) and port_free(redis_port)
    # Warm shutdown: the worker finished its segment and handed the job back (queued again, its attempt
    # not counted, its message on the broker), and Redis, stopped last, kept all of it in its AOF.
    assert "handed back to the queue" in served.log_text()
    reread = PrivateRedis(served.var_dir / "redis").start()
    try:
        saved = redis_lib.Redis.from_url(reread.url)
        state, attempts = saved.hmget(f"spool:job:{long_job['id']}", "state", "attempts")
        assert (state, attempts) == (b"queued", b"0")
        assert any(long_job["id"].encode() in raw for raw in saved.lrange("cpu\x06\x163", 0, -1))
    finally:
        reread.stop()


def test_serve_started_in_the_background_stops_on_sigint(
    tmp_path: Path, assets_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A non-interactive shell starts a background job with SIGINT ignored (what scripts/start.sh does).
    port = free_port()
    script = (
        f"{sys.executable} -m cli.main serve --port {port} --workers 0 --web-workers 1 & pid=$!; "
        'echo "pid=$pid"; wait $pid; echo "rc=$?"'
    )
    shell = subprocess.Popen(["bash", "-c", script], cwd=REPO_ROOT, env=serve_env(tmp_path, assets_path),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert shell.stdout is not None
        first = shell.stdout.readline().decode()
        assert first.startswith("pid="), first
        pid = int(first.split("=")[1])
        wait_until(lambda: http(f"http://127.0.0.1:{port}/healthz")[0] == 200, 120, interval=0.2,
                   what="/healthz")
        assert http(f"http://127.0.0.1:{port}/readyz")[0] == 503  # no worker: alive, not ready
        assert main(["ready", "--url", f"http://127.0.0.1:{port}", "--timeout", "1"]) == 1
        assert "not ready after 1 s" in capsys.readouterr().err
        tree = descendants(pid)
        os.kill(pid, signal.SIGINT)
        out, _ = shell.communicate(timeout=60)
        assert "rc=0" in out.decode(), out.decode()[-2000:]
        assert [p for p in tree if alive(p)] == []
        assert port_free(port)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()

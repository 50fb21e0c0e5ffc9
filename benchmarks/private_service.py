"""Run a private Spool service for the benchmarks: Redis, optional moto S3, and ``spool serve``.

Everything runs on loopback ports chosen at start-up, under a temporary directory, and is
stopped on exit. Only the stdlib is used on the client side (``http.client``), so the
client's own cost stays small and easy to reason about.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

from common import REPO, free_port, project_python


class ServiceError(RuntimeError):
    """The private service did not start or answered with an error."""


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, http.client.HTTPException, ServiceError, ValueError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise ServiceError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f": {last_exc}" if last_exc else "")
    )


def parse_iso(value: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 UTC timestamp such as ``2026-01-01T00:00:00.123Z``."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Http:
    """A tiny JSON/bytes HTTP client on one base URL (a new connection per request)."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout

    def connect(self) -> http.client.HTTPConnection:
        """A fresh connection to the service."""
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        """Send a request (JSON body when ``body`` is a dict) and return (status, body)."""
        conn = self.connect()
        try:
            hdrs = dict(headers or {})
            data = None
            if isinstance(body, dict):
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            elif body is not None:
                data = body
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> dict:
        """Send a request and decode the JSON answer; a 4xx/5xx raises ServiceError."""
        status, data = self.request(method, path, body, headers)
        if status >= 400:
            raise ServiceError(f"{method} {path}: HTTP {status}: {data[:500]!r}")
        return json.loads(data)


class SpoolService:
    """Redis + storage + ``spool serve`` (web and workers) on private ports; a context manager."""

    def __init__(
        self,
        workers: int = 1,
        threads: int = 2,
        storage: str = "local",
        dev_web: bool = False,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout: float = 180.0,
    ) -> None:
        self.workers = workers
        self.threads = threads
        self.storage = storage
        self.dev_web = dev_web
        self.extra_env = extra_env or {}
        self.start_timeout = start_timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="spool-bench-svc-"))
        self.log_dir = log_dir or self.tmp
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.http = Http(self.base_url)
        self.redis_url = ""

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SpoolService:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a child with its output in ``<log_dir>/<name>.log``."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO), start_new_session=True
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def start(self) -> None:
        """Start Redis, the storage (moto for ``s3``), then ``spool serve``; wait until workers beat."""
        redis_bin = shutil.which("redis-server")
        if not redis_bin:
            raise ServiceError("redis-server is not installed (apt-get install redis-server)")
        rport = free_port()
        (self.tmp / "redis").mkdir()
        self._spawn(
            "redis",
            [
                redis_bin,
                "--bind",
                "127.0.0.1",
                "--port",
                str(rport),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp / "redis"),
            ],
        )
        self.redis_url = f"redis://127.0.0.1:{rport}/0"
        _wait(lambda: _redis_ping(rport), 15, "redis-server")

        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
        env.update(
            SPOOL_REDIS_URL=self.redis_url,
            SPOOL_VAR_DIR=str(self.tmp / "var"),
            SPOOL_LOG_LEVEL="WARNING",
            SPOOL_HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        if "SPOOL_ASSETS_DIR" in os.environ:
            env["SPOOL_ASSETS_DIR"] = os.environ["SPOOL_ASSETS_DIR"]
        if self.storage == "s3":
            mport = free_port()
            moto = Path(project_python()).with_name("moto_server")
            self._spawn("moto", [str(moto), "-H", "127.0.0.1", "-p", str(mport)])
            endpoint = f"http://127.0.0.1:{mport}"
            _wait(lambda: Http(endpoint).request("GET", "/")[0] < 500, 30, "moto_server")
            env.update(
                SPOOL_STORAGE_URL=f"s3://spool-bench/results?endpoint={endpoint}&create=1",
                SPOOL_S3_CREATE_BUCKET="1",
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
            )
        else:
            env["SPOOL_STORAGE_URL"] = str(self.tmp / "storage")
        env.update(self.extra_env)
        cmd = [
            project_python(),
            "-m",
            "cli.main",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
        ]
        if self.dev_web:
            cmd.append("--dev")
        self._spawn("serve", cmd, env=env)
        _wait(
            lambda: self.http.request("GET", "/healthz")[0] == 200,
            self.start_timeout,
            "the web app (/healthz)",
        )
        _wait(
            lambda: self._alive() and len(self.status().get("workers", [])) >= self.workers,
            self.start_timeout,
            f"{self.workers} worker process(es) to load their engine",
            interval=0.25,
        )

    def _alive(self) -> bool:
        """Raise when a child has exited."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise ServiceError(
                    f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}"
                )
        return True

    def stop(self) -> None:
        """Stop ``spool serve`` (SIGINT, as Ctrl-C), then moto and Redis."""
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if name == "serve" else signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()
        if os.environ.get("SPOOL_BENCH_KEEP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ API

    def status(self) -> dict:
        """``GET /status``."""
        return self.http.json("GET", "/status")

    def submit(self, text: str, voice: str = "af_heart", fmt: str = "mp3", speed: float = 1.0) -> dict:
        """``POST /v1/jobs``; returns the job JSON."""
        return self.http.json(
            "POST", "/v1/jobs", {"text": text, "voice": voice, "speed": speed, "format": fmt}
        )

    def job(self, job_id: str) -> dict:
        """``GET /v1/jobs/<id>``."""
        return self.http.json("GET", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 3600, interval: float = 0.1) -> dict:
        """Poll a job until it is finished; raise unless it succeeded."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                if job["state"] != "succeeded":
                    raise ServiceError(f"job {job_id} {job['state']}: {job.get('error')}")
                return job
            if time.monotonic() > deadline:
                raise ServiceError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            self._alive()
            time.sleep(interval)

    def download(self, job_id: str) -> bytes:
        """``GET /v1/jobs/<id>/audio`` (following a presigned redirect)."""
        status, data = self.http.request("GET", f"/v1/jobs/{job_id}/audio")
        if status in (301, 302, 303, 307):
            raise ServiceError(
                "audio redirect not supported by the benchmark client: set SPOOL_AUDIO_REDIRECT=0"
            )
        if status != 200:
            raise ServiceError(f"GET audio of {job_id}: HTTP {status}: {data[:300]!r}")
        return data


def _redis_ping(port: int) -> bool:
    """True when Redis on ``port`` answers PING (raw protocol, no client library)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def audio_seconds(data: bytes) -> float | None:
    """Duration of an encoded audio file, decoded with the project's engine (None if unavailable)."""
    try:
        from engine.audio import decode_audio
    except ImportError:
        return None
    samples, rate = decode_audio(data)
    return len(samples) / rate


if __name__ == "__main__":  # smoke test: start, print /status, stop
    from common import exit_on_sigterm

    exit_on_sigterm()
    with SpoolService(workers=int(sys.argv[1]) if len(sys.argv) > 1 else 1) as svc:
        print(json.dumps(svc.status(), indent=2))

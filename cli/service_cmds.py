"""Service commands: ``spool serve``, ``spool worker``, ``spool ready``, ``spool submit`` and ``spool status``.

``serve`` runs the whole system on one machine (a private Redis if none answers,
the web app, and Celery workers); ``worker`` runs one worker; ``submit`` and
``status`` talk HTTP to a running Spool (``SPOOL_URL``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import defaults
from config.settings import Settings
from engine.exceptions import SpoolError
from engine.markup import MARKUP_MODES

#: Seconds between polls while ``spool submit --wait`` waits.
POLL_INTERVAL = 0.5

#: Seconds ``spool serve`` waits for its private Redis to answer.
REDIS_START_TIMEOUT = 10.0

#: Seconds the web server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 20.0

#: Seconds the workers get by default to finish their current task (Celery warm shutdown) before they
#: are killed; a killed worker's job is handed back to the queue by recovery.
WORKER_STOP_TIMEOUT = 120.0

#: Seconds the private Redis gets to write its append-only file and exit.
REDIS_STOP_TIMEOUT = 30.0

#: First restart delay of a child that died, in seconds; it doubles up to RESTART_BACKOFF_MAX.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 30.0

#: Restarts in a row (each one within RESTART_RESET seconds of its start) before ``spool serve`` gives up.
MAX_RESTARTS = 5
RESTART_RESET = 60.0

#: prctl option: the signal a child gets when its parent dies.
PR_SET_PDEATHSIG = 1


class ClientError(SpoolError):
    """The Spool server answered with an error, or could not be reached."""

    code = "client_error"


# --------------------------------------------------------------------------------------------- serve


def _redis_reachable(url: str) -> bool:
    """True when a Redis server answers PING at ``url``."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_command(binary: str, directory: Path, port: int, maxmemory: str = defaults.REDIS_MAXMEMORY) -> list[str]:
    """The private Redis' command line: loopback only, persisted with AOF (fsync every second) in ``directory``."""
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(directory),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        # Bounded, and full means refused writes (the API answers 503): job state is never evicted.
        "--maxmemory",
        maxmemory,
        "--maxmemory-policy",
        "noeviction",
        "--logfile",
        str(directory / "redis.log"),
    ]


def start_private_redis(
    var_dir: Path, port: int | None = None, maxmemory: str = defaults.REDIS_MAXMEMORY
) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on a loopback port (a free one unless given), persisted with AOF in
    ``var_dir/redis``; return it and its URL. Started again with the same port and directory after a
    crash, it reloads every job, queue and book from its append-only file."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ClientError(
            "No Redis answers at SPOOL_REDIS_URL and redis-server is not installed: install it "
            "(apt-get install redis-server) or point SPOOL_REDIS_URL at a running Redis."
        )
    directory = var_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    process = subprocess.Popen(
        redis_command(binary, directory, port, maxmemory),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while not _redis_reachable(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise ClientError(f"redis-server did not start; see {directory / 'redis.log'}.")
        time.sleep(0.05)
    return process, url


def worker_command(queues: list[str], *, pool: str, concurrency: int, name: str, loglevel: str) -> list[str]:
    """The ``celery worker`` command line for Spool's worker."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "-Q",
        ",".join(queues),
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        f"--loglevel={loglevel}",
    ]


def web_command(host: str, port: int, web_workers: int, dev: bool) -> list[str]:
    """The command serving the web app: gunicorn (threaded workers), or werkzeug with ``--dev``."""
    if dev:
        return [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "app:create_app()",
            "run",
            "--host",
            host,
            "--port",
            str(port),
            "--with-threads",
            "--no-reload",
        ]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:config.gunicorn",
        "-b",
        f"{host}:{port}",
        "-w",
        str(web_workers),
        "app:create_app()",
    ]


def _die_with_parent() -> None:
    """In a child of ``spool serve``: be sent SIGTERM if the supervisor itself dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


@dataclass
class Child:
    """One process ``spool serve`` supervises: how to start it, and its restarts."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    stop_timeout: float
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None

    def launch(self) -> None:
        """Start (or start again) the process."""
        self.process = self.start()
        self.started_at = time.monotonic()
        self.restart_at = None

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, wait ``stop_timeout``, then SIGKILL; always reaps the process."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            print(f"spool: {self.name} did not stop in {self.stop_timeout:g} s; killing it", file=sys.stderr)
            self.process.kill()
            self.process.wait()
        self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL whatever is left in the child's own process group (its pool processes, if any)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Supervisor:
    """Runs the children of ``spool serve``, restarts one that dies, and stops them all in order."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children  # start order: Redis first; stopped in reverse order (web first)
        self.stopping = False
        self.signal_name = ""

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.signal_name = signal.Signals(signum).name

    def install_signals(self) -> None:
        """SIGTERM and SIGINT both stop in order, foreground or background.

        A job started with ``&`` by a non-interactive shell begins with SIGINT ignored, so the handler
        is set explicitly for both (SIGHUP too: a closed terminal stops Spool cleanly).
        """
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def run(self, poll: float = 0.2) -> int:
        """Supervise until a signal; 0 after a clean stop, 1 when a child keeps dying."""
        try:
            for child in self.children:
                child.launch()
            while not self.stopping:
                for child in self.children:
                    if child.alive() or self.stopping:
                        continue
                    if not self._schedule_restart(child):
                        return 1
                time.sleep(poll)
            print(f"spool: {self.signal_name}: stopping", file=sys.stderr)
            return 0
        finally:
            self.stop_all()

    def _schedule_restart(self, child: Child) -> bool:
        """Restart a dead child after a backoff; False once it died too often in a row."""
        now = time.monotonic()
        if child.restart_at is None:
            if now - child.started_at > RESTART_RESET:
                child.restarts = 0  # it ran long enough: a fresh crash, not a crash loop
            if child.restarts >= MAX_RESTARTS:
                print(
                    f"spool: {child.name} exited with status {child.process.returncode} "  # type: ignore[union-attr]
                    f"{child.restarts} times in a row; stopping",
                    file=sys.stderr,
                )
                return False
            delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF * 2**child.restarts)
            print(
                f"spool: {child.name} exited with status {child.process.returncode}; "  # type: ignore[union-attr]
                f"restarting in {delay:g} s",
                file=sys.stderr,
            )
            child.restart_at = now + delay
            return True
        if now >= child.restart_at:
            child.restarts += 1
            child.kill_group()  # a dead worker's pool processes must not outlive it
            try:
                child.launch()
            except SpoolError as exc:
                print(f"spool: {child.name} did not start again: {exc}", file=sys.stderr)
                child.restart_at = None
                child.started_at = now
        return True

    def stop_all(self) -> None:
        """Stop the web first, then the workers (warm shutdown), Redis last; kill what does not stop."""
        # Ignore further signals while stopping: a second Ctrl-C must not leave orphans behind.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for child in reversed(self.children):
            child.stop()


def _popen(command: list[str], env: dict[str, str]) -> Callable[[], subprocess.Popen[bytes]]:
    """A starter of ``command`` in its own session (terminal signals reach only the supervisor)."""

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)

    return start


def refuse_open_exposure(host: str, port: int, settings: Settings) -> None:
    """Stop before starting anything when ``host`` is reachable and no API keys are set (docs/security.md)."""
    from config.exposure import ExposureError, check_bind

    try:
        check_bind([f"[{host}]:{port}" if ":" in host else f"{host}:{port}"], settings)
    except ExposureError as exc:
        raise ClientError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run Redis (if needed), the web app and the workers until SIGTERM or SIGINT (Ctrl-C)."""
    settings = Settings.from_env()
    refuse_open_exposure(args.host, args.port, settings)
    var_dir = Path(settings.var_dir).resolve()
    env = dict(os.environ)
    children: list[Child] = []
    if not _redis_reachable(settings.redis_url):
        redis_process, url = start_private_redis(var_dir, maxmemory=settings.redis_maxmemory)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        env["SPOOL_REDIS_URL"] = url
        print(f"spool: started a private Redis on {url} (AOF in {var_dir / 'redis'})", file=sys.stderr)
        first = [redis_process]

        def start_redis() -> subprocess.Popen[bytes]:
            if first:
                return first.pop()
            # Same port and directory: the jobs go on.
            return start_private_redis(var_dir, port, settings.redis_maxmemory)[0]

        children.append(Child("redis", start_redis, REDIS_STOP_TIMEOUT))
    if "://" not in settings.storage_url or settings.storage_url.startswith("file://"):
        # Web and workers must agree on one directory whatever their working directory.
        path = settings.storage_url.removeprefix("file://")
        env["SPOOL_STORAGE_URL"] = str(Path(path).expanduser().resolve())
    cores = os.cpu_count() or 1
    workers = cores if args.workers is None else max(0, args.workers)
    threads = args.threads or settings.engine_threads or max(1, cores // max(1, workers))
    env["SPOOL_ENGINE_THREADS"] = str(threads)
    queues = args.queues.split(",") if args.queues else list(settings.worker_queues)
    if settings.webhook_queue not in queues:
        queues.append(settings.webhook_queue)  # the light webhook task shares the workers here
    loglevel = settings.log_level.upper()
    if workers > 0:
        command = worker_command(queues, pool="prefork", concurrency=workers, name="serve", loglevel=loglevel)
        children.append(Child("worker", _popen(command, env), args.stop_timeout))
        # A light worker (no model) parses uploads and delivers webhooks, so neither waits behind
        # hours of rendering; each parse runs in a child process with limits (service.book_parse).
        light = [settings.parse_queue, settings.webhook_queue]
        command = worker_command(
            light, pool="prefork", concurrency=defaults.LIGHT_WORKERS, name="light", loglevel=loglevel
        )
        children.append(Child("light-worker", _popen(command, env), args.stop_timeout))
    web = web_command(args.host, args.port, args.web_workers, args.dev)
    children.append(Child("web", _popen(web, env), STOP_TIMEOUT))
    supervisor = Supervisor(children)
    supervisor.install_signals()
    print(
        f"spool: serving on http://{args.host}:{args.port} with {workers} worker process(es) x {threads} "
        f"engine thread(s) on queue(s) {','.join(queues)}, and a light worker for book parsing and "
        "webhooks; Ctrl-C or SIGTERM stops "
        "(`spool ready` waits until a worker has its engine loaded)",
        file=sys.stderr,
    )
    return supervisor.run()


def cmd_ready(args: argparse.Namespace) -> int:
    """Wait until Spool is ready (a worker has its engine loaded); exit 0, or 1 at the timeout."""
    client = _client(args)
    deadline = time.monotonic() + args.timeout
    last = ""
    while True:
        try:
            status, _, body = client.request("GET", "/readyz")
            if status == 200:
                if not args.quiet:
                    print("ready", file=sys.stderr)
                return 0
        except ClientError as exc:
            last = exc.message
        if time.monotonic() >= deadline:
            print(f"spool: not ready after {args.timeout:g} s{': ' + last if last else ''}", file=sys.stderr)
            return 1
        time.sleep(POLL_INTERVAL)


def cmd_worker(args: argparse.Namespace) -> int:
    """Replace this process with a Celery worker consuming the given queues."""
    settings = Settings.from_env()
    env = dict(os.environ)
    if args.threads:
        env["SPOOL_ENGINE_THREADS"] = str(args.threads)
    queues = args.queues.split(",") if args.queues else list(settings.worker_queues)
    command = worker_command(
        queues,
        pool=args.pool,
        concurrency=args.concurrency,
        name=args.name or f"worker-{os.getpid()}",
        loglevel=settings.log_level.upper(),
    )
    sys.stdout.flush()
    os.execvpe(command[0], command, env)
    return 0  # not reached


# ------------------------------------------------------------------------------------- HTTP client


class Client:
    """A small JSON client for the Spool API."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request; return (status, headers, body). Error answers raise ClientError."""
        url = path if path.startswith("http") else self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        if self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                error = json.loads(payload)["error"]
                message = f"{error['message']} ({error['code']}, HTTP {exc.code})"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code} from {url}: {payload[:200]!r}"
            raise ClientError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(
                f"Cannot reach Spool at {self.base_url}: {reason}. Is `spool serve` running "
                "(or SPOOL_URL set)?"
            ) from None

    def json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send a request and decode its JSON answer."""
        return json.loads(self.request(method, path, body, headers)[2])


def _client(args: argparse.Namespace) -> Client:
    settings = Settings.from_env()
    return Client(args.url or os.environ.get("SPOOL_URL", settings.url), args.api_key or settings.api_key)


def _bar(job: dict[str, Any], width: int = 30) -> str:
    progress = job.get("progress") or {}
    percent = progress.get("percent") or 0.0
    filled = int(width * percent / 100)
    text = f"[{'#' * filled}{'-' * (width - filled)}] {percent:5.1f}% {job['state']}"
    if progress.get("segments_total"):
        text += f" {progress['segments_done']}/{progress['segments_total']} segments"
    if progress.get("audio_seconds"):
        text += f", {progress['audio_seconds']:.1f} s audio"
    if job.get("queue_position"):
        text += f", #{job['queue_position']} in queue"
    if job.get("eta_seconds") is not None:
        text += f", eta {job['eta_seconds']:.0f} s"
    return text


def wait_for(client: Client, job_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Poll a job until it finishes, drawing a progress bar on stderr; return its final JSON."""
    tty = sys.stderr.isatty()
    last = ""
    while True:
        job = client.json("GET", f"/v1/jobs/{job_id}")
        line = _bar(job)
        if not quiet and line != last:
            if tty:
                print(f"\r{line:<100}", end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)
            last = line
        if job["state"] in ("succeeded", "failed", "cancelled"):
            if not quiet and tty:
                print(file=sys.stderr)
            return job
        time.sleep(POLL_INTERVAL)


def _read_input(source: str) -> str:
    """The text to speak: a file's contents when ``source`` names a file, '-' for stdin, else itself."""
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:
        pass
    return source


def upload_lexicon(client: Client, source: str) -> str:
    """A lexicon id: ``source`` itself when it is one, else the id of the file uploaded to /v1/lexicons."""
    if re.fullmatch(r"[0-9a-f]{32}", source):
        return source
    from cli.engine_cmds import load_lexicon_file

    lexicon = load_lexicon_file(source)
    body = {"name": lexicon.name, "lang": lexicon.lang, "entries": [e.to_dict() for e in lexicon.entries]}
    return client.json("POST", "/v1/lexicons", body)["id"]


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit text as a job; with ``--wait`` or ``-o``, wait for it and save the audio."""
    client = _client(args)
    fmt = args.format
    if fmt is None and args.output:
        suffix = Path(args.output).suffix.lstrip(".").lower()
        fmt = {"ogg": "opus", "raw": "pcm"}.get(suffix, suffix) or None
    body: dict[str, Any] = {
        "text": _read_input(args.source),
        "voice": args.voice,
        "speed": args.speed,
        "format": fmt or defaults.FORMAT,
        "priority": args.priority,
    }
    if args.language:
        body["language"] = args.language
    if args.webhook:
        body["webhook_url"] = args.webhook
    if args.lexicon:
        body["lexicon"] = upload_lexicon(client, args.lexicon)
    if args.markup != "none":
        body["markup"] = args.markup
    if args.qa:
        body["qa"] = True
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    job = client.json("POST", "/v1/jobs", body, headers)
    print(job["id"])
    if not (args.wait or args.output):
        return 0
    try:
        job = wait_for(client, job["id"], quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"spool: stopped waiting; job {job['id']} goes on (spool status {job['id']})", file=sys.stderr)
        return 130
    if job["state"] != "succeeded":
        error = job.get("error") or {}
        print(f"spool: job {job['state']}: {error.get('message', '')}", file=sys.stderr)
        return 1
    if args.output:
        _, _, data = client.request("GET", f"/v1/jobs/{job['id']}/audio", headers={"Accept": "*/*"})
        Path(args.output).write_bytes(data)
        result = job["result"]
        print(
            f"spool: wrote {args.output} ({len(data):,} bytes, {result['duration']:.2f} s)", file=sys.stderr
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print a job's state (or the server's status when no id is given)."""
    client = _client(args)
    if not args.job_id:
        print(json.dumps(client.json("GET", "/status"), indent=2))
        return 0
    job = client.json("GET", f"/v1/jobs/{args.job_id}")
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        print(f"{job['id']}  {_bar(job)}")
        if job.get("error"):
            print(f"error: {job['error']['code']}: {job['error']['message']}")
        if job.get("result"):
            result = job["result"]
            print(
                f"result: {result['format']}, {result['duration']:.2f} s, {result['size']:,} bytes: "
                f"{result['url']}"
            )
        qa = job.get("qa")
        if qa:
            print(f"qa: {qa['state']}" + (f", {qa['segments_flagged']} of {qa['segments_checked']} segments flagged"
                                          if qa["state"] == "done" else f" {qa.get('message') or ''}".rstrip()))
            for flag in qa.get("flagged") or []:
                print(f"  {flag['start']:8.2f} s  wer {flag['wer']:.2f}  said {flag['text']!r}, heard {flag['heard']!r}")
    return 0 if job["state"] != "failed" else 1


# ---------------------------------------------------------------------------------------- parsing


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="Spool server (default: SPOOL_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="API key (default: SPOOL_API_KEY)")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``serve``, ``worker``, ``ready``, ``submit`` and ``status`` to the ``spool`` command."""
    serve = subparsers.add_parser("serve", help="run the web app, workers and (if needed) Redis here")
    serve.add_argument("--host", default=os.environ.get("SPOOL_HOST", defaults.HOST))
    serve.add_argument("--port", type=int, default=int(os.environ.get("SPOOL_PORT", defaults.PORT)))
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, one engine each (default: one per CPU core)",
    )
    serve.add_argument(
        "--threads", type=int, default=None, help="engine threads per worker (default: cores / workers)"
    )
    serve.add_argument("--web-workers", type=int, default=defaults.WEB_WORKERS, help="gunicorn processes")
    serve.add_argument("--queues", help="queues the workers consume (default: SPOOL_WORKER_QUEUES or cpu)")
    serve.add_argument("--dev", action="store_true", help="serve with werkzeug instead of gunicorn")
    serve.add_argument(
        "--stop-timeout",
        type=float,
        default=float(os.environ.get("SPOOL_STOP_TIMEOUT", WORKER_STOP_TIMEOUT)),
        help="seconds workers get on SIGTERM to finish their task before they are killed "
        f"(default SPOOL_STOP_TIMEOUT or {WORKER_STOP_TIMEOUT:g})",
    )
    serve.set_defaults(func=cmd_serve)

    ready = subparsers.add_parser(
        "ready", help="wait until Spool is ready: a worker has its engine loaded (exit 0, or 1 on timeout)"
    )
    ready.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    ready.add_argument("-q", "--quiet", action="store_true")
    _add_client_options(ready)
    ready.set_defaults(func=cmd_ready)

    worker = subparsers.add_parser("worker", help="run one Celery worker (one engine per process)")
    worker.add_argument(
        "--queues", help="comma list of queues, e.g. cpu or gpu (default: SPOOL_WORKER_QUEUES)"
    )
    worker.add_argument("--threads", type=int, help="engine threads per process")
    worker.add_argument("--concurrency", type=int, default=1, help="processes (one engine each)")
    worker.add_argument(
        "--pool",
        default="prefork",
        choices=("prefork", "solo", "threads"),
        help="prefork enforces time limits; solo runs tasks in the main process",
    )
    worker.add_argument("--name", help="node name (default: worker-PID)")
    worker.set_defaults(func=cmd_worker)

    submit = subparsers.add_parser("submit", help="submit a text (or a file's text) for synthesis")
    submit.add_argument("source", help="the text, a file holding it, or - for stdin")
    submit.add_argument("--voice", default=defaults.VOICE)
    submit.add_argument("--speed", type=float, default=defaults.SPEED)
    submit.add_argument("--format", help="wav, flac, mp3, opus or pcm (default: from -o, else mp3)")
    submit.add_argument("--language", help="language code (default: the voice's own)")
    submit.add_argument("--priority", default=defaults.PRIORITY, choices=defaults.CLIENT_PRIORITIES)
    submit.add_argument("--webhook", help="URL POSTed the job's JSON when it finishes")
    submit.add_argument("--lexicon", help="a lexicon file (PLS or JSON; uploaded) or the id of a stored one")
    submit.add_argument("--markup", choices=MARKUP_MODES, default="none", help="inline markup in the text")
    submit.add_argument("--qa", action="store_true", help="automatic QA: list segments that do not say their text")
    submit.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    submit.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    submit.add_argument("-o", "--output", help="save the audio here (implies --wait)")
    submit.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_client_options(submit)
    submit.set_defaults(func=cmd_submit)

    status = subparsers.add_parser("status", help="show a job (or, without an id, the server's status)")
    status.add_argument("job_id", nargs="?")
    status.add_argument("--json", action="store_true", help="print the job's JSON")
    _add_client_options(status)
    status.set_defaults(func=cmd_status)

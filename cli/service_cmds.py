"""Service commands: ``spool serve``, ``spool worker``, ``spool submit`` and ``spool status``.

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

#: Seconds children get to exit after Ctrl-C before they are killed.
STOP_TIMEOUT = 20.0


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


def start_private_redis(var_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on a free loopback port without persistence; return it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ClientError(
            "No Redis answers at SPOOL_REDIS_URL and redis-server is not installed: install it "
            "(apt-get install redis-server) or point SPOOL_REDIS_URL at a running Redis."
        )
    directory = var_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            *("--maxmemory", os.environ.get("SPOOL_REDIS_MAXMEMORY", defaults.REDIS_MAXMEMORY), "--maxmemory-policy", "noeviction"),
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while not _redis_reachable(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
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


def _stop_all(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Ask every child to stop (web first, Redis last), then kill the ones that do not."""
    for _, process in children:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, process in children:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"spool: {name} did not stop in time; killing it", file=sys.stderr)
            process.kill()
            process.wait()


def refuse_open_exposure(host: str, port: int, settings: Settings) -> None:
    """Stop before starting anything when ``host`` is reachable and no API keys are set (docs/security.md)."""
    from config.exposure import ExposureError, check_bind

    try:
        check_bind([f"[{host}]:{port}" if ":" in host else f"{host}:{port}"], settings)
    except ExposureError as exc:
        raise ClientError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run Redis (if needed), the web app and the workers until Ctrl-C."""
    settings = Settings.from_env()
    refuse_open_exposure(args.host, args.port, settings)
    var_dir = Path(settings.var_dir).resolve()
    env = dict(os.environ)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    redis_process = None
    if not _redis_reachable(settings.redis_url):
        redis_process, url = start_private_redis(var_dir)
        env["SPOOL_REDIS_URL"] = url
        print(f"spool: started a private Redis on {url} (no persistence)", file=sys.stderr)
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
    try:
        web = subprocess.Popen(web_command(args.host, args.port, args.web_workers, args.dev), env=env)
        children.append(("web", web))
        if workers > 0:
            command = worker_command(
                queues, pool="prefork", concurrency=workers, name="serve", loglevel=loglevel
            )
            children.append(("worker", subprocess.Popen(command, env=env)))
        if redis_process is not None:
            children.append(("redis", redis_process))
        url = f"http://{args.host}:{args.port}"
        print(
            f"spool: serving on {url} with {workers} worker process(es) x {threads} engine thread(s) "
            f"on queue(s) {','.join(queues)}; Ctrl-C stops",
            file=sys.stderr,
        )
        while True:
            for name, process in children:
                if process.poll() is not None:
                    print(f"spool: {name} exited with status {process.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("spool: stopping", file=sys.stderr)
        return 0
    finally:
        if redis_process is not None and ("redis", redis_process) not in children:
            children.append(("redis", redis_process))
        _stop_all(children)


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
    return 0 if job["state"] != "failed" else 1


# ---------------------------------------------------------------------------------------- parsing


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="Spool server (default: SPOOL_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="API key (default: SPOOL_API_KEY)")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``serve``, ``worker``, ``submit`` and ``status`` to the ``spool`` command."""
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
    serve.set_defaults(func=cmd_serve)

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

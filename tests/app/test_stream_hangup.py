"""A listener that hangs up on the stream of a queued job frees its stream slot within seconds.

Nothing is written to a stream while its job waits in the queue (no worker consumes the queue
here), so only the hang-up probe (app/hangup.py) can notice the client left. Each test opens an
audio stream, an SSE stream or a speech request waiting for its file (``stream: false``) with a
cap of one stream per key, checks that a second is refused, closes the socket, and waits for the
slot count in Redis to drop; a new one is then admitted.
Served by werkzeug (the live test server) and by gunicorn's gthread workers (the production
server), and once by a server that exposes no socket, where SSE keep-alive comments do the work.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis as redis_lib

from app import create_app
from config.settings import Settings
from service.keys import Keys
from service.quotas import Quotas
from tests.fixtures.service import REPO_ROOT, free_port, wait_until

#: Seconds within which a hung-up stream must give its slot back (the probe looks every second).
RELEASE_DEADLINE = 5.0

#: Same, where only the SSE keep-alive comments (every 3 s) can find the hang-up.
UNPROBED_DEADLINE = 15.0

OWNER = "public"

ROUTES = {"audio": "stream?format=wav", "events": "events", "speech": ""}

#: Bytes each stream sends at once: the WAV header, or the SSE retry line.
FIRST_BYTES = {"audio": 44, "events": len("retry: 2000\n\n")}


def hangup_settings(settings: Settings) -> Settings:
    """Settings with a key prefix of this module, an idle queue and one stream per key."""
    return settings.replace(key_prefix=f"h{uuid.uuid4().hex[:8]}:", queue="hangup-idle", max_streams_per_key=1)


class Server:
    """Where a test server listens, and the quotas on its Redis prefix."""

    def __init__(self, address: str, settings: Settings) -> None:
        self.address = address
        self.quotas = Quotas(redis_lib.Redis.from_url(settings.redis_url), Keys(settings.key_prefix), settings)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[http.client.HTTPConnection, Any]:
        conn = http.client.HTTPConnection(self.address, timeout=30)
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        return conn, conn.getresponse()

    def queued_job(self) -> str:
        conn, response = self.request("POST", "/v1/jobs", b'{"text": "Nobody renders this."}')
        try:
            assert response.status == 202, response.read()
            return json.loads(response.read())["id"]
        finally:
            conn.close()


@contextmanager
def werkzeug_server(application: Any) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def werkzeug(settings: Settings) -> Iterator[Server]:
    own = hangup_settings(settings)
    application = create_app(own)
    with werkzeug_server(application) as address:
        yield Server(address, own)
    application.extensions["spool"].close()


@pytest.fixture(scope="module")
def gunicorn(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app under gunicorn (config/gunicorn.py: gthread), one process of 4 threads, on loopback."""
    own = hangup_settings(settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    env.update(own.to_env())
    env.update(
        SPOOL_HOST="127.0.0.1", SPOOL_PORT=str(port), SPOOL_WEB_WORKERS="1", SPOOL_WEB_THREADS="4",
        PYTHONPATH=str(REPO_ROOT),
    )
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "python:config.gunicorn", "app:create_app()"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"127.0.0.1:{port}", own)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log_path.read_text(errors='replace')}")
        try:
            conn, response = server.request("GET", "/healthz")
            conn.close()
            return True
        except OSError:
            return False

    try:
        wait_until(answers, 90, interval=0.2, what="gunicorn to answer")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


SPEECH = json.dumps({"model": "tts-1", "input": "Nobody renders this.", "voice": "alloy", "stream": False}).encode()


def open_stream(server: Server, route: str, job_id: str) -> tuple[http.client.HTTPConnection, Any]:
    """Open a stream (audio or SSE: its first bytes read) or a speech request waiting for its job."""
    if route == "speech":
        conn = http.client.HTTPConnection(server.address, timeout=30)
        conn.request("POST", "/v1/audio/speech", body=SPEECH, headers={"Content-Type": "application/json"})
        # It answers only when the job is done: the slot it took shows it is waiting.
        wait_until(lambda: server.quotas.open_streams(OWNER) == 1, 10, interval=0.05, what="the speech slot")
        return conn, None
    conn, response = server.request("GET", f"/v1/jobs/{job_id}/{ROUTES[route]}")
    assert response.status == 200, response.read()
    assert len(response.read(FIRST_BYTES[route])) == FIRST_BYTES[route]
    return conn, response


def hang_up(conn: http.client.HTTPConnection, response: Any) -> None:
    if response is not None:
        response.close()  # the response holds the socket too: close both, as a client that leaves does
    conn.close()


def hang_up_frees_the_slot(server: Server, route: str, deadline: float = RELEASE_DEADLINE) -> float:
    """Open a stream of a queued job, hang up, and return the seconds until its slot was free again."""
    job_id = server.queued_job()
    conn, response = open_stream(server, route, job_id)
    assert server.quotas.open_streams(OWNER) == 1
    refused_conn, refused = server.request("GET", f"/v1/jobs/{job_id}/events")  # the cap: one per key
    assert refused.status == 429, refused.read()
    refused_conn.close()

    started = time.monotonic()
    hang_up(conn, response)
    wait_until(lambda: server.quotas.open_streams(OWNER) == 0, deadline, interval=0.05, what="the slot to be freed")
    released = time.monotonic() - started
    print(f"{route}: slot free {released:.2f} s after the hang-up")  # the figure docs/security.md quotes (-s)

    again = open_stream(server, route, job_id)  # admitted now: the slot really is free
    hang_up(*again)
    wait_until(lambda: server.quotas.open_streams(OWNER) == 0, deadline, interval=0.05, what="the second slot")
    return released


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_hang_up_frees_the_slot_under_werkzeug(werkzeug: Server, route: str) -> None:
    assert hang_up_frees_the_slot(werkzeug, route) < RELEASE_DEADLINE


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_hang_up_frees_the_slot_under_gunicorn_gthread(gunicorn: Server, route: str) -> None:
    assert hang_up_frees_the_slot(gunicorn, route) < RELEASE_DEADLINE


def test_without_a_socket_sse_keep_alives_find_the_hang_up(settings: Settings) -> None:
    own = hangup_settings(settings)
    application = create_app(own)
    inner = application.wsgi_app

    def no_socket(environ: dict[str, Any], start_response: Any) -> Any:
        environ.pop("werkzeug.socket", None)  # as a WSGI server that exposes none
        return inner(environ, start_response)

    application.wsgi_app = no_socket  # type: ignore[method-assign]
    try:
        with werkzeug_server(application) as address:
            released = hang_up_frees_the_slot(Server(address, own), "events", UNPROBED_DEADLINE)
            assert released > 1.0  # found by a failed keep-alive write, not by a probe
    finally:
        application.extensions["spool"].close()

"""Safe defaults for exposure: no open start on a reachable address, cross-site refusal, scoped /status.

Jobs made here go to the ``idle`` queue, which no worker consumes, so they stay queued.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from cli.main import main
from config.exposure import ExposureError, check_bind, is_loopback_bind
from config.settings import Settings
from tests.fixtures.service import REPO_ROOT, free_port

KEYS = {"alice-key-0001": "exposure-alice", "bob-key-00002": "exposure-bob", "ops-key-00003": "exposure-ops"}
ALICE, BOB, OPS = ({"Authorization": f"Bearer {key}"} for key in KEYS)


@pytest.mark.parametrize("bind", ["127.0.0.1:8000", "127.9.9.9:1", "localhost:80", "[::1]:8000", "unix:/tmp/s"])
def test_loopback_binds(bind: str) -> None:
    assert is_loopback_bind(bind)
    check_bind([bind], Settings())


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "[::]:8000", "10.1.2.3:80", "spool.example.com:80", ":8000"])
def test_reachable_binds_need_keys_or_an_explicit_opt_in(bind: str) -> None:
    assert not is_loopback_bind(bind)
    with pytest.raises(ExposureError, match="SPOOL_ALLOW_ANONYMOUS=1"):
        check_bind([bind], Settings())
    check_bind([bind], Settings(api_keys={"alice-key-0001": "alice"}))
    check_bind([bind], Settings(allow_anonymous=True))


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPOOL_"):
            monkeypatch.delenv(name)


def test_spool_serve_refuses_an_open_reachable_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_env(monkeypatch)
    port = free_port()
    assert main(["serve", "--host", "0.0.0.0", "--port", str(port), "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "SPOOL_ALLOW_ANONYMOUS=1" in err and "SPOOL_API_KEYS" in err and "0.0.0.0" in err
    # Nothing was started: the port is still free.
    with __import__("socket").socket() as sock:
        sock.bind(("0.0.0.0", port))


def test_container_entry_refuses_an_open_reachable_start() -> None:
    # The image's command: gunicorn with config/gunicorn.py, SPOOL_HOST=0.0.0.0 (the Dockerfile's).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    env.update(SPOOL_HOST="0.0.0.0", SPOOL_PORT=str(free_port()), PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "gunicorn", "-c", "python:config.gunicorn", "app:create_app()"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SPOOL_ALLOW_ANONYMOUS=1" in done.stderr + done.stdout


@pytest.fixture(scope="module")
def open_app(settings: Settings) -> Iterator[Any]:
    """No keys (one owner), jobs to a queue nobody consumes, one extra allowed origin."""
    application = create_app(settings.replace(queue="idle", allowed_origins=("https://player.example",)))
    yield application
    application.extensions["spool"].close()


@pytest.fixture(scope="module")
def keyed_app(settings: Settings) -> Iterator[Any]:
    """Three keys (alice, bob and the admin ops), jobs to a queue nobody consumes."""
    application = create_app(
        settings.replace(queue="idle", api_keys=KEYS, admin_keys=("ops-key-00003",))
    )
    yield application
    application.extensions["spool"].close()


def test_cross_site_browser_posts_are_refused(open_app: Any) -> None:
    client = open_app.test_client()
    evil = {"Origin": "https://evil.example"}
    response = client.post("/v1/jobs", json={"text": "Hi."}, headers=evil)
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "cross_origin_refused" and "SPOOL_ALLOWED_ORIGINS" in error["message"]
    # The multipart POST a page can send without a preflight is refused before the body is read.
    book = {"file": (io.BytesIO(b"Chapter one.\n\nIt was a dark night."), "book.txt")}
    response = client.post("/v1/books", data=book, headers=evil, content_type="multipart/form-data")
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "cross_origin_refused"
    for headers in ({"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://localhost.evil"}):
        assert client.post("/v1/jobs", json={"text": "Hi."}, headers=headers).status_code == 403
    assert client.get("/v1/jobs", headers=evil).status_code == 200  # reads change nothing


def test_same_site_and_allowed_origins_pass(open_app: Any) -> None:
    client = open_app.test_client()
    for headers in (
        {},  # not a browser: no Origin
        {"Origin": "http://localhost"},  # the player page on this server
        {"Origin": "https://localhost"},  # the same host behind a TLS proxy
        {"Origin": "https://player.example"},  # SPOOL_ALLOWED_ORIGINS
        {"Sec-Fetch-Site": "same-origin"},
    ):
        response = client.post("/v1/jobs", json={"text": "Hi."}, headers=headers)
        assert response.status_code == 202, (headers, response.data)
        job_id = response.get_json()["id"]
        assert client.delete(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
    evil_cancel = client.delete(f"/v1/jobs/{job_id}", headers={"Origin": "https://evil.example"})
    assert evil_cancel.status_code == 403


def test_status_shows_a_key_only_its_own_jobs(keyed_app: Any, worker: Any) -> None:
    client = keyed_app.test_client()
    before = client.get("/status", headers=OPS).get_json()["jobs"]["queued"]
    for headers, count in ((ALICE, 2), (BOB, 1)):
        for _ in range(count):
            assert client.post("/v1/jobs", json={"text": "Mine."}, headers=headers).status_code == 202
    alice = client.get("/status", headers=ALICE).get_json()
    bob = client.get("/status", headers=BOB).get_json()
    anonymous = client.get("/status").get_json()
    admin = client.get("/status", headers=OPS).get_json()
    assert alice["jobs"]["queued"] == 2 and bob["jobs"]["queued"] == 1
    assert sum(anonymous["jobs"].values()) == 0
    assert admin["jobs"]["queued"] == before + 3
    # Workers: no names, hosts or pids but for an admin.
    assert alice["workers"] and admin["workers"]
    for view in (alice, bob, anonymous):
        for beat in view["workers"]:
            assert not {"pid", "hostname", "name"} & set(beat), beat
    assert any(beat.get("pid") == worker.first.pid for beat in admin["workers"])
    assert client.get("/status", headers={"X-API-Key": "not-a-key-at-all"}).status_code == 401


def test_error_answers_carry_no_internal_addresses(settings: Settings) -> None:
    broken = create_app(
        settings.replace(
            redis_url="redis://127.0.0.1:1/0",
            storage_url="s3://nowhere/x?endpoint=http://127.0.0.1:1",
        )
    )
    try:
        client = broken.test_client()
        response = client.get("/healthz")
        assert response.status_code == 503
        text = response.get_data(as_text=True)
        assert "127.0.0.1" not in text and ":1" not in text
        assert response.get_json()["checks"]["redis"].startswith("error")
        response = client.get("/v1/jobs")
        assert response.status_code == 503 and "127.0.0.1" not in response.get_data(as_text=True)
    finally:
        broken.extensions["spool"].close()


def test_open_spool_answers_only_requests_to_localhost(open_app: Any, keyed_app: Any) -> None:
    # DNS rebinding: a page's own name pointed at 127.0.0.1 is "same origin" to the browser.
    client = open_app.test_client()
    rebound = client.get("/v1/jobs", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403 and rebound.get_json()["error"]["code"] == "cross_origin_refused"
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "player.example"):
        assert client.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
    # With keys (or SPOOL_ALLOW_ANONYMOUS=1) any Host is served: the keys guard it.
    assert keyed_app.test_client().get("/healthz", headers={"Host": "spool.example.com"}).status_code == 200

"""Webhooks through the running service: refused targets, signed deliveries, redirects, drips, cancel.

The session's worker consumes the ``webhooks`` queue beside ``cpu``; its settings allow loopback
receivers (``127.0.0.1/32``), so the refusal tests use an app without that allow-list.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from config.settings import Settings
from service.webhooks import verify
from tests.fixtures.hooks import Receiver, receiver
from tests.fixtures.service import WEBHOOK_SECRET, wait_until

#: Seconds a test waits for a delivery (a render of a few words included).
DELIVERY_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def strict_client(settings: Settings) -> Iterator[Any]:
    """A client of the app with the default policy: only public webhook addresses."""
    application = create_app(settings.replace(webhook_allow=()))
    yield application.test_client()
    application.extensions["spool"].close()


@pytest.fixture(scope="module")
def idle_client(settings: Settings) -> Iterator[Any]:
    """A client of an app whose jobs go to a queue no worker consumes (they stay queued)."""
    application = create_app(settings.replace(queue="idle-hooks"))
    yield application.test_client()
    application.extensions["spool"].close()


def webhook_of(client: Any, job_id: str, *states: str) -> dict[str, Any]:
    """Poll the job until its webhook reaches one of ``states``; return the job's JSON."""

    def reached() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").get_json()
        return job if job["webhook"] and job["webhook"]["state"] in states else None

    return wait_until(reached, DELIVERY_TIMEOUT, interval=0.1, what=f"webhook {states} of job {job_id}")


def submit(client: Any, hook: Receiver, path: str = "/hook") -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"text": "Hook me.", "webhook_url": hook.url + path})
    assert response.status_code == 202, response.data
    job = response.get_json()
    assert job["webhook"] == {"state": "pending", "attempts": 0, "last_status": None}
    return job


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://[::1]:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://localhost:{port}/hook",
    ],
)
def test_inside_webhooks_are_refused_at_submission(strict_client: Any, url: str) -> None:
    with receiver() as hook:
        port = hook.url.rsplit(":", 1)[1]
        response = strict_client.post("/v1/jobs", json={"text": "Nope.", "webhook_url": url.format(port=port)})
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "webhook_refused" and error["details"]["field"] == "webhook_url"
        assert "SPOOL_WEBHOOK_ALLOW" in error["message"]
        assert hook.count() == 0


def test_delivery_is_signed_and_recorded(client: Any, worker: Any) -> None:
    with receiver() as hook:
        job = submit(client, hook, "/done?token=abc")
        done = webhook_of(client, job["id"], "delivered", "failed")
        hit = hook.hits[0]
    assert done["state"] == "succeeded"
    assert done["webhook"] == {"state": "delivered", "attempts": 1, "last_status": 204}
    assert hook.count() == 1 and hit.path == "/done?token=abc"
    assert verify(WEBHOOK_SECRET, hit.headers["Spool-Signature"], hit.body)
    body = json.loads(hit.body)
    assert body["id"] == job["id"] and body["state"] == "succeeded" and body["event"] == "job.succeeded"
    assert "text" not in body and hit.headers["X-Spool-Event"] == "job.succeeded"
    # The worker's log names the receiver without its query string (where tokens travel).
    log = worker.first.log_path.read_text(errors="replace")
    assert f"{hook.url}/done?…" in log and "token=abc" not in log


def test_redirect_to_loopback_is_not_followed(client: Any, worker: Any) -> None:
    # The hop is allowed (loopback is allow-listed in tests); it redirects to another loopback server.
    with receiver() as target, receiver("redirect", location=target.url + "/stolen") as hop:
        job = submit(client, hop)
        done = webhook_of(client, job["id"], "delivered", "failed")
        assert target.count() == 0 and hop.count() == 1
    # A redirect is an answer, not a success, and is never retried.
    assert done["webhook"] == {"state": "failed", "attempts": 1, "last_status": 302}


def test_dripping_receiver_is_abandoned_at_the_deadline(client: Any, settings: Settings, worker: Any) -> None:
    with receiver("drip") as drip:
        job = submit(client, drip)
        done = webhook_of(client, job["id"], "delivered", "failed")
        wait_until(lambda: all(hit.closed for hit in drip.hits), 10, what="drip connections closed")
        hits = list(drip.hits)
    assert done["webhook"]["state"] == "failed" and done["webhook"]["last_status"] is None
    assert done["webhook"]["attempts"] == settings.webhook_attempts == len(hits)
    for hit in hits:
        # Each read got a byte within 0.25 s; the delivery still ended at its one deadline.
        held = (hit.closed or 0) - hit.opened
        assert held < settings.webhook_timeout + 1.5, held
    # Retried after the backoff, not at once.
    assert hits[1].opened - hits[0].opened >= settings.webhook_timeout + settings.webhook_backoff * 0.9


def test_cancel_while_queued_fires_the_webhook(idle_client: Any, worker: Any) -> None:
    with receiver() as hook:
        job = submit(idle_client, hook)
        started = time.monotonic()
        cancelled = idle_client.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
        done = webhook_of(idle_client, job["id"], "delivered", "failed")
        body = json.loads(hook.hits[0].body)
    assert body["state"] == "cancelled" and body["id"] == job["id"]
    assert done["webhook"] == {"state": "delivered", "attempts": 1, "last_status": 204}
    assert time.monotonic() - started < DELIVERY_TIMEOUT
    # A second DELETE (the job is finished: cancelled) deletes it, and sends nothing more.
    assert idle_client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert hook.count() == 1


def test_openapi_documents_the_delivery_state(strict_client: Any) -> None:
    schemas = strict_client.get("/openapi.json").get_json()["components"]["schemas"]
    assert schemas["Job"]["properties"]["webhook"]["anyOf"][0] == {"$ref": "#/components/schemas/JobWebhook"}
    webhook = schemas["JobWebhook"]["properties"]
    assert set(webhook) == {"state", "attempts", "last_status"}
    assert webhook["state"]["enum"] == ["pending", "queued", "retrying", "delivered", "failed", "refused"]


def test_a_webhook_only_worker_loads_no_model(worker_pool: Any) -> None:
    light = worker_pool.start(name="hooks-only", queues=("webhooks",), wait=False)
    try:

        def announced() -> dict[str, Any] | None:
            assert light.alive(), light.log_tail()
            return next((b for b in worker_pool.registry.live() if b.get("pid") == light.pid), None)

        beat = wait_until(announced, 120, interval=0.2, what="the webhook-only worker's heartbeat")
        assert beat["queues"] == ["webhooks"] and beat["engine_ready"] is False
        assert "engine loaded" not in light.log_path.read_text(errors="replace")
    finally:
        worker_pool.stop(light)

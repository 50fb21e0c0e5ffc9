"""System routes: ``/healthz``, ``/readyz``, ``/status`` and ``/openapi.json`` (no API key needed).

``/healthz`` is liveness (the web process answers, Redis and the storage can be reached); ``/readyz`` is
readiness: green only once at least one worker's heartbeat says its engine is loaded, so a job sent then
starts without waiting for a model load.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import redis as redis_lib
from flask import Blueprint, current_app, jsonify, request

from app import services
from app.apidoc import build_spec, operation
from app.auth import PUBLIC_OWNER, key_from_headers, owner_for
from app.schemas import Health, Readiness, Status, dump
from config import defaults
from engine.exceptions import SpoolError
from service.keys import Keys
from service.states import JOB_STATES

#: Most of a caller's newest jobs counted by ``/status`` (a non-admin view; admins get the totals).
MAX_STATUS_JOBS = 10_000

log = logging.getLogger("spool.api.system")

bp = Blueprint("system", __name__)


@bp.get("/healthz")
@operation(tag="system", operation_id="health", public=True, responses={200: (Health, "Healthy."), 503: (Health, "Unhealthy.")})
def healthz():  # type: ignore[no-untyped-def]
    """Check that Redis answers and the storage can be reached; 503 when either fails."""
    svc = services()
    checks: dict[str, str] = {}
    details: dict[str, str] = {}  # the log's: they name addresses and paths, which clients are not shown
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except redis_lib.RedisError as exc:
        checks["redis"], details["redis"] = f"error: {type(exc).__name__}", str(exc)
    try:
        svc.storage.ping()
        checks["storage"] = "ok"
    except SpoolError as exc:
        checks["storage"], details["storage"] = f"error: {exc.code}", exc.message
    healthy = all(v == "ok" for v in checks.values())
    if not healthy:
        log.warning("unhealthy: %s", details)
    body = Health(
        status="ok" if healthy else "unavailable",
        checks=checks,
        storage=svc.storage.kind if checks["storage"] == "ok" else None,
    )
    response = jsonify(dump(body))
    response.status_code = 200 if healthy else 503
    return response


def ready_workers(workers: list[dict[str, Any]]) -> list[str]:
    """Names of the live workers whose engine is loaded (their heartbeat says so)."""
    return [w["name"] for w in workers if w.get("engine_ready")]


@bp.get("/readyz")
@operation(
    tag="system",
    operation_id="ready",
    public=True,
    responses={200: (Readiness, "A worker has its engine loaded."), 503: (Readiness, "Not ready yet.")},
)
def readyz():  # type: ignore[no-untyped-def]
    """Readiness: 200 once at least one live worker has its engine loaded, else 503."""
    svc = services()
    try:
        names = ready_workers(svc.workers.live())
        message = (
            f"{len(names)} worker(s) ready"
            if names
            else "No worker has its engine loaded yet: workers are starting, or none is running."
        )
    except redis_lib.RedisError as exc:
        names, message = [], f"Redis is unreachable ({exc}): no worker state can be read."
    response = jsonify(dump(Readiness(ready=bool(names), workers_ready=names, message=message)))
    response.status_code = 200 if names else 503
    return response


def queue_depths(svc: Any, queues: list[str]) -> dict[str, dict[str, Any]]:
    """Messages waiting on each broker queue, in total and per priority step."""
    prefix = svc.settings.broker_key_prefix
    with svc.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            for step in defaults.PRIORITY_STEPS:
                pipe.llen(Keys.broker_queue(queue, step, prefix))
        lengths = pipe.execute()
    depths: dict[str, dict[str, Any]] = {}
    steps = len(defaults.PRIORITY_STEPS)
    names = {v: k for k, v in defaults.PRIORITIES.items()}
    names |= {v: f"{k}-overflow" for k, v in defaults.OVERFLOW_PRIORITIES.items()}
    for i, queue in enumerate(queues):
        per_step = lengths[i * steps : (i + 1) * steps]
        depths[queue] = {
            "waiting": int(sum(per_step)),
            "by_priority": {
                names.get(step, str(step)): int(n)
                for step, n in zip(defaults.PRIORITY_STEPS, per_step, strict=True)
            },
        }
    return depths


@bp.get("/status")
@operation(tag="system", operation_id="status", public=True, responses={200: (Status, "Current status.")})
def status():  # type: ignore[no-untyped-def]
    """Queue depths, live workers and jobs by state; with API keys, a caller's own jobs only.

    Callers with an admin key (``SPOOL_ADMIN_KEYS``) see every job and the workers' names and pids.
    """
    svc = services()
    workers = svc.workers.live()
    queues = sorted(
        {*defaults.QUEUES, svc.settings.queue, *(q for w in workers for q in w.get("queues", ()))}
    )
    depths = queue_depths(svc, queues)
    for queue in queues:
        depths[queue]["workers"] = sum(1 for w in workers if queue in w.get("queues", ()))
    unacked = svc.redis.hlen(svc.settings.broker_key_prefix + "unacked")
    owner, admin = status_caller(svc.settings)
    ready = bool(ready_workers(workers))
    if admin:
        jobs = svc.jobs.count_by_state()
    else:
        jobs = own_job_counts(svc, owner)
        workers = [public_worker(w, svc, owner) for w in workers]
    body = Status(ready=ready, queues=depths, in_flight=int(unacked), workers=workers, jobs=jobs)
    return jsonify(dump(body))


#: Worker fields any caller may see in ``/status`` (no host names, process ids or other owners' jobs).
PUBLIC_WORKER_FIELDS: tuple[str, ...] = (
    "queues",
    "pool",
    "engine_ready",
    "engine_load_seconds",
    "threads",
    "providers",
    "jobs_done",
)


def status_caller(settings: Any) -> tuple[str | None, bool]:
    """(owner, is admin) of a ``/status`` caller: with no API keys every caller is the one owner and sees all."""
    if not settings.api_keys:
        return PUBLIC_OWNER, True
    key = key_from_headers(request.headers)
    if key is None:
        return None, False
    owner = owner_for(key, settings.api_keys)  # a wrong key is a 401, as on /v1
    return owner, any(hmac.compare_digest(key.encode(), admin.encode()) for admin in settings.admin_keys)


def own_job_counts(svc: Any, owner: str | None) -> dict[str, int]:
    """The caller's jobs by state (zeros without a key)."""
    counts = dict.fromkeys(JOB_STATES, 0)
    if owner is None:
        return counts
    ids = svc.redis.zrevrange(svc.keys.owner_jobs(owner), 0, MAX_STATUS_JOBS - 1)
    with svc.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(svc.keys.job(job_id.decode()), "state")
        states = pipe.execute()
    for state in states:
        if state is not None and state.decode() in counts:
            counts[state.decode()] += 1
    return counts


def public_worker(beat: dict[str, Any], svc: Any, owner: str | None) -> dict[str, Any]:
    """A heartbeat as a non-admin caller sees it: no name, host or pid; its job only if the caller's."""
    view = {name: beat[name] for name in PUBLIC_WORKER_FIELDS if name in beat}
    current = beat.get("current_job")
    view["current_job"] = current if owner and current and svc.jobs.find(current, owner) else None
    return view


@bp.get("/openapi.json")
@operation(tag="system", operation_id="openapi", public=True, responses={200: "OpenAPI 3.1 document."})
def openapi():  # type: ignore[no-untyped-def]
    """The OpenAPI 3.1 document of every route."""
    return jsonify(build_spec(current_app, server_url=request.host_url))

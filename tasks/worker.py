"""The per-process state of a worker: one warm Engine, the shared services, and a heartbeat.

The engine is created once per process that runs tasks: in ``worker_process_init``
for prefork children, and in ``worker_init`` for the solo and thread pools (whose
tasks run in the main process), so it is warm before the first task. The web
process never calls :func:`get_engine`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import signals

from config.settings import Settings
from service.lanes import fast_start_probe
from service.logging import configure_logging
from service.recovery import reconcile, recover_books, recover_jobs
from service.retention import maybe_sweep
from service.services import Services

if TYPE_CHECKING:
    from engine import Engine

log = logging.getLogger("spool.worker")

_lock = threading.Lock()
_state: dict[str, Any] = {
    "pid": None,
    "settings": None,
    "services": None,
    "engine": None,
    "hostname": None,
    "queues": [],
    "pool": "",
    "heartbeat": None,
    "current_job": None,
    "current_batch": None,
    "stopping": False,
    "jobs_done": 0,
    "engine_seconds": None,
}


def get_settings() -> Settings:
    """This process's settings, read from the environment once."""
    if _state["settings"] is None:
        _state["settings"] = Settings.from_env()
    return _state["settings"]


def get_services() -> Services:
    """This process's services (a fresh set after a fork: connections are not shared across processes)."""
    if _state["services"] is None or _state["pid"] != os.getpid():
        with _lock:
            if _state["services"] is None or _state["pid"] != os.getpid():
                _state["services"] = Services(get_settings())
                _state["pid"] = os.getpid()
    return _state["services"]


def engine_threads(settings: Settings) -> int | None:
    """Intra-op threads for this process's engine (None: onnxruntime decides)."""
    return settings.engine_threads or None


def get_engine() -> Engine:
    """The process's single Engine, loaded on first use when no signal loaded it."""
    if _state["engine"] is None:
        with _lock:
            if _state["engine"] is None:
                _state["engine"] = load_engine(get_settings())
    return _state["engine"]


def load_engine(settings: Settings) -> Engine:
    """Load the model, vocabulary and voices from the assets directory (warm-up included)."""
    from engine import Engine

    started = time.perf_counter()
    kwargs: dict[str, Any] = {"threads": engine_threads(settings)}
    if settings.providers:
        kwargs["providers"] = list(settings.providers)
    engine = Engine.from_assets(settings.assets_path, **kwargs)
    engine.first_max_phonemes = settings.first_segment_phonemes
    fast = settings.fast_start_threads
    if settings.engine_threads and settings.engine_threads < fast <= (os.cpu_count() or 1):
        # A listener's opening segments on more threads while the other cores are idle (issue 15).
        engine.enable_fast_start(fast, settings.fast_start_segments, fast_start_probe(fast))
    _state["engine_seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "engine loaded from %s in %.2f s (threads=%s, providers=%s)",
        settings.assets_path,
        _state["engine_seconds"],
        kwargs["threads"] or "auto",
        ",".join(settings.providers) or "default",
    )
    return engine


def worker_name() -> str:
    """This process's name in heartbeats: the Celery node name and the process id."""
    return f"{_state['hostname'] or socket.gethostname()}:{os.getpid()}"


def set_current_job(job_id: str | None) -> None:
    """Record the job this process is rendering (shown in heartbeats)."""
    _state["current_job"] = job_id
    if job_id is None:
        _state["jobs_done"] += 1


def set_current_batch(book_id: str | None, batch: int | None = None) -> None:
    """Record the book batch this process is rendering (shown in heartbeats; the sweep leaves it be)."""
    _state["current_batch"] = None if book_id is None else f"{book_id}:{batch}"


def beat_now() -> None:
    """Write this process's heartbeat at once (what it holds changed); a Redis hiccup waits for the next beat."""
    try:
        get_services().workers.beat(worker_name(), _heartbeat_record())
    except Exception:
        log.debug("could not beat", exc_info=True)


def stop_requested() -> bool:
    """True once this worker began a warm shutdown: a job in hand goes back to the queue after its segment.

    The solo pool runs tasks in the process that got the signal (a local flag); a prefork pool's processes
    learn it from the flag the main process sets in Redis.
    """
    if _state["stopping"]:
        return True
    node = _state["hostname"]
    if not node or _runs_tasks_in_main_process(_state["pool"]):
        return False
    try:
        svc = get_services()
        return bool(svc.redis.exists(svc.keys.worker_stopping(node)))
    except Exception:  # asking must never break a render
        return False


def _heartbeat_record() -> dict[str, Any]:
    settings = get_settings()
    return {
        "hostname": _state["hostname"],
        "pid": os.getpid(),
        "queues": list(_state["queues"]),
        "pool": _state["pool"],
        "engine_ready": _state["engine"] is not None,
        "light": not _needs_engine(),  # a webhook / parse worker: no model, renders nothing
        "engine_load_seconds": _state["engine_seconds"],
        "threads": settings.engine_threads or None,
        "providers": list(settings.providers),
        "current_job": _state["current_job"],
        "current_batch": _state["current_batch"],
        "jobs_done": _state["jobs_done"],
        "segments_rendered": _state["engine"].segments_rendered if _state["engine"] is not None else 0,
    }


def recover(svc: Services) -> None:
    """Send again the jobs and book batches of workers that stopped beating, or that nothing carries."""
    recover_jobs(svc)
    live = {w["name"] for w in svc.workers.live()} | {worker_name()}
    recover_books(svc.books, live, get_settings().heartbeat_interval)
    reconcile(svc, holder=worker_name())
    maybe_sweep(svc)  # retention: one worker per SPOOL_SWEEP_INTERVAL deletes expired stored files


class Heartbeat(threading.Thread):
    """Daemon thread writing this process's heartbeat every ``heartbeat_interval`` seconds."""

    def __init__(self) -> None:
        super().__init__(name="spool-heartbeat", daemon=True)
        self._stop_event = threading.Event()

    def beat(self) -> None:
        """Write one heartbeat now."""
        get_services().workers.beat(worker_name(), _heartbeat_record())

    def run(self) -> None:
        """Beat until stopped; a Redis hiccup is logged and retried at the next beat."""
        while not self._stop_event.is_set():
            try:
                self.beat()
                recover(get_services())
            except Exception:  # a dead heartbeat must never take the worker down
                log.warning("heartbeat failed", exc_info=True)
            self._stop_event.wait(get_settings().heartbeat_interval)

    def stop(self) -> None:
        """Stop beating and remove this process from the registry."""
        self._stop_event.set()
        try:
            get_services().workers.remove(worker_name())
        except Exception:
            log.debug("could not remove heartbeat", exc_info=True)


def start_heartbeat() -> None:
    """Start the heartbeat thread of this process (once), beating immediately."""
    if _state["heartbeat"] is not None and _state["heartbeat"].is_alive():
        return
    heartbeat = Heartbeat()
    heartbeat.beat()
    heartbeat.start()
    _state["heartbeat"] = heartbeat


def stop_heartbeat() -> None:
    """Stop this process's heartbeat, if it has one."""
    if _state["heartbeat"] is not None:
        _state["heartbeat"].stop()
        _state["heartbeat"] = None


def _load_or_exit() -> None:
    """Load the engine; a worker that cannot (missing assets, broken install) exits rather than fail jobs."""
    try:
        get_engine()
    except Exception as exc:
        log.critical("cannot load the engine, stopping this worker: %s", exc, exc_info=True)
        # SystemExit passes through Celery's signal dispatch, which swallows ordinary exceptions.
        raise SystemExit(f"spool worker: cannot load the engine: {exc}") from exc


def _needs_engine() -> bool:
    """False for a worker that consumes only light queues (webhooks, book parsing): it loads no model."""
    queues = set(_state["queues"])
    settings = get_settings()
    return not queues or not queues <= {settings.webhook_queue, settings.parse_queue}


def _runs_tasks_in_main_process(pool: str) -> bool:
    return any(name in pool for name in ("solo", "threads"))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Use Spool's log format (with request and job ids) instead of Celery's."""
    configure_logging(get_settings())


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Remember the node name, queues and pool; load the engine now when tasks run in this process."""
    _state["hostname"] = getattr(sender, "hostname", None)
    try:
        _state["queues"] = sorted(sender.app.amqp.queues.consume_from)
    except AttributeError:
        _state["queues"] = list(get_settings().worker_queues)
    pool = getattr(sender, "pool_cls", "")
    _state["pool"] = pool if isinstance(pool, str) else f"{pool.__module__}.{pool.__name__}"
    if _state["hostname"]:
        try:  # a node restarted under the same name must not see its last shutdown's flag
            svc = get_services()
            svc.redis.delete(svc.keys.worker_stopping(_state["hostname"]))
        except Exception:
            log.debug("could not clear the shutdown flag", exc_info=True)
    if _runs_tasks_in_main_process(_state["pool"]) and _needs_engine():
        _load_or_exit()


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(sender: Any = None, how: str = "", **_: Any) -> None:
    """Warm shutdown began: tell this node's processes to hand their jobs back after the current segment."""
    _state["stopping"] = True
    if _runs_tasks_in_main_process(_state["pool"]) or not sender:
        return
    try:
        svc = get_services()
        svc.redis.set(svc.keys.worker_stopping(str(sender)), how or "1", ex=3600)
    except Exception:
        log.warning("could not flag the shutdown for the pool processes", exc_info=True)


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    """Prefork child: load this process's engine and start its heartbeat before the first task."""
    _state["services"] = None  # the parent's connections must not be reused after fork
    if _needs_engine():
        _load_or_exit()
    if not _runs_tasks_in_main_process(_state["pool"]):
        start_heartbeat()  # the solo pool announces itself once the consumer is ready


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    """Solo/thread pool: the consumer is connected and the engine is warm; announce the worker."""
    if _runs_tasks_in_main_process(_state["pool"]):
        start_heartbeat()


@signals.worker_process_shutdown.connect
def _on_worker_process_shutdown(**_: Any) -> None:
    """Prefork child exiting: withdraw its heartbeat."""
    stop_heartbeat()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    """Worker exiting: withdraw its heartbeat."""
    stop_heartbeat()

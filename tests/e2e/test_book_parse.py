"""Book uploads parsed off the web process, against the running service (issue 14, item 2).

Real Redis, moto S3, the session's render worker and light parse workers: zip bombs are refused by the
web request's cheap checks with little memory growth; bombs past them fail the book in the parse
worker's limited child while rendering goes on; plan_only waits on Redis for the plan, or answers 202
with its link; the upload is stored before the 202; a parse worker killed mid-parse loses nothing.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app import create_app
from app.schemas import BookPlan, BookPlanPending
from config.settings import Settings
from service.recovery import broker_snapshot
from service.services import Services
from tests.engine.test_book import make_epub
from tests.fixtures import bombs
from tests.fixtures.service import WorkerPool, wait_until

#: Longest wait for a parse or a short render on a busy 2-core machine.
TIMEOUT = 240.0

CHAPTERS = [("Arrival", "The train stopped. Nobody got off."), ("Home", "Then she went home.")]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def test_zip_bombs_are_refused_fast_with_little_memory_growth_of_the_web_process(live_server: Any) -> None:
    # The live server runs in this process: its peak RSS around each request is the web process's.
    shapes = {
        "64 MiB member of zeros": bombs.one_member_bomb(),
        "80 x 1 MiB members of zeros": bombs.many_small_members_bomb(),
        "declares 4 GB": bombs.declared_huge(),
        "20,001 members": bombs.many_members(),
    }
    grown: dict[str, tuple[int, float]] = {}
    with requests.Session() as http:
        # A small bad upload first: the first request's lazy imports are not what is measured.
        http.post(live_server.url + "/v1/books", files={"file": ("w.epub", io.BytesIO(b"PK\x03\x04"))}, timeout=60)
        for name, data in shapes.items():
            _reset_peak()
            before = _status_kb("VmHWM")
            started = time.perf_counter()
            response = http.post(
                live_server.url + "/v1/books", files={"file": ("bomb.epub", io.BytesIO(data))}, timeout=60
            )
            took = time.perf_counter() - started
            grown[name] = (_status_kb("VmHWM") - before, took)
            assert response.status_code == 400, (name, response.text[:300])
            assert response.json()["error"]["code"] == "invalid_book", name
    print("web process peak RSS growth (KiB, s):", grown)
    for name, (kib, took) in grown.items():
        assert took < 2.0, f"{name}: answered in {took:.2f} s"
        # The upload itself is read into memory (a few MB); nothing is inflated.
        assert kib < 32 * 1024, f"{name}: the web process grew {kib} KiB"


@pytest.fixture(scope="module")
def tight(settings: Settings, worker_pool: WorkerPool) -> Iterator[tuple[Any, Services, Any]]:
    """An app whose uploads go to a parse worker of their own with tight limits (160 MiB, 3 CPU s)."""
    own = settings.replace(parse_queue="parse-tight", parse_memory_mb=160, parse_cpu_seconds=3)
    env = {"SPOOL_PARSE_QUEUE": "parse-tight", "SPOOL_PARSE_MEMORY_MB": "160", "SPOOL_PARSE_CPU_SECONDS": "3"}
    parser = worker_pool.start(name=f"tight-{uuid.uuid4().hex[:6]}", queues=("parse-tight",), env=env)
    application = create_app(own)
    try:
        yield application, application.extensions["spool"], parser
    finally:
        worker_pool.stop(parser)
        application.extensions["spool"].close()


def _wait_book(client: Any, book_id: str, states: set[str]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = client.get(f"/v1/books/{book_id}").get_json()
        return body if body["state"] in states else None

    return wait_until(reached, TIMEOUT, interval=0.2, what=f"book {book_id} in {states}")


def _post(client: Any, name: str, data: bytes, **form: str) -> Any:
    return client.post(
        "/v1/books", data={"file": (io.BytesIO(data), name), **form}, content_type="multipart/form-data"
    )


@pytest.mark.usefixtures("worker")
def test_bombs_past_the_cheap_checks_fail_in_the_parse_worker_and_rendering_goes_on(tight: Any) -> None:
    application, svc, parser = tight
    client = application.test_client()
    ends = {}
    for name, data, code in (
        ("dense.epub", bombs.dense(40), "book_too_large"),
        ("lying.epub", bombs.lying_sizes(128 << 20), "book_too_large"),  # more than the child may hold
    ):
        response = _post(client, name, data)
        assert response.status_code == 202, (name, response.data[:300])
        book = _wait_book(client, response.get_json()["id"], {"failed", "queued", "rendering", "succeeded"})
        assert book["state"] == "failed" and book["error"]["code"] == code, (name, book["error"])
        ends[name] = book
    assert "SPOOL_PARSE_MEMORY_MB" in ends["dense.epub"]["error"]["message"]
    assert "MiB of memory" in ends["lying.epub"]["error"]["message"]
    assert parser.alive(), parser.log_tail()
    # The render worker never saw them: a job submitted now renders.
    job = client.post("/v1/jobs", json={"text": "Still rendering after the bombs."}).get_json()
    done = wait_until(
        lambda: (j := client.get(f"/v1/jobs/{job['id']}").get_json())["state"] in ("succeeded", "failed") and j,
        TIMEOUT,
        interval=0.2,
        what="the job after the bombs",
    )
    assert done["state"] == "succeeded", done
    # And the parse worker goes on parsing.
    ok = _post(client, "fine.txt", b"Chapter 1\n\nA fine little book.\n").get_json()
    parsed = _wait_book(client, ok["id"], {"queued", "rendering", "assembling", "succeeded", "failed"})
    assert parsed["state"] != "failed" and [c["title"] for c in parsed["chapters"]], parsed
    client.delete(f"/v1/books/{ok['id']}")


@pytest.mark.usefixtures("parse_worker")
def test_plan_only_waits_for_the_plan_or_answers_202_with_its_link(
    settings: Settings, client: Any, tmp_path: Path
) -> None:
    data = make_epub(tmp_path / "p.epub", CHAPTERS, title="Plan Me").read_bytes()
    response = _post(client, "p.epub", data, plan_only="true")
    assert response.status_code == 200, response.data
    assert BookPlan.model_validate(response.get_json()).title == "Plan Me"
    # What only the parser sees is still a 400 with its message.
    wrong = _post(client, "p.epub", data, plan_only="true", chapters="9")
    assert wrong.status_code == 400 and wrong.get_json()["error"]["code"] == "invalid_book"
    assert "out of range" in wrong.get_json()["error"]["message"]
    # With no time to wait, 202 and a link that answers the plan once it is parsed.
    impatient = create_app(settings.replace(plan_wait=0.0))
    try:
        api = impatient.test_client()
        pending = _post(api, "p.epub", data, plan_only="true")
        assert pending.status_code == 202, pending.data
        body = BookPlanPending.model_validate(pending.get_json())
        assert pending.headers["Location"] == body.links["plan"]
        plan = wait_until(
            lambda: (r := api.get(body.links["plan"])).status_code == 200 and r.get_json(),
            TIMEOUT,
            interval=0.2,
            what="the plan",
        )
        assert BookPlan.model_validate(plan).title == "Plan Me"
    finally:
        impatient.extensions["spool"].close()


def test_the_upload_is_in_storage_before_the_202(settings: Settings, tmp_path: Path) -> None:
    idle = create_app(settings.replace(parse_queue="parse-idle"))  # nobody parses: the state stays
    svc = idle.extensions["spool"]
    try:
        api = idle.test_client()
        data = make_epub(tmp_path / "s.epub", CHAPTERS).read_bytes()
        response = _post(api, "s.epub", data)
        assert response.status_code == 202, response.data
        book = response.get_json()
        assert book["state"] == "parsing" and book["chapters"] == []
        assert svc.storage.get(svc.keys.book_file(book["id"], "upload.epub")) == data
        assert book["id"] in broker_snapshot(svc, {"parse-idle"}).parses
        plan = api.get(f"/v1/books/{book['id']}/plan")
        assert plan.status_code == 202 and plan.headers["Retry-After"]
        assert api.delete(f"/v1/books/{book['id']}").get_json()["state"] == "cancelled"
    finally:
        prefix = svc.settings.broker_key_prefix
        svc.redis.delete(*(f"{prefix}parse-idle{s}" for s in ("", "\x06\x163", "\x06\x160")))
        svc.close()


@pytest.mark.usefixtures("worker")
def test_a_parse_worker_killed_mid_parse_has_its_book_parsed_again_and_rendered(
    settings: Settings, worker_pool: WorkerPool
) -> None:
    own = settings.replace(parse_queue="parse-crash")
    env = {"SPOOL_PARSE_QUEUE": "parse-crash", "SPOOL_HEARTBEAT_INTERVAL": "0.5", "SPOOL_HEARTBEAT_TTL": "2"}
    first = worker_pool.start(name=f"crash-{uuid.uuid4().hex[:6]}", queues=("parse-crash",), env=env)
    application = create_app(own)
    svc = application.extensions["spool"]
    second = None
    try:
        client = application.test_client()
        # A long second chapter makes the parse take a while; only the short first one is rendered.
        tag = uuid.uuid4().hex[:8]
        long = " ".join(f"Sentence {k} of the long chapter." for k in range(300_000))
        text = f"Chapter 1\n\nA short chapter {tag} to render.\n\nChapter 2\n\n{long}\n"
        book = _post(client, "crash.txt", text.encode(), chapters="1").get_json()
        key = svc.keys.book(book["id"])
        wait_until(lambda: svc.redis.hget(key, "parser"), TIMEOUT, interval=0.01, what="the parse to start")
        worker_pool.kill(first)
        assert svc.books.record(book["id"]).state == "parsing", "killed after the parse ended: make it longer"
        second = worker_pool.start(name=f"crash2-{uuid.uuid4().hex[:6]}", queues=("parse-crash",), env=env)
        final = _wait_book(client, book["id"], {"succeeded", "failed", "cancelled"})
        assert final["state"] == "succeeded", final
        assert [c["title"] for c in final["chapters"]] == ["Chapter 1"]
        assert svc.books.record(book["id"]).parse_attempts == 2
    finally:
        if second is not None:
            worker_pool.stop(second)
        svc.close()

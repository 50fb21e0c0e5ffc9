"""Audiobooks through the service: upload, fan-out to real workers, assembly in S3, and a crash."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from mutagen.mp4 import MP4

from app.schemas import Book, BookPlan
from engine.book import load_book
from service.books import BookSpec, BookStore
from service.services import Services
from tests.engine.test_book import make_epub
from tests.fixtures.service import wait_until

#: Longest wait for a small book on a busy 2-core machine.
BOOK_TIMEOUT = float(os.environ.get("SPOOL_TEST_BOOK_TIMEOUT", "300"))

CHAPTERS = [
    ("Arrival", "The train stopped. Nobody got off."),
    ("Waiting", "She waited an hour."),
    ("Home", "Then she went home."),
]


def _zip(members: dict[str, bytes], stored: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def wait_state(client: Any, book_id: str, states: set[str], timeout: float = BOOK_TIMEOUT) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/v1/books/{book_id}").get_json()
        return body if body["state"] in states else None

    return wait_until(done, timeout, interval=0.25, what=f"book {book_id} to reach {states}")


@pytest.mark.usefixtures("worker")
def test_a_small_epub_becomes_a_chaptered_audiobook(client: Any, services: Any, tmp_path: Path) -> None:
    epub = make_epub(tmp_path / "small.epub", CHAPTERS, title="Three Stops", author="T. Tester")
    with open(epub, "rb") as fh:
        response = client.post(
            "/v1/books",
            data={"file": (fh, "small.epub"), "voice": "af_heart", "gap": "0.5"},
            content_type="multipart/form-data",
        )
    assert response.status_code == 202, response.data
    book = response.get_json()
    # The web process only stores the upload; a light worker parses it, a worker plans it.
    assert book["state"] in ("parsing", "queued") and book["links"]["plan"].endswith(f"/{book['id']}/plan")
    assert book["planned"] is False and book["progress"]["segments_total"] == 0
    parsed = wait_state(client, book["id"], {"queued", "rendering", "assembling", "succeeded", "failed"})
    assert [c["title"] for c in parsed["chapters"]] == [name for name, _ in CHAPTERS]
    assert parsed["title"] == "Three Stops" and parsed["author"] == "T. Tester"
    planned = wait_until(
        lambda: (b := client.get(f"/v1/books/{book['id']}").get_json())["planned"] and b,
        BOOK_TIMEOUT,
        interval=0.1,
        what="the plan task",
    )
    assert planned["progress"]["segments_total"] >= 3
    assert [c["title"] for c in planned["chapters"]] == [name for name, _ in CHAPTERS]
    final = wait_state(client, book["id"], {"succeeded", "failed"})
    assert final["state"] == "succeeded", final
    assert all(c["state"] == "done" for c in final["chapters"])
    manifest = final["manifest"]
    # What was left out is reported, with why, in the status and the manifest alike.
    assert [s["reason"] for s in final["skipped"]] == [
        'marked epub:type="toc"',  # ebooklib's navigation document, in the spine
        "Project Gutenberg header or licence",
    ]
    assert manifest["skipped"] == final["skipped"] == parsed["skipped"]
    # The answers are the shapes /openapi.json documents.
    assert Book.model_validate(book) and Book.model_validate(parsed) and Book.model_validate(final)
    # The raw upload is dropped once parsed; the plan of the book stays readable.
    assert not services.storage.exists(services.keys.book_file(book["id"], "upload.epub"))
    plan = client.get(f"/v1/books/{book['id']}/plan")
    assert plan.status_code == 200 and BookPlan.model_validate(plan.get_json()).title == "Three Stops"

    m4b = client.get(f"/v1/books/{book['id']}/files/book.m4b")
    assert m4b.status_code == 200
    path = tmp_path / "book.m4b"
    path.write_bytes(m4b.data)
    tags = MP4(str(path))
    assert [c.title for c in tags.chapters] == [name for name, _ in CHAPTERS]
    assert [c.start for c in tags.chapters] == pytest.approx(
        [c["start"] for c in manifest["chapters"]], abs=0.01
    )
    assert tags.info.length == pytest.approx(manifest["duration"], abs=0.1)
    total = sum(c["duration"] for c in manifest["chapters"]) + 0.5 * (len(CHAPTERS) - 1)
    assert manifest["duration"] == pytest.approx(total, abs=0.01)
    assert tags.tags["\xa9nam"] == ["Three Stops"] and tags.tags["\xa9ART"] == ["T. Tester"]

    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/v1/books/{book['id']}/zip").data))
    assert set(archive.namelist()) == set(manifest["files"]) | {"manifest.json"}
    assert json.loads(archive.read("manifest.json")) == manifest
    srt = archive.read("book.srt").decode()
    assert srt.count("-->") >= len(CHAPTERS)

    # The same book again renders nothing: every segment comes from its checkpoint.
    with open(epub, "rb") as fh:
        again = client.post(
            "/v1/books",
            data={"file": (fh, "small.epub"), "voice": "af_heart", "gap": "0.5"},
            content_type="multipart/form-data",
        ).get_json()
    assert wait_state(client, again["id"], {"succeeded", "failed"})["state"] == "succeeded"
    assert BookStore(services).renders(again["id"]) == {}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"file": (io.BytesIO(b""), "empty.txt")}, "invalid_book"),
        ({"file": (io.BytesIO(b"PK\x03\x04junk"), "bad.epub")}, "invalid_book"),
        ({"file": (io.BytesIO(b"Chapter 1\nHi."), "text.epub")}, "invalid_book"),  # not a zip
        ({"file": (io.BytesIO(_zip({"OEBPS/a.xhtml": b"<p>Hi</p>"})), "bare.epub")}, "invalid_book"),
        ({"file": (io.BytesIO(_zip({"a.epub": b"PK"}, stored=False)), "z.txt")}, "invalid_book"),
        ({"file": (io.BytesIO(b"Chapter 1\nHi."), "book.pdf")}, "invalid_request"),
        ({"file": (io.BytesIO(b"Chapter 1\nHi."), "b.txt"), "voice": "af_nobody"}, "unknown_voice"),
        ({"file": (io.BytesIO(b"Chapter 1\nHi."), "b.txt"), "speed": "9"}, "invalid_speed"),
        ({"voice": "af_heart"}, "invalid_request"),
    ],
)
def test_bad_uploads_get_clear_4xx(client: Any, data: dict, code: str) -> None:
    response = client.post("/v1/books", data=data, content_type="multipart/form-data")
    assert 400 <= response.status_code < 500, response.data
    assert response.get_json()["error"]["code"] == code


@pytest.mark.usefixtures("parse_worker")
def test_what_only_the_parser_can_see_fails_the_book_with_its_message(client: Any) -> None:
    data = {"file": (io.BytesIO(b"Chapter 1\nHi."), "b.txt"), "chapters": "4"}
    response = client.post("/v1/books", data=data, content_type="multipart/form-data")
    assert response.status_code == 202, response.data
    failed = wait_state(client, response.get_json()["id"], {"failed", "queued", "succeeded"}, timeout=120)
    assert failed["state"] == "failed" and failed["error"]["code"] == "invalid_book", failed
    assert "out of range" in failed["error"]["message"]
    plan = client.get(f"/v1/books/{failed['id']}/plan")
    assert plan.status_code == 400 and plan.get_json()["error"]["code"] == "invalid_book"


def test_a_worker_killed_mid_book_loses_nothing_and_repeats_nothing(
    settings: Any, worker_pool: Any, tmp_path: Path
) -> None:
    crash = dataclasses.replace(settings, queue="crash", worker_queues=("crash",))
    svc = Services(crash)
    store = BookStore(svc)
    fast = {"SPOOL_HEARTBEAT_INTERVAL": "1", "SPOOL_HEARTBEAT_TTL": "3"}
    first = worker_pool.start(queues=("crash",), env=fast)
    # Every sentence differs, and the speed is this test's own (it is part of every checkpoint's
    # key), so no segment can be served from a checkpoint another test's book left ("Chapter 1").
    text = "\n\n".join(
        f"Chapter {n}\n\n" + " ".join(f"Sentence {k} of chapter {n} is here." for k in range(1, 5))
        for n in (1, 2, 3)
    )
    path = tmp_path / "crash.txt"
    path.write_text(text)
    book_id = store.create(
        load_book(path), BookSpec(voice="af_heart", speed=1.07), "public", source_name="crash.txt"
    )
    wait_until(lambda: store.payload(book_id)["planned"], BOOK_TIMEOUT, interval=0.05, what="the plan")
    total = store.payload(book_id)["progress"]["segments_total"]
    assert total >= 8
    wait_until(
        lambda: store.payload(book_id)["progress"]["segments_done"] >= 2,
        BOOK_TIMEOUT,
        interval=0.05,
        what="a few segments",
    )
    assert store.payload(book_id)["progress"]["segments_done"] < total
    worker_pool.kill(first)
    worker_pool.start(queues=("crash",), env=fast)
    wait_until(
        lambda: store.state(book_id) in ("succeeded", "failed"), BOOK_TIMEOUT, interval=0.25, what="the book"
    )
    assert store.state(book_id) == "succeeded"
    renders = store.renders(book_id)
    assert sorted(renders) == list(range(total)), "every segment rendered"
    assert set(renders.values()) == {1}, f"no segment twice: {renders}"


@pytest.mark.usefixtures("parse_worker")
def test_plan_only_previews_the_chapters_and_renders_nothing(client: Any, tmp_path: Path) -> None:
    epub = make_epub(tmp_path / "plan.epub", CHAPTERS, title="Plan Me")
    before = client.get("/v1/books").get_json()["data"]
    with open(epub, "rb") as fh:
        response = client.post(
            "/v1/books",
            data={"file": (fh, "plan.epub"), "plan_only": "true", "chapters": "2-3", "speed": "1.5"},
            content_type="multipart/form-data",
        )
    assert response.status_code == 200, response.data
    plan = response.get_json()
    assert BookPlan.model_validate(plan).title == "Plan Me" and plan["object"] == "book.plan"
    body = [s for s in plan["sections"] if s["kind"] == "body"]
    assert [s["title"] for s in body] == [name for name, _ in CHAPTERS]
    assert [s["title"] for s in plan["sections"] if s["selected"]] == ["Waiting", "Home"]
    assert all(s["reason"] and s["words"] for s in plan["skipped"])
    assert plan["selected"]["chapters"] == 2
    assert client.get("/v1/books").get_json()["data"] == before, "a preview creates no book"


def test_two_workers_sharing_only_redis_and_s3_render_one_book(
    settings: Any, worker_pool: Any, tmp_path: Path
) -> None:
    """Workers as on two machines: each in its own working directory, nothing shared but Redis and S3."""
    from service.task_names import BOOK_NEXT

    assert settings.storage_url.startswith("s3://"), "the point is storage that is not a local path"
    spread = dataclasses.replace(settings, queue="spread", worker_queues=("spread",))
    svc = Services(spread)
    store = BookStore(svc)
    homes = [tmp_path / "machine-a", tmp_path / "machine-b"]
    workers = []
    for home in homes:
        home.mkdir()
        workers.append(worker_pool.start(queues=("spread",), cwd=home))
    # Text no other test renders: checkpoints are content-keyed and shared between books, and every
    # segment must be rendered here for the counts below to mean anything (so no "Chapter one" heading).
    tag = uuid.uuid4().int % 90_000 + 10_000
    text = "\n\n".join(
        " ".join(f"Line {k} of part {n} of book {tag} is spoken here." for k in range(1, 5)) for n in (1, 2, 3)
    )
    path = tmp_path / "spread.txt"
    path.write_text(text)
    book_id = store.create(load_book(path), BookSpec(voice="af_heart"), "public", source_name="spread.txt")
    try:
        wait_until(
            lambda: store.state(book_id) in ("succeeded", "failed"), BOOK_TIMEOUT, interval=0.25, what="the book"
        )
        assert store.state(book_id) == "succeeded", store.payload(book_id)
        plan = store.plan(book_id)
        assert len(plan["batches"]) >= 2
        renders = store.renders(book_id)
        assert sorted(renders) == list(range(len(plan["segments"]))) and set(renders.values()) == {1}, renders
        # Both took batches: the work was really spread, so neither relied on the other's files.
        # (Tokens name no batch, so the book's log says who rendered what: worker names end in the pid.)
        rendered_by = {f["worker"] for _, f in store.events(book_id) if f["event"] == "segment"}
        for worker in workers:
            assert any(name.endswith(f":{worker.pid}") for name in rendered_by), worker.log_tail()
            assert f"Task {BOOK_NEXT}[" in worker.log_path.read_text(), worker.log_tail()
        files = store.payload(book_id)["files"]
        assert "book.zip" in files and all(svc.storage.exists(svc.keys.book_file(book_id, f)) for f in files)
        # Nothing was left behind in either worker's directory (temporary files cleaned up).
        for home in homes:
            assert not [p for p in home.rglob("*") if p.is_file() and "spool" in p.name], list(home.rglob("*"))
    finally:
        for worker in workers:
            worker_pool.stop(worker)

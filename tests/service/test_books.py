"""The book store: records as dataclasses, planning in a worker, and recovery of a dead planner."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from config import defaults
from engine.book import load_book
from service.books import BookRecord, BookSpec, BookStore
from service.recovery import recover_books
from service.services import Services
from service.states import BookState

TEXT = (
    "Chapter 1\n\nThe first chapter is short.\n\nChapter 2\n\nThe second one is too. It has two sentences.\n"
)

#: The queue these tests send to: no worker consumes it, so the messages stay to be counted.
QUEUE = "books-idle"


@pytest.fixture
def store(settings: Any) -> BookStore:
    return BookStore(Services(dataclasses.replace(settings, queue=QUEUE)))


def _lane(store: BookStore, lane: str) -> int:
    """Messages waiting on the test queue at one priority lane (kombu's Redis layout)."""
    return int(store.redis.llen(f"{QUEUE}\x06\x16{defaults.PRIORITIES[lane]}"))


def test_a_book_record_round_trips_through_its_hash() -> None:
    rec = BookRecord(id="b1", owner="alice", spec='{"voice": "af_sky"}', created_at=1.5, segments_total=7)
    again = BookRecord.from_hash({k: ("" if v is None else str(v)) for k, v in rec.to_hash().items()})
    assert again == rec and again.state is BookState.QUEUED and again.planned_at is None
    assert again.render_spec.voice == "af_sky"


def test_the_web_side_stores_chapters_and_a_worker_plans_them_once(store: BookStore) -> None:
    book = load_book("two.txt", data=TEXT.encode(), filename="two.txt")
    plans_before = _lane(store, "normal")
    book_id = store.create(book, BookSpec(), "alice", source_name="two.txt")
    payload = store.payload(book_id, "alice")
    assert payload["planned"] is False and payload["progress"]["segments_total"] == 0
    assert [c["title"] for c in payload["chapters"]] == ["Chapter 1", "Chapter 2"]
    assert _lane(store, "normal") == plans_before + 1, "one plan task queued"

    batches_before = _lane(store, "low")
    total = store.plan_and_queue(book_id, "w@host:1")
    assert total >= 3
    payload = store.payload(book_id, "alice")
    assert payload["planned"] and payload["progress"]["segments_total"] == total
    assert [c["segments_total"] for c in payload["chapters"]] == [
        c["count"] for c in store.plan(book_id)["chapters"]
    ]
    batches = len(store.plan(book_id)["batches"])
    assert _lane(store, "low") == batches_before + batches
    # A redelivered plan task changes nothing and queues nothing.
    assert store.plan_and_queue(book_id, "w@host:2") == 0
    assert _lane(store, "low") == batches_before + batches


def test_a_planner_that_stopped_beating_has_its_book_planned_again(store: BookStore) -> None:
    book = load_book("two.txt", data=TEXT.encode(), filename="two.txt")
    book_id = store.create(book, BookSpec(), "alice", source_name="two.txt")
    store.redis.hset(store.keys.book(book_id), "planner", "gone@host:9")
    store.redis.delete(store.keys.books_recovery())
    before = _lane(store, "normal")
    recover_books(store, live_workers={"alive@host:1"}, interval=1)
    assert _lane(store, "normal") == before + 1
    assert store.record(book_id).planner is None
    # A planner that is alive is left to finish.
    store.redis.hset(store.keys.book(book_id), "planner", "alive@host:1")
    store.redis.delete(store.keys.books_recovery())
    recover_books(store, live_workers={"alive@host:1"}, interval=1)
    assert _lane(store, "normal") == before + 1

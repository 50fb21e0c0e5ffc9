"""A checkpoint a new book reuses survives another book's DELETE made at the same moment.

Two books of the same text share their segment checkpoints (content-keyed, reference-counted).
The first is rendered and finished; the second is rendered in this process by the real engine
(checkpoints in S3 via moto) while the first one's purge is made to run at the worst moment:
right after the second book found and read a checkpoint (every one is kept, none re-rendered),
or while the purge holds its deletion marks as the second book starts (it waits, then renders
each segment once).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import Settings
from engine.book import load_book
from service import retention
from service.book_render import render_batch
from service.books import BookSpec, BookStore
from service.retention import purge_book
from service.services import Services

OWNER = "public"
WORKER = "race@test:1"


@pytest.fixture
def store(settings: Settings) -> Iterator[BookStore]:
    tag = uuid.uuid4().hex[:8]
    svc = Services(settings.replace(queue=f"race-{tag}", key_prefix=f"k{tag}:"))
    yield svc.books
    for key in svc.redis.scan_iter(match=svc.keys.prefix + "*"):
        svc.redis.delete(key)
    svc.close()


def unique_text() -> bytes:
    # Checkpoints are shared by content across the session's tests: a text no other test renders.
    return f"Chapter 1\n\nRace {random.randrange(10, 100)} is on. It ends.\n".encode()


def plan(store: BookStore, book_id: str) -> None:
    """Plan a book; drop the task messages it queued (this test runs them), so no batch gives way to them."""
    store.plan_and_queue(book_id, WORKER)
    queue = store.svc.settings.queue
    for key in store.redis.scan_iter(match=f"*{queue}*"):
        if store.redis.type(key) == b"list":  # the broker's lanes of this test's own queue
            store.redis.delete(key)


def render(store: BookStore, engine: Any, book_id: str) -> None:
    """Plan a book and render every batch here, as the workers would (the last one assembles)."""
    plan(store, book_id)
    for batch in range(len(store.plan(book_id)["batches"])):
        render_batch(store, engine, book_id, batch, WORKER)


def new_book(store: BookStore, text: bytes) -> str:
    return store.create(load_book("race.txt", data=text, filename="race.txt"), BookSpec(), OWNER, source_name="race.txt")


def checkpoints(store: BookStore, book_id: str) -> set[str]:
    return {m.decode() for m in store.redis.smembers(store.keys.book_checkpoints(book_id))}


def test_a_reused_checkpoint_is_kept_when_the_other_book_is_deleted_meanwhile(
    store: BookStore, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = store.svc
    text = unique_text()
    first = new_book(store, text)
    render(store, engine, first)
    assert store.state(first) == "succeeded"
    shared = checkpoints(store, first)
    assert shared

    second = new_book(store, text)
    real_get = svc.storage.get
    purged: list[int] = []

    def get_then_purge(key: str) -> bytes:
        data = real_get(key)
        if key in shared and not purged:
            # The second book has just found and read a checkpoint: the first one's DELETE runs now.
            purged.append(purge_book(svc, first, OWNER))
        return data

    monkeypatch.setattr(svc.storage, "get", get_then_purge)
    render(store, engine, second)
    monkeypatch.undo()

    assert purged, "the purge ran during the render"
    assert store.state(second) == "succeeded", store.record(second)
    assert store.renders(second) == {}  # every segment came from the shared checkpoints
    assert checkpoints(store, second) == shared
    assert all(svc.storage.exists(key) for key in shared)
    assert svc.storage.list(f"books/{first}/") == []
    refs = svc.redis.hgetall(svc.keys.checkpoint_refs())
    assert {k.decode(): int(v) for k, v in refs.items()} == dict.fromkeys(shared, 1)


def test_a_book_waits_for_a_deletion_under_way_and_renders_again(
    store: BookStore, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = store.svc
    text = unique_text()
    first = new_book(store, text)
    render(store, engine, first)
    shared = checkpoints(store, first)
    second = new_book(store, text)
    plan(store, second)

    refused = threading.Event()
    real_eval, real_delete = svc.redis.eval, svc.storage.delete

    def eval_(script: str, numkeys: int, *args: Any) -> Any:
        result = real_eval(script, numkeys, *args)
        if script is retention._REFERENCE and result:
            refused.set()  # the second book asked for a checkpoint being deleted, and was told to wait
        return result

    renderer = threading.Thread(target=lambda: render_batch(store, engine, second, 0, WORKER))

    def delete_when_refused(key: str) -> None:
        if key in shared and not renderer.is_alive() and not refused.is_set():
            renderer.start()  # the second book starts while the purge holds its deletion marks
            assert refused.wait(60), "the second book did not wait for the deletion"
        real_delete(key)

    monkeypatch.setattr(svc.redis, "eval", eval_)
    monkeypatch.setattr(svc.storage, "delete", delete_when_refused)
    purge_book(svc, first, OWNER)
    renderer.join(120)
    monkeypatch.undo()
    for batch in range(1, len(store.plan(second)["batches"])):
        render_batch(store, engine, second, batch, WORKER)

    assert store.state(second) == "succeeded", store.record(second)
    # Everything it would have reused was deleted: each segment rendered once, none twice.
    assert sorted(store.renders(second)) == list(range(store.record(second).segments_total))
    assert set(store.renders(second).values()) == {1}
    assert all(svc.storage.exists(key) for key in shared)
    assert not svc.redis.hlen(svc.keys.checkpoint_deleting())

"""Fair dispatch of book batches: round-robin by key, then by book, with one token per ready batch (issue 19).

A deployment of its own with no worker: the ready set, the rotation and kombu's lists stay as the
dispatcher left them, so the order of :func:`take_next` is the order a worker would render in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.settings import Settings
from service import dispatch
from service.keys import new_id
from service.recovery import broker_snapshot, reconcile
from service.services import Services
from tests.fixtures.durability import isolated_settings


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    services = Services(isolated_settings(settings, reconcile_grace=0.0))
    yield services
    services.close()


def _drain(svc: Services) -> list[tuple[str, int]]:
    order = []
    while (taken := dispatch.take_next(svc, svc.settings.queue, "w@host:1")) is not None:
        order.append(taken)
    return order


def test_batches_go_round_robin_by_key_then_by_book_each_book_in_order(svc: Services) -> None:
    queue = svc.settings.queue
    a1, a2, b1 = new_id(), new_id(), new_id()
    dispatch.make_ready(svc, queue, a1, "alice", range(4))
    dispatch.make_ready(svc, queue, a2, "alice", range(2))
    dispatch.make_ready(svc, queue, b1, "bob", range(3))
    order = _drain(svc)
    owners = ["alice" if book in (a1, a2) else "bob" for book, _ in order]
    # Keys take turns while both have work; then alice's books go on alone.
    assert owners == ["alice", "bob", "alice", "bob", "alice", "bob", "alice", "alice", "alice"]
    alice = [book for book, _ in order if book != b1]
    assert alice[0] != alice[1] and alice[:2] == alice[2:4], "alice's two books share her turns"
    for book, count in ((a1, 4), (a2, 2), (b1, 3)):
        assert [n for b, n in order if b == book] == list(range(count)), "a book's batches stay in order"
    assert svc.redis.hget(svc.keys.book_batches(b1), "2") == b"running:w@host:1"


def test_a_newcomer_is_served_next_and_a_handed_back_batch_keeps_its_place(svc: Services) -> None:
    queue = svc.settings.queue
    first, late = new_id(), new_id()
    dispatch.make_ready(svc, queue, first, "alice", range(5))
    assert [dispatch.take_next(svc, queue, "w@host:1") for _ in range(2)] == [(first, 0), (first, 1)]
    dispatch.make_ready(svc, queue, late, "bob", range(2))
    assert dispatch.take_next(svc, queue, "w@host:1") == (late, 0), "the second key's book starts at once"
    dispatch.make_ready(svc, queue, first, "alice", [1])  # batch 1 handed back part-way (gave way)
    assert _drain(svc) == [(first, 1), (late, 1), (first, 2), (first, 3), (first, 4)]


def test_one_token_per_ready_batch_and_lost_tokens_are_made_up(svc: Services) -> None:
    queue = svc.settings.queue
    book = new_id()
    dispatch.make_ready(svc, queue, book, "alice", range(3))
    assert dispatch.missing_tokens(svc, queue, grace=0.0) == 0
    lists = [f"{svc.settings.broker_key_prefix}{queue}{s}" for s in ("", "\x06\x163", "\x06\x166", "\x06\x169")]
    assert sum(svc.redis.llen(k) for k in lists) == 3
    svc.redis.delete(*lists)  # the tokens are lost (say, with Redis' last second of writes)
    assert dispatch.missing_tokens(svc, queue, grace=3600.0) == 0, "a book made ready just now waits its grace"
    assert dispatch.missing_tokens(svc, queue, grace=0.0) == 3
    assert dispatch.top_up(svc, [queue], gap=0.01) == {queue: 3}
    assert sum(svc.redis.llen(k) for k in lists) == 3 and dispatch.missing_tokens(svc, queue, grace=0.0) == 0
    # The ready batches count as carried: the sweep sends none of them again.
    assert {(book, n) for n in range(3)} <= broker_snapshot(svc, {queue}).batches
    record = {"id": book, "owner": "alice", "queue": queue, "state": "rendering", "planned_at": "1"}
    svc.redis.hset(svc.keys.book(book), mapping=record | {"segments_total": "3"})
    svc.redis.sadd(svc.keys.books_active(), book)
    assert reconcile(svc, locked=False).batches == []
    assert sum(svc.redis.llen(k) for k in lists) == 3


def test_a_withdrawn_book_hands_out_nothing(svc: Services) -> None:
    queue = svc.settings.queue
    gone, kept = new_id(), new_id()
    dispatch.make_ready(svc, queue, gone, "alice", range(3))
    dispatch.make_ready(svc, queue, kept, "bob", range(1))
    assert dispatch.withdraw(svc, queue, gone) == 3
    assert dispatch.ready_batches(svc, queue, gone) == set()
    assert _drain(svc) == [(kept, 0)]
    # A deleted book's leftovers (its batches hash gone) are dropped, not handed out.
    dispatch.make_ready(svc, queue, gone, "alice", [0])
    svc.redis.delete(svc.keys.book_batches(gone))
    assert dispatch.take_next(svc, queue, "w@host:1") is None
    assert not svc.redis.exists(svc.keys.book_batches(gone))

"""Two books by two keys share one real worker: their segments alternate, neither waits for the other (issue 19)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any

from engine.book import load_book
from service.books import BATCH_SIZE, BookSpec, BookStore
from service.services import Services
from tests.fixtures.service import wait_until

#: Longest wait for the two small books on a busy 2-core machine.
TIMEOUT = float(os.environ.get("SPOOL_TEST_BOOK_TIMEOUT", "300"))


def _book(tmp_path: Path, name: str, lines: int = 10) -> Path:
    # Text no other test renders (checkpoints are shared by content): every segment is rendered here.
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / f"{name}.txt"
    path.write_text("\n\n".join(f"Line {k} of the {name} book {tag} is read." for k in range(1, lines + 1)))
    return path


def _entry(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def test_two_books_of_two_keys_alternate_on_one_worker(settings: Any, worker_pool: Any, tmp_path: Path) -> None:
    own = dataclasses.replace(settings, queue="fair", worker_queues=("fair",))
    svc = Services(own)
    store = BookStore(svc)
    worker = worker_pool.start(queues=("fair",))
    try:
        first = store.create(load_book(_book(tmp_path, "alpha")), BookSpec(), "alice", source_name="a.txt")
        wait_until(
            lambda: store.payload(first)["progress"]["segments_done"] >= 1,
            TIMEOUT,
            interval=0.05,
            what="the first book to render a segment",
        )
        second = store.create(load_book(_book(tmp_path, "beta")), BookSpec(), "bob", source_name="b.txt")
        # While both render, each status says it shares the worker with the other key's book.
        shared = wait_until(
            lambda: (q := store.payload(second)["queue"]) and "Sharing" in q["reason"] and q,
            TIMEOUT,
            interval=0.05,
            what="the second book to share the worker",
        )
        assert "1 other key(s)" in shared["reason"] and shared["ahead_segments"] >= 1
        # Two books on one worker: twice the time one small book may take.
        wait_until(
            lambda: all(store.state(b) in ("succeeded", "failed") for b in (first, second)),
            2 * TIMEOUT,
            interval=0.25,
            what="both books",
        )
        assert [store.state(b) for b in (first, second)] == ["succeeded"] * 2, store.payload(second)
    finally:
        worker_pool.stop(worker)

    # The order the worker finished segments in, from both books' logs (entry ids are Redis' clock).
    done = sorted(
        (_entry(entry_id), name)
        for name, book_id in (("a", first), ("b", second))
        for entry_id, fields in store.events(book_id)
        if fields["event"] == "segment"
    )
    order = "".join(name for _, name in done)
    totals = {name: order.count(name) for name in "ab"}
    assert totals == {"a": store.record(first).segments_total, "b": store.record(second).segments_total}
    # Neither book rendered all its segments before the other started.
    assert order.index("b") < order.rindex("a") and order.index("a") < order.rindex("b"), order
    # From the second book's first segment until either is done, their counts stay within two batches.
    start, counts, widest = order.index("b"), {"a": 0, "b": 0}, 0
    for name in order[start:]:
        counts[name] += 1
        if any(counts[n] + order[:start].count(n) >= totals[n] for n in "ab"):
            break
        widest = max(widest, abs(counts["a"] - counts["b"]))
    assert widest <= 2 * BATCH_SIZE, order
    for book_id in (first, second):
        assert set(store.renders(book_id).values()) == {1}, "no segment rendered twice"
    svc.close()

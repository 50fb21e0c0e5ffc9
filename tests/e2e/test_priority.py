"""Interactive work overtakes a rendering book within one segment, on a real worker (issue 19)."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from service.books import BATCH_SIZE, BookStore
from tests.fixtures.service import wait_until

#: Longest wait for the small book and the job on a busy 2-core machine.
TIMEOUT = float(os.environ.get("SPOOL_TEST_BOOK_TIMEOUT", "300"))

#: One chapter of twelve one-sentence paragraphs (and its heading): at least three batches of four; no
#: other test renders these sentences, so no segment comes from another test's checkpoint.
BOOK = "Chapter 7: The Harbour\n\n" + "\n\n".join(
    [
        "The overnight ferry docked at six.",
        "Gulls circled the harbour cranes.",
        "A porter wheeled crates of lemons.",
        "The customs hut opened late.",
        "Fog hid the lighthouse.",
        "Two fishermen argued about nets.",
        "The café shutters rattled up.",
        "Someone whistled an old waltz.",
        "The tide turned slowly.",
        "A red kite drifted over the pier.",
        "Church bells rang for mass.",
        "The ferry sounded its horn.",
    ]
)


@pytest.mark.usefixtures("worker")
def test_a_job_overtakes_a_rendering_book_within_one_segment(client: Any, services: Any) -> None:
    store = BookStore(services)
    # Every job's and book's events, on one connection: Redis delivers them in the order it published them.
    events = services.redis.pubsub()
    prefix = services.keys.prefix
    events.psubscribe(f"{prefix}job:*:events", f"{prefix}book:*:events")
    try:
        response = client.post(
            "/v1/books",
            data={"file": (io.BytesIO(BOOK.encode()), "night.txt"), "voice": "af_heart"},
            content_type="multipart/form-data",
        )
        assert response.status_code == 202, response.data
        book_id = response.get_json()["id"]

        def early_in_a_batch() -> str | None:
            done = [f["segment"] for _, f in store.events(book_id) if f["event"] == "segment"]
            # The latest segment done opens its batch of four, so at least two more of it are to come.
            return done[-1] if done and int(done[-1]) % BATCH_SIZE <= 1 else None

        # The book is rendering on the worker, a batch under way: submit a job now.
        mark = wait_until(early_in_a_batch, TIMEOUT, interval=0.02, what="a segment early in a batch")
        job = client.post("/v1/jobs", json={"text": "Hello there.", "format": "wav"})
        assert job.status_code == 202, job.data
        job_id = job.get_json()["id"]

        def finished(path: str) -> dict[str, Any] | None:
            body = client.get(path).get_json()
            return body if body["state"] in ("succeeded", "failed", "cancelled") else None

        job_state = wait_until(lambda: finished(f"/v1/jobs/{job_id}"), TIMEOUT, what="the job")["state"]
        book = wait_until(lambda: finished(f"/v1/books/{book_id}"), TIMEOUT, what="the book")
        assert job_state == "succeeded" and book["state"] == "succeeded"
        # Its first batch set when it started rendering (the record is written with an empty start).
        assert book["created_at"] < book["started_at"] < book["finished_at"]
        order = []
        while (message := events.get_message(timeout=0.5)) is not None:
            if message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()
            order.append({"channel": channel, **json.loads(message["data"])})
    finally:
        events.close()

    book_events = [e for e in order if e["channel"] == services.keys.book_events(book_id)]
    job_channel = services.keys.job_events(job_id)
    seen = [
        (e["type"], e.get("segment", e.get("seq")))
        for e in order
        if e in book_events or e["channel"] == job_channel
    ]
    first_chunk = next(i for i, e in enumerate(order) if e["channel"] == job_channel and e["type"] == "chunk")
    marked = next(i for i, e in enumerate(order) if e in book_events and e.get("segment") == mark)
    # The book had not finished when the job came (a precondition on a starved machine).
    assert any(e["type"] == "segment" for e in book_events if order.index(e) > first_chunk), seen
    ran_on = services.jobs.get(job_id).worker
    between = [
        e
        for e in order[marked + 1 : first_chunk]
        if e in book_events and e["type"] == "segment" and e["worker"] == ran_on
    ]
    # On the job's worker, at most the book segment already being rendered when the job arrived finished
    # before the job's first chunk (without giving way, the rest of its batch would have gone first).
    assert len(between) <= 1, seen
    assert any(
        e["type"] == "yield" and e["worker"] == ran_on
        for e in order[marked + 1 : first_chunk + 1]
        if e in book_events
    ), seen
    # The batch handed back rendered nothing twice.
    renders = store.renders(book_id)
    assert set(renders.values()) == {1} and len(renders) == store.record(book_id).segments_total

"""How a book's segments are cut into render tasks: bulk batches, then single segments at the end."""

from __future__ import annotations

import pytest

from engine.book import Chapter
from service.books import BATCH_SIZE, TAIL_SEGMENTS, batch_spans, plan_book


@pytest.mark.parametrize("count", [0, 1, 3, TAIL_SEGMENTS, TAIL_SEGMENTS + 1, TAIL_SEGMENTS + 5, 97])
def test_batches_cover_every_segment_once_in_order_with_single_segments_last(count: int) -> None:
    spans = batch_spans(count)
    covered = [i for a, b in spans for i in range(a, b)]
    assert covered == list(range(count))
    assert all(1 <= b - a <= BATCH_SIZE for a, b in spans)
    tail = spans[-min(count, TAIL_SEGMENTS) :] if count else []
    assert all(b - a == 1 for a, b in tail), "the last segments go one per task"
    if count > TAIL_SEGMENTS + BATCH_SIZE:
        assert spans[0] == [0, BATCH_SIZE], "the bulk still goes in whole batches"


def test_a_planned_chapter_ends_in_single_segment_batches() -> None:
    text = " ".join(f"Sentence number {n} is here, and it says a little more." for n in range(40))
    plan = plan_book([Chapter(0, "One", text)], "en-us")
    n = len(plan["segments"])
    assert n > TAIL_SEGMENTS + BATCH_SIZE
    assert plan["batches"] == batch_spans(n)
    assert [b - a for a, b in plan["batches"][-TAIL_SEGMENTS:]] == [1] * TAIL_SEGMENTS

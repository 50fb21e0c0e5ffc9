"""The end of a book, simulated: how long workers sit idle while another finishes the last batch (issue 18).

Plans Alice chapters with the service's own ``plan_book`` (the real segments) and replays the
queue: N workers each take the next batch as soon as they are free, in queue order (Celery
with ``acks_late`` and prefetch 1 hands out one task per free process). A segment's cost is
proportional to its estimated phonemes plus a fixed cost per model call (``--call-cost``, in
phonemes; the budget sweep of ``benchmarks/budgets.py`` found audio per CPU second flat
between 100 and 180 phonemes, so the fixed part is small). Printed for each batching:
tasks, the book's render span as a multiple of a perfect split (total cost / N), and the
worker time left idle while segments remained (sum over workers of the time from its last
finish to the book's last finish), as a share of N x span. The assembly after the last
segment is the same for every batching and is left out.

    python benchmarks/book_tail.py
    python benchmarks/book_tail.py --chapters 1-3 --workers 2,4,8
"""

from __future__ import annotations

import argparse
import heapq

from book_throughput import parse_chapters
from common import fmt, table
from make_texts import DEFAULT_EPUB, chapters

from engine.book import Chapter
from engine.segment import estimate_phonemes
from service.books import BATCH_SIZE, TAIL_SEGMENTS, batch_spans, plan_book


def simulate(costs: list[float], spans: list[list[int]], workers: int) -> tuple[float, float]:
    """Replay the queue; return (span of the render, idle worker time before the last finish)."""
    free = [(0.0, w) for w in range(workers)]
    last = [0.0] * workers
    for a, b in spans:
        t, w = heapq.heappop(free)
        t += sum(costs[a:b])
        last[w] = t
        heapq.heappush(free, (t, w))
    end = max(last)
    return end, sum(end - x for x in last)


def main() -> None:
    """Plan the chapters, simulate each batching for each worker count, print a table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chapters", default="1", help="Alice chapters, e.g. 1 or 1-3 (default 1)")
    p.add_argument("--workers", default="2,4", help="worker counts (default 2,4)")
    p.add_argument("--call-cost", type=float, default=10.0, help="fixed cost of a model call, in phonemes")
    args = p.parse_args()
    chs = chapters(DEFAULT_EPUB)
    picked = [
        Chapter(k, chs[n - 1][0], "\n\n".join(chs[n - 1][1]))
        for k, n in enumerate(parse_chapters(args.chapters))
    ]
    plan = plan_book(picked, "en-us")
    segs = plan["segments"]
    costs = [estimate_phonemes(s["spoken"]) + args.call_cost if s["spoken"] else 0.0 for s in segs]
    batchings = {
        f"batches of {BATCH_SIZE} (before)": batch_spans(len(segs), BATCH_SIZE, 0),
        f"batches of {BATCH_SIZE}, last {TAIL_SEGMENTS} alone (now)": batch_spans(len(segs)),
        "one segment per task": batch_spans(len(segs), 1, 0),
    }
    rows = []
    for n in (int(x) for x in args.workers.split(",")):
        for name, spans in batchings.items():
            end, idle = simulate(costs, spans, n)
            rows.append(
                [
                    n,
                    name,
                    len(spans),
                    fmt(end / (sum(costs) / n), 3) + "x",
                    fmt(100 * idle / (n * end), 1) + "%",
                ]
            )
    print(
        f"# Alice chapters {args.chapters}: {len(segs)} segments, fixed call cost {args.call_cost} phonemes"
    )
    print(table(["workers", "batching", "tasks", "span / perfect split", "idle while segments left"], rows))


if __name__ == "__main__":
    main()

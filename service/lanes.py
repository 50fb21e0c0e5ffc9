"""Priority between lanes: a worker holding bulk work (book segments) gives way to interactive work.

kombu's Redis transport keeps one list per queue and priority step (``Keys.broker_queue``) and a
worker pops them in step order, but only between tasks: a worker rendering a book batch would
finish the whole batch before an interactive job it could take. So the batch loop asks
:func:`claim_yield` before each segment it renders; when a message waits on a higher lane of the
batch's queue the worker hands the rest of its batch back to the queue and returns, and the next
message it takes is the waiting one.

Only as many workers give way as there are messages waiting: each one that does records a claim
(its name, expiring after ``YIELD_CLAIM_SECONDS``) in ``Keys.yielding(queue)``, so two workers on
a book do not both stop for one job. A claim ends when the worker starts a job
(:func:`release_yield`) or expires.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from config import defaults
from service.keys import Keys

if TYPE_CHECKING:
    from service.services import Services

#: Seconds a worker's claim to give way lasts if it never starts the job it gave way to.
YIELD_CLAIM_SECONDS = 3.0

# KEYS: yielding zset, then the broker lists of the higher lanes. ARGV: now, claim seconds, worker.
_CLAIM = """
local waiting = 0
for i = 2, #KEYS do waiting = waiting + redis.call('LLEN', KEYS[i]) end
if waiting == 0 then return 0 end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREM', KEYS[1], ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= waiting then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return waiting
"""


def higher_lanes(queue: str, than: str = "low", broker_prefix: str = "") -> list[str]:
    """The broker lists of ``queue`` whose priority step is served before ``than``'s."""
    limit = defaults.PRIORITIES[than]
    return [Keys.broker_queue(queue, step, broker_prefix) for step in defaults.PRIORITY_STEPS if step < limit]


def waiting_above(svc: Services, queue: str, than: str = "low") -> int:
    """Messages waiting on the lanes of ``queue`` served before ``than``'s."""
    lanes = higher_lanes(queue, than, svc.settings.broker_key_prefix)
    with svc.redis.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.llen(lane)
        return int(sum(pipe.execute()))


def claim_yield(svc: Services, queue: str, worker: str, than: str = "low") -> bool:
    """True when ``worker`` should give way now: work waits above ``than`` that no other worker claimed."""
    keys = [svc.keys.yielding(queue), *higher_lanes(queue, than, svc.settings.broker_key_prefix)]
    args = [repr(time.time()), repr(YIELD_CLAIM_SECONDS), worker]
    return bool(svc.redis.eval(_CLAIM, len(keys), *keys, *args))


def release_yield(svc: Services, queue: str, worker: str) -> None:
    """End ``worker``'s claim (it has started the work it gave way to)."""
    svc.redis.zrem(svc.keys.yielding(queue), worker)


#: The kernel's count of runnable tasks (4th field of /proc/loadavg: "running/total").
LOADAVG_PATH = "/proc/loadavg"


def spare_cores(path: str = LOADAVG_PATH) -> int:
    """Cores with nothing runnable on them right now, besides the caller (0 where it cannot tell)."""
    try:
        with open(path, encoding="ascii") as fh:
            running = int(fh.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 0
    return max(0, (os.cpu_count() or 1) - max(1, running))


def fast_start_probe(threads: int) -> Callable[[], bool]:
    """A probe for ``Engine.enable_fast_start``: True while ``threads - 1`` cores besides ours are idle."""
    return lambda: spare_cores() >= threads - 1

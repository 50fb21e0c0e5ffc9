"""Worker heartbeats: each worker process writes a short-lived record of itself to Redis.

``/status`` lists the live ones, ETAs divide queued work by the workers on a
queue, and test fixtures wait for a worker's first beat (sent once its engine is
loaded) instead of sleeping.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis as redis_lib

from config import defaults
from service.keys import Keys


class WorkerRegistry:
    """Reads and writes worker heartbeat records."""

    def __init__(self, redis: redis_lib.Redis, keys: Keys, ttl: int = defaults.HEARTBEAT_TTL) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = int(ttl)

    def beat(self, name: str, info: dict[str, Any]) -> None:
        """Record that worker ``name`` is alive, with what it is doing."""
        now = time.time()
        record = {**info, "name": name, "seen_at": now, "ttl": self.ttl}
        # The index is scored by each worker's own expiry time: workers may run with different TTLs,
        # and a reader must never judge a slow-beating worker dead by its own, shorter TTL.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.worker(name), json.dumps(record), ex=self.ttl)
            pipe.zadd(self.keys.workers(), {name: now + self.ttl})
            pipe.zremrangebyscore(self.keys.workers(), "-inf", now)
            pipe.execute()

    def remove(self, name: str) -> None:
        """Forget a worker that is shutting down."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.worker(name))
            pipe.zrem(self.keys.workers(), name)
            pipe.execute()

    def get(self, name: str) -> dict[str, Any] | None:
        """One worker's last heartbeat, or None when it has not beaten within the TTL."""
        raw = self.redis.get(self.keys.worker(name))
        return json.loads(raw) if raw else None

    def live(self) -> list[dict[str, Any]]:
        """Every worker whose heartbeat has not expired, by name."""
        names = [n.decode() for n in self.redis.zrangebyscore(self.keys.workers(), time.time(), "+inf")]
        if not names:
            return []
        raws = self.redis.mget([self.keys.worker(n) for n in names])
        return sorted((json.loads(r) for r in raws if r), key=lambda w: w["name"])

    def count(self, queue: str) -> int:
        """Number of live workers consuming ``queue``."""
        return sum(1 for w in self.live() if queue in w.get("queues", ()))

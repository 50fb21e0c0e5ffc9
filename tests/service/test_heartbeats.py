"""Worker heartbeats on a real Redis: liveness is judged by each worker's own TTL."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from service.heartbeats import WorkerRegistry
from service.keys import Keys


@pytest.fixture
def keys() -> Keys:
    """Keys under a prefix of this test's own, so other tests' workers are not seen."""
    return Keys(f"hbtest-{uuid.uuid4().hex[:8]}")


def test_a_reader_with_a_short_ttl_does_not_bury_a_slow_beating_worker(
    redis_client: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = WorkerRegistry(redis_client, keys, ttl=30)
    fast = WorkerRegistry(redis_client, keys, ttl=3)
    slow.beat("slow@host:1", {"queues": ["cpu"]})
    fast.beat("fast@host:2", {"queues": ["crash"]})
    now = time.time()
    # Ten seconds on: the slow worker's beat is within its own 30 s TTL; the fast one has expired.
    monkeypatch.setattr(time, "time", lambda: now + 10)
    assert [w["name"] for w in fast.live()] == ["slow@host:1"]
    assert fast.count("cpu") == 1 and fast.count("crash") == 0
    # Past the slow worker's TTL it is gone for every reader.
    monkeypatch.setattr(time, "time", lambda: now + 31)
    assert slow.live() == [] and fast.live() == []


def test_beat_get_and_remove(redis_client: Any, keys: Keys) -> None:
    registry = WorkerRegistry(redis_client, keys, ttl=30)
    registry.beat("w@host:1", {"queues": ["cpu"], "engine_ready": True})
    beat = registry.get("w@host:1")
    assert beat is not None and beat["engine_ready"] is True and beat["ttl"] == 30
    assert 0 < redis_client.ttl(keys.worker("w@host:1")) <= 30
    registry.remove("w@host:1")
    assert registry.get("w@host:1") is None and registry.live() == []

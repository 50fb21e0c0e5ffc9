"""Giving way between lanes: claims are counted against the messages kombu really queued."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from config import defaults
from service import lanes
from service.services import Services
from service.task_names import SYNTHESIZE

#: A queue no worker consumes, so the messages stay where kombu put them.
QUEUE = "lanes-idle"


@pytest.fixture
def svc(settings: Any) -> Iterator[Services]:
    services = Services(dataclasses.replace(settings, queue=QUEUE))
    services.redis.delete(*lanes.higher_lanes(QUEUE), services.keys.yielding(QUEUE))
    yield services
    services.redis.delete(*lanes.higher_lanes(QUEUE), services.keys.yielding(QUEUE))
    services.close()


def _send(svc: Services, priority: str) -> None:
    svc.send_task(SYNTHESIZE, ["0" * 32], queue=QUEUE, priority=defaults.PRIORITIES[priority])


def test_nothing_waiting_means_no_worker_gives_way(svc: Services) -> None:
    _send(svc, "low")  # bulk work of its own lane does not count
    assert lanes.waiting_above(svc, QUEUE) == 0
    assert lanes.claim_yield(svc, QUEUE, "w1") is False


def test_one_waiting_job_stops_one_worker_not_two(svc: Services) -> None:
    _send(svc, "normal")
    assert lanes.waiting_above(svc, QUEUE) == 1
    assert lanes.claim_yield(svc, QUEUE, "w1") is True
    assert lanes.claim_yield(svc, QUEUE, "w2") is False  # w1 already gives way for it
    _send(svc, "high")  # a second job: a second worker may give way
    assert lanes.waiting_above(svc, QUEUE) == 2
    assert lanes.claim_yield(svc, QUEUE, "w2") is True
    assert lanes.claim_yield(svc, QUEUE, "w3") is False


def test_a_released_claim_frees_the_next_worker(svc: Services) -> None:
    _send(svc, "normal")
    assert lanes.claim_yield(svc, QUEUE, "w1") is True
    lanes.release_yield(svc, QUEUE, "w1")  # w1 started a job; one message still waits
    assert lanes.claim_yield(svc, QUEUE, "w2") is True
    # A worker asking again renews its own claim rather than counting against itself.
    assert lanes.claim_yield(svc, QUEUE, "w2") is True


def test_higher_lanes_are_kombus_lists_above_the_low_step() -> None:
    above_low = [s for s in defaults.PRIORITY_STEPS if s < defaults.PRIORITIES["low"]]
    assert above_low == [0, 1, 3, 4], "high, its overflow, normal, its overflow"
    assert lanes.higher_lanes("cpu") == ["cpu", *(f"cpu\x06\x16{s}" for s in above_low[1:])]
    assert lanes.higher_lanes("cpu", than="normal", broker_prefix="p:") == ["p:cpu", "p:cpu\x06\x161"]

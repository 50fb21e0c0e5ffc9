"""``/readyz``: green only once a live worker's heartbeat says its engine is loaded; ``/status`` agrees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import Settings
from tests.fixtures.durability import isolated_settings


@pytest.fixture
def fresh(settings: Settings) -> Iterator[Any]:
    """The app on a deployment of its own (no worker has ever beaten there)."""
    from app import create_app

    application = create_app(isolated_settings(settings))
    yield application
    application.extensions["spool"].close()


def test_readyz_is_503_until_a_worker_has_its_engine_loaded_then_200(fresh: Any) -> None:
    client = fresh.test_client()
    registry = fresh.extensions["spool"].workers
    assert client.get("/healthz").status_code == 200  # alive all along
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["ready"] is False and "No worker" in answer.get_json()["message"]
    # A worker that is up but still loading its model is not enough.
    registry.beat("loading@host:1", {"queues": ["cpu"], "engine_ready": False})
    assert client.get("/readyz").status_code == 503
    assert client.get("/status").get_json()["ready"] is False
    registry.beat("warm@host:2", {"queues": ["cpu"], "engine_ready": True})
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 200
        assert answer.get_json()["workers_ready"] == ["warm@host:2"]
        assert client.get("/status").get_json()["ready"] is True
    finally:
        registry.remove("warm@host:2")
        registry.remove("loading@host:1")
    assert client.get("/readyz").status_code == 503  # the warm worker left

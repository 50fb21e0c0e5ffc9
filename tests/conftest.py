"""Shared fixtures: the real model, loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Service fixtures (Redis db, S3 endpoint, Celery worker) live in their own plugin module.
pytest_plugins = ["tests.fixtures.service"]


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """Directory holding the assembled model, vocabulary and voices (``spool models fetch``)."""
    return Path(os.environ.get("SPOOL_ASSETS_DIR", Path.home() / ".cache" / "spool")).expanduser()


@pytest.fixture(scope="session")
def engine(assets_dir: Path):
    """One warm Kokoro engine for the whole test session (two intra-op threads)."""
    from engine import Engine

    return Engine.from_assets(assets_dir, threads=2)

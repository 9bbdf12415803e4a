"""Shared fixtures: the demo repository built once per run into a temporary cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo repository, built into a cache private to this test run."""
    cache = tmp_path_factory.mktemp("inferd-cache")
    old = os.environ.get("INFERD_CACHE_DIR")
    os.environ["INFERD_CACHE_DIR"] = str(cache)
    try:
        from inferd.demo import demo_repository

        yield demo_repository()
    finally:
        if old is None:
            os.environ.pop("INFERD_CACHE_DIR", None)
        else:
            os.environ["INFERD_CACHE_DIR"] = old

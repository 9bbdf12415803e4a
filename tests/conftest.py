"""Shared fixtures: the demo repository built once per run into a temporary cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Training the demo LLM takes minutes: tests that want it turn it on themselves.
os.environ.setdefault("INFERD_DEMO_LLM", "0")


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo repository, built into a cache private to this test run.

    Without the demo LLM (``INFERD_DEMO_LLM=0``): training it takes minutes, and
    tests/unit/test_demo_llm.py builds its own with a budget of seconds.
    """
    settings = {
        "INFERD_CACHE_DIR": str(tmp_path_factory.mktemp("inferd-cache")),
        "INFERD_DEMO_LLM": "0",
    }
    old = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        from inferd.demo import demo_repository

        yield demo_repository()
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

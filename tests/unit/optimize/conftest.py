"""Every optimize test caches what it makes (the held-out digits) in a folder of this run."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inferd-cache"))

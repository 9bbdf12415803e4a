"""Defaults taken from the environment: the only module of inferd that reads it."""

from __future__ import annotations

import math
import os
from pathlib import Path

from inferd.errors import ConfigError


def default_host() -> str:
    """The address to listen on: ``INFERD_HOST`` or loopback."""
    return os.environ.get("INFERD_HOST", "127.0.0.1")


def default_port() -> int:
    """The port to listen on: ``INFERD_PORT`` or 8000."""
    return int(os.environ.get("INFERD_PORT", "8000"))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. under taskset or a container quota)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cache_dir() -> Path:
    """Where inferd caches what it builds (the demo repository): ``INFERD_CACHE_DIR``."""
    base = os.environ.get("INFERD_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "inferd"


def demo_llm_enabled() -> bool:
    """Whether the demo repository includes the LLM it trains on first start: ``INFERD_DEMO_LLM``.

    On by default (it needs the torch extra and transformers); ``0`` (or ``false``, ``no``,
    ``off``) leaves it out, saving the minutes its first training takes.
    """
    value = os.environ.get("INFERD_DEMO_LLM", "1").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"INFERD_DEMO_LLM = {value!r}: expected 1 or 0")


def demo_llm_train_seconds() -> float:
    """How long the demo LLM trains when first built: ``INFERD_DEMO_LLM_TRAIN_S`` (180 s).

    Part of the demo's cache tag, so a new budget trains (and caches) a new model.
    """
    raw = os.environ.get("INFERD_DEMO_LLM_TRAIN_S", "180")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise ConfigError(f"INFERD_DEMO_LLM_TRAIN_S = {raw!r}: expected seconds > 0")
    return seconds

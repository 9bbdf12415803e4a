"""The built-in demo model repository that ``inferd serve`` serves when given no path.

It is built on first use into ``cache_dir() / "demo" / <tag>`` and reused afterwards. The tag
names the demo version and the library versions the files depend on, so upgrading scikit-learn
or torch (or installing torch into a slim install) builds a fresh copy beside the old one. With
torch and transformers installed it also holds ``tiny_llama``, an LLM trained on first start for
``INFERD_DEMO_LLM_TRAIN_S`` seconds (``INFERD_DEMO_LLM=0`` leaves it out); the budget is part of
the tag, so a longer-trained model is cached beside a shorter-trained one, not mistaken for it.
A build goes into a temporary folder that is renamed into place only when complete, under a
file lock, so a crash never leaves a half-built repository and concurrent builders do not clash.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from inferd.config import cache_dir, demo_llm_enabled, demo_llm_train_seconds
from inferd.demo.data import held_out_digits

__all__ = ["DEMO_VERSION", "demo_repository", "held_out_digits", "version_tag"]

DEMO_VERSION: Final = 4
"""Bump whenever a demo model or its config changes, so old caches are not reused."""
LLM_PACKAGES: Final = ("torch", "transformers", "tokenizers", "jinja2")
"""What training the demo LLM needs (the slim install has none of them)."""

logger = logging.getLogger("inferd.demo")


def demo_repository(rebuild: bool = False) -> Path:
    """The demo repository's folder, built first if absent (or if ``rebuild``)."""
    target: Path = cache_dir() / "demo" / version_tag()
    if target.is_dir() and not rebuild:
        logger.info("using demo model repository %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target.parent / f".{target.name}.lock") as exclusive:
        # Another process may have built it while this one waited for the lock.
        if target.is_dir() and not rebuild:
            logger.info("using demo model repository %s (built by another process)", target)
            return target
        if exclusive:
            _remove_debris(target)
        _build(target)
    return target


def version_tag() -> str:
    """The cache folder's name: demo version, scikit-learn and torch versions, LLM budget."""
    torch = _version("torch")
    torch_part = f"torch{torch}" if torch else "notorch"
    return f"v{DEMO_VERSION}-sklearn{_version('scikit-learn')}-{torch_part}{_llm_part()}"


def _llm_part() -> str:
    """``-llm180s`` when the demo LLM is built, else empty."""
    if not (demo_llm_enabled() and all(_version(p) for p in LLM_PACKAGES)):
        return ""
    return f"-llm{demo_llm_train_seconds():g}s"


def _version(package: str) -> str | None:
    try:
        # A local tag such as "+cpu" does not change what torch.export writes.
        return importlib.metadata.version(package).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def _build(target: Path) -> None:
    from inferd.demo.build import build_repository

    logger.info("building demo model repository %s", target)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the repository is ordinary data
        _on_passing_thread(build_repository, staging)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built demo model repository in %.1f s", time.perf_counter() - start)


def _on_passing_thread(work: Callable[[Path], object], folder: Path) -> None:
    """Run ``work(folder)`` on a thread that ends with it, raising what it raised.

    Training and exporting run torch's parallel code, and torch's OpenMP keeps a pool of
    worker threads for each thread that did so, for as long as that thread lives. Left on the
    caller's thread (the server's main thread), that pool would slow every step of an LLM
    engine served from the same process (``llm/async_engine.py`` says how).
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work(folder)
        except BaseException as exc:  # re-raised on the caller's thread below
            errors.append(exc)

    # A daemon, so that Ctrl-C during a first build ends the process instead of waiting.
    thread = threading.Thread(target=run, name="inferd-demo-build", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _remove_debris(target: Path) -> None:
    """Delete staging folders left by a builder that was killed (safe only under the lock)."""
    for debris in target.parent.glob(f".{target.name}.*"):
        if debris.is_dir():
            logger.info("removing %s, left by an interrupted build", debris)
            shutil.rmtree(debris, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Rename the finished build into place, moving any old build aside first."""
    old = staging.with_suffix(".old") if target.is_dir() else None
    if old is not None:
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        # Without a file lock (no fcntl) a concurrent builder can win: the first rename stands.
        if not target.is_dir():
            raise
        logger.info("another process built %s first; using that one", target)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False where there is no fcntl (no lock)."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)

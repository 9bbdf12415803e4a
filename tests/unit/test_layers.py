"""The import graph is a stack of layers (docs/architecture.md): checked by walking the AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "inferd"

# Lower number = lower layer. A module may import only its own layer or lower ones.
LAYERS: dict[str, int] = {
    "version": 0, "errors": 0, "clock": 0, "datatypes": 0, "config": 0, "signature": 0,
    "metrics": 0, "gc_tuning": 0, "interrupts": 0,
    "backends": 1, "llm": 1, "repository": 1, "demo": 1, "optimize": 1,
    "batching": 2,
    "replicas": 3,
    "server": 4, "jobs": 4,
    "bench": 5, "tune": 5,
    "cli": 6, "__main__": 6, "__init__": 6,
}  # fmt: skip

# The hard logic stays pure: no torch, no asyncio, no threads or processes.
PURE = [
    "llm/sequence.py", "llm/kv_cache.py", "llm/scheduler.py", "llm/sampling_params.py",
    "batching/policy.py", "batching/queue.py", "batching/slo.py", "batching/simulation.py",
    "replicas/router.py", "replicas/autoscaler.py", "metrics/window.py",
    "jobs/manifest.py", "jobs/tuning.py", "jobs/progress.py",
    "bench/schedule.py", "bench/stats.py",
    "tune/search.py", "tune/space.py", "tune/ramp.py", "tune/measurement.py", "tune/confirm.py",
]  # fmt: skip
IMPURE = {"torch", "asyncio", "threading", "multiprocessing", "concurrent", "numpy"}

# torch may be imported only where the model math lives.
TORCH_ALLOWED = (
    "backends/torch_backend.py",
    "backends/torch_packing.py",
    "llm/",
    "demo/torch_models.py",
    "demo/llm.py",
    "optimize/torch_quant.py",
)


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _top(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_flow_down_the_layers(path: Path) -> None:
    layer = LAYERS[_top(path)]
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "inferd":
            continue
        assert len(parts) > 1 or _top(path) == "__main__", f"{path.name} imports the package root"
        target = LAYERS[parts[1]]
        assert target <= layer, f"{path.relative_to(SRC)} (layer {layer}) imports {name} ({target})"


@pytest.mark.parametrize("rel", PURE)
def test_pure_modules_import_no_runtime(rel: str) -> None:
    for name in _imports(SRC / rel):
        assert name.split(".")[0] not in IMPURE, f"{rel} imports {name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_torch_only_where_the_model_math_lives(path: Path) -> None:
    rel = str(path.relative_to(SRC))
    if any(rel.startswith(allowed) for allowed in TORCH_ALLOWED):
        return
    assert "torch" not in {n.split(".")[0] for n in _imports(path)}, f"{rel} imports torch"


def test_every_autoscaler_reason_has_a_metric_label() -> None:
    from inferd.metrics.instruments import SCALING_REASONS
    from inferd.replicas.autoscaler import REASONS
    from inferd.replicas.scaling import _METRIC_REASONS

    changing = {r for r in REASONS if not r.startswith(("waiting", "at_", "steady"))}
    assert changing <= set(_METRIC_REASONS)
    assert set(_METRIC_REASONS.values()) <= set(SCALING_REASONS)

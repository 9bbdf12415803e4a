"""Serving a tensor model at lower precision: bf16, fp16 or int8, with a measured report.

``precision`` in ``model.toml`` converts the model when it loads; ``inferd optimize`` does the
same ahead of time and prints the report (size, same-run speed ratio, accuracy agreement).
Importing this package is cheap: torch and onnxruntime are imported when a model needs them.
"""

from inferd.optimize.optimizer import (
    Optimized,
    OptimizedBackend,
    create_optimized_backend,
    optimize_model,
)
from inferd.optimize.precision import check_supported, is_optimized_copy
from inferd.optimize.report import OptimizationReport

__all__ = [
    "OptimizationReport",
    "Optimized",
    "OptimizedBackend",
    "check_supported",
    "create_optimized_backend",
    "is_optimized_copy",
    "optimize_model",
]

"""``inferd bench``: load any server speaking the Open Inference Protocol or the OpenAI API.

The public API (stable; ``inferd tune`` calls it)::

    result = run_bench(BenchSpec(url="http://127.0.0.1:8000", model="echo", concurrency=8))
    result.throughput_rps, result.latency_ms["p99"], result.to_json()
"""

from inferd.bench.report import format_comparison, format_result
from inferd.bench.result import BenchResult, load_result, save_result
from inferd.bench.runner import run_bench
from inferd.bench.spec import BenchSpec

__all__ = [
    "BenchResult",
    "BenchSpec",
    "format_comparison",
    "format_result",
    "load_result",
    "run_bench",
    "save_result",
]

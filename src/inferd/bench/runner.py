"""``run_bench``: prepare the requests, run the generators, summarize."""

from __future__ import annotations

from inferd.bench.llm_stream import openai_payload
from inferd.bench.protocols import Payload
from inferd.bench.result import BenchResult, build_result
from inferd.bench.spec import BenchSpec
from inferd.bench.tensors import kserve_payload
from inferd.bench.workers import generate


def build_payload(spec: BenchSpec) -> Payload:
    """The run's prebuilt requests for the spec's API (may ask the server for metadata)."""
    return openai_payload(spec) if spec.api == "openai" else kserve_payload(spec)


def run_bench(spec: BenchSpec) -> BenchResult:
    """Run one load test and return what it measured. Synchronous: it runs its own event
    loop (in a thread if the caller's thread has one) and its own processes.

    Raises ``ConfigError`` for a bad input file or shape, ``NotFound`` when the model's
    metadata is not there, ``InferdError`` when the server cannot be reached for it. Errors
    during the run are not raised: they are counted by kind in the result.
    """
    payload = build_payload(spec)
    return build_result(spec, payload, generate(spec, payload))

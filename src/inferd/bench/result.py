"""A run's outcome: ``BenchResult``, built from the generators' samples; JSON in and out."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from inferd.bench.protocols import Payload
from inferd.bench.samples import Samples, merge
from inferd.bench.spec import BenchSpec
from inferd.bench.stats import count_within, summarize
from inferd.errors import ConfigError

SATURATED_CPU: Final = 0.8
"""Above this share of its CPU, a generator process may be what limits the measurement."""
STARVED_WAIT: Final = 0.25
"""Above this share of the wall time spent waiting for a CPU, a generator reads answers late."""
LATE_SEND_MS: Final = 5.0
"""Open loop: a p99 send lag above this says the generator could not keep its schedule."""


@dataclass(frozen=True)
class BenchResult:
    """What a run measured. Latencies in ms (nearest-rank percentiles, NaN when none),
    rates per second over the measured window; the LLM fields are None for KServe runs."""

    spec: BenchSpec
    num_ok: int
    num_errors: int
    errors: dict[str, int]
    duration_s: float
    throughput_rps: float
    goodput_rps: float | None
    latency_ms: dict[str, float]
    rows_per_s: float
    generator_cpu: float
    ttft_ms: dict[str, float] | None = None
    itl_ms: dict[str, float] | None = None
    output_tokens_per_s: float | None = None
    rows_per_request: int = 1
    num_warmup: int = 0
    offered_rps: float | None = None
    send_lag_ms: dict[str, float] | None = None
    generator_wait: float | None = None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null); ``from_json`` reads it back."""
        data = dataclasses.asdict(self)
        data["warnings"] = list(self.warnings)
        return _nan_to_none(data)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        """The result ``to_json`` wrote."""
        spec_data = dict(data["spec"])
        spec_data["shapes"] = tuple((n, tuple(s)) for n, s in spec_data.get("shapes", ()))
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: _none_to_nan(k, v) for k, v in data.items() if k in fields}
        values["spec"] = BenchSpec(**spec_data)
        values["warnings"] = tuple(data.get("warnings", ()))
        return cls(**values)


def save_result(result: BenchResult, path: Path) -> None:
    """Write the result as indented JSON."""
    path.write_bytes(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2) + b"\n")


def load_result(path: Path) -> BenchResult:
    """Read a result written by ``save_result`` (``inferd bench --json``)."""
    try:
        return BenchResult.from_json(orjson.loads(path.read_bytes()))
    except OSError as e:
        raise ConfigError(f"bench: --compare {path}: cannot read it ({e.strerror})") from None
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"bench: --compare {path}: not a bench result ({e})") from None


def build_result(spec: BenchSpec, payload: Payload, parts: list[Samples]) -> BenchResult:
    """Summarize the processes' samples into the result of the run."""
    total = merge(parts)
    window = max(total.window_end - total.window_start, 1e-9)
    throughput = total.num_ok / window
    goodput = None
    if spec.slo_ms is not None:
        goodput = count_within(total.latencies_ms, spec.slo_ms) / window
    streaming = payload.streaming
    return BenchResult(
        spec=spec,
        num_ok=total.num_ok,
        num_errors=sum(total.errors.values()),
        errors=dict(sorted(total.errors.items())),
        duration_s=window,
        throughput_rps=throughput,
        goodput_rps=goodput,
        latency_ms=summarize(total.latencies_ms),
        rows_per_s=throughput * payload.rows,
        generator_cpu=total.cpu_fraction,
        generator_wait=total.wait_fraction,
        ttft_ms=summarize(total.ttft_ms) if streaming else None,
        itl_ms=summarize(total.itl_ms) if streaming else None,
        output_tokens_per_s=total.output_tokens / window if streaming else None,
        rows_per_request=payload.rows,
        num_warmup=total.num_warmup,
        offered_rps=total.num_scheduled / spec.duration_s if spec.open_loop else None,
        send_lag_ms=summarize(total.send_lag_ms) if spec.open_loop else None,
        warnings=payload.notes + _warnings(spec, total, parts),
    )


def _warnings(spec: BenchSpec, total: Samples, parts: list[Samples]) -> tuple[str, ...]:
    found = []
    busiest = max(p.cpu_fraction for p in parts)
    if busiest > SATURATED_CPU:
        found.append(
            f"generator saturated: a generator process used {busiest:.0%} of a CPU; the "
            f"figures may measure the generator, not the server (try --processes "
            f"{spec.processes + 1}, or a machine with more cores)"
        )
    starved = max((p.wait_fraction or 0.0 for p in parts), default=0.0)
    if starved > STARVED_WAIT:
        found.append(
            f"generator starved: a generator process waited for a CPU {starved:.0%} of the "
            "time (other processes hold its cores); answers sat unread meanwhile, so its "
            "latencies include that wait"
        )
    lag_p99 = summarize(total.send_lag_ms)["p99"]
    if spec.open_loop and lag_p99 > LATE_SEND_MS:
        found.append(
            f"generator late: p99 send lag {lag_p99:.1f} ms behind the schedule (its latency "
            "is billed to the server)"
        )
    if total.errors.get("client overloaded"):
        found.append(
            f"client overloaded: {total.errors['client overloaded']} arrivals not sent "
            f"(--max-outstanding {spec.max_outstanding} requests already in flight)"
        )
    if total.num_ok == 0:
        found.append("no request succeeded")
    return tuple(found)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def _none_to_nan(key: str, value: Any) -> Any:
    if isinstance(value, dict) and key != "errors":
        return {k: math.nan if v is None else v for k, v in value.items()}
    return value

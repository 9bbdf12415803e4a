"""One LLM's metrics: latency per token, tokens in and out, the engine's gauges, and cost.

The front end observes what a client sees (time to first token, inter-token latency, request
outcomes, tokens); the engine's own state (running and waiting sequences, KV cache use,
preemptions, prefix cache hits) is read at scrape time from a snapshot function the served
LLM installs, so nothing is pushed per engine step. Names and meanings: ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from inferd.clock import Clock
from inferd.metrics.cost import CostMeter
from inferd.metrics.instruments import LATENCY_BUCKETS, Histogram
from inferd.metrics.window import SlidingWindow

LLM_OUTCOMES = ("success", "client_error", "model_error", "cancelled", "unavailable")
TOKEN_BUCKETS = tuple(float(4**i) for i in range(9))  # 1 .. 65,536 tokens
# Inter-token latency is usually milliseconds: finer buckets below 100 ms than LATENCY_BUCKETS.
ITL_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

EngineSnapshot = Callable[[], Mapping[str, float]]
"""Returns the engine's ``num_running``, ``num_waiting``, ``kv_cache_usage``,
``kv_token_usage``, ``num_preemptions``, ``prefix_cache_queries`` and ``prefix_cache_hits``."""


class LLMMetrics:
    """One LLM's metrics; get it from ``ServerMetrics.llm(name)``."""

    def __init__(
        self, name: str, clock: Clock, *, window_s: int = 10, price_per_hour: float = 0.0
    ) -> None:
        self.name = name
        self._clock = clock
        start = clock.now()
        self.cost = CostMeter(price_per_hour, clock, window_s)
        """Counts every token, prompt and output: the cost per 1M tokens processed."""
        self.output_cost = CostMeter(price_per_hour, clock, window_s)
        """Counts output tokens only: the cost per 1M tokens generated."""
        self._prompt_rate = SlidingWindow(window_s, start)
        self._output_rate = SlidingWindow(window_s, start)
        self._outcomes = dict.fromkeys(LLM_OUTCOMES, 0)
        self._prompt_tokens = 0
        self._output_tokens = 0
        self._ttft = Histogram(LATENCY_BUCKETS)
        self._itl = Histogram(ITL_BUCKETS)
        self._e2e = Histogram(LATENCY_BUCKETS)
        self._prompt_len = Histogram(TOKEN_BUCKETS)
        self._output_len = Histogram(TOKEN_BUCKETS)
        self.engine_snapshot: EngineSnapshot | None = None

    def set_replicas(self, n: int) -> None:
        """The engine is up (1) or down (0): what the bill runs on."""
        self.cost.set_replicas(n)
        self.output_cost.set_replicas(n)

    # ---- per token and per request (the event loop) ----

    def observe_first_token(self, seconds: float) -> None:
        """The first output token of a sequence arrived ``seconds`` after the request."""
        self._ttft.observe(seconds)
        self._count_output(1)

    def observe_token(self, gap_s: float) -> None:
        """A later output token of a sequence arrived ``gap_s`` after the one before."""
        self._itl.observe(gap_s)
        self._count_output(1)

    def observe_request(
        self, outcome: str, prompt_tokens: int, output_tokens: int, seconds: float
    ) -> None:
        """A request ended: its outcome, its sizes and its latency from arrival to the end."""
        self._outcomes[outcome] += 1
        self._e2e.observe(seconds)
        self._prompt_len.observe(prompt_tokens)
        self._output_len.observe(output_tokens)

    def count_prompt(self, prompt_tokens: int) -> None:
        """A request's prompt entered the engine."""
        now = self._clock.now()
        self._prompt_tokens += prompt_tokens
        self._prompt_rate.add(now, prompt_tokens)
        self.cost.add_inferences(prompt_tokens)

    def _count_output(self, num_tokens: int) -> None:
        now = self._clock.now()
        self._output_tokens += num_tokens
        self._output_rate.add(now, num_tokens)
        self.cost.add_inferences(num_tokens)
        self.output_cost.add_inferences(num_tokens)

    # ---- reading ----

    @property
    def prompt_tokens_total(self) -> int:
        return self._prompt_tokens

    @property
    def output_tokens_total(self) -> int:
        return self._output_tokens

    def outcome_count(self, outcome: str) -> int:
        return self._outcomes[outcome]

    def export(self, out: LLMExposition) -> None:
        """Add this model's samples to one scrape's families."""
        n, now = self.name, self._clock.now()
        for outcome, count in self._outcomes.items():
            out.requests.add_metric([n, outcome], count)
        out.prompt_tokens.add_metric([n], self._prompt_tokens)
        out.generation_tokens.add_metric([n], self._output_tokens)
        out.prompt_tokens_per_s.add_metric([n], self._prompt_rate.rate(now))
        out.generation_tokens_per_s.add_metric([n], self._output_rate.rate(now))
        for family, histogram in (
            (out.ttft, self._ttft),
            (out.itl, self._itl),
            (out.e2e, self._e2e),
            (out.prompt_len, self._prompt_len),
            (out.output_len, self._output_len),
        ):
            family.add_metric([n], histogram.buckets(), histogram.sum)
        out.cost.add_metric([n], self.cost.cost_total())
        out.price_per_hour.add_metric([n], self.cost.price_per_hour)
        per_million = self.cost.cost_per_million()
        if per_million is not None:
            out.cost_per_million_tokens.add_metric([n], per_million)
        per_million = self.output_cost.cost_per_million()
        if per_million is not None:
            out.cost_per_million_output_tokens.add_metric([n], per_million)
        self._export_engine(out)

    def _export_engine(self, out: LLMExposition) -> None:
        if self.engine_snapshot is None:
            return
        n, s = self.name, self.engine_snapshot()
        out.running.add_metric([n], s["num_running"])
        out.waiting.add_metric([n], s["num_waiting"])
        out.kv_cache_usage.add_metric([n], s["kv_cache_usage"])
        out.kv_token_usage.add_metric([n], s["kv_token_usage"])
        out.preemptions.add_metric([n], s["num_preemptions"])
        out.prefix_queries.add_metric([n], s["prefix_cache_queries"])
        out.prefix_hits.add_metric([n], s["prefix_cache_hits"])
        if s["prefix_cache_queries"]:
            ratio = s["prefix_cache_hits"] / s["prefix_cache_queries"]
            out.prefix_hit_ratio.add_metric([n], ratio)


def _counter(name: str, help_text: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, labels=["model", *labels])


def _gauge(name: str, help_text: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, labels=["model"])


def _histogram(name: str, help_text: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, help_text, labels=["model"])


@dataclass(slots=True)
class LLMExposition:
    """The LLM families of one scrape, each labelled by ``model`` first."""

    requests: CounterMetricFamily
    prompt_tokens: CounterMetricFamily
    generation_tokens: CounterMetricFamily
    prompt_tokens_per_s: GaugeMetricFamily
    generation_tokens_per_s: GaugeMetricFamily
    ttft: HistogramMetricFamily
    itl: HistogramMetricFamily
    e2e: HistogramMetricFamily
    prompt_len: HistogramMetricFamily
    output_len: HistogramMetricFamily
    running: GaugeMetricFamily
    waiting: GaugeMetricFamily
    kv_cache_usage: GaugeMetricFamily
    kv_token_usage: GaugeMetricFamily
    preemptions: CounterMetricFamily
    prefix_queries: CounterMetricFamily
    prefix_hits: CounterMetricFamily
    prefix_hit_ratio: GaugeMetricFamily
    cost: CounterMetricFamily
    cost_per_million_tokens: GaugeMetricFamily
    cost_per_million_output_tokens: GaugeMetricFamily
    price_per_hour: GaugeMetricFamily

    def families(self) -> list[Metric]:
        return [getattr(self, f.name) for f in fields(self)]


def new_llm_exposition() -> LLMExposition:
    """Empty families, ready for each LLM to add its samples."""
    return LLMExposition(
        requests=_counter("inferd_llm_requests", "LLM requests by outcome.", "outcome"),
        prompt_tokens=_counter("inferd_llm_prompt_tokens", "Prompt tokens received."),
        generation_tokens=_counter("inferd_llm_generation_tokens", "Output tokens sent."),
        prompt_tokens_per_s=_gauge(
            "inferd_llm_prompt_tokens_per_second", "Prompt tokens per second, window."
        ),
        generation_tokens_per_s=_gauge(
            "inferd_llm_generation_tokens_per_second", "Output tokens per second, window."
        ),
        ttft=_histogram("inferd_llm_time_to_first_token_seconds", "Arrival to first output token."),
        itl=_histogram("inferd_llm_inter_token_latency_seconds", "Time between output tokens."),
        e2e=_histogram("inferd_llm_request_duration_seconds", "Arrival to the last token."),
        prompt_len=_histogram("inferd_llm_request_prompt_tokens", "Prompt tokens per request."),
        output_len=_histogram("inferd_llm_request_generation_tokens", "Output tokens per request."),
        running=_gauge("inferd_llm_running_requests", "Sequences in the running batch."),
        waiting=_gauge("inferd_llm_waiting_requests", "Sequences waiting for admission."),
        kv_cache_usage=_gauge("inferd_llm_kv_cache_usage_ratio", "KV blocks in use / blocks."),
        kv_token_usage=_gauge(
            "inferd_llm_kv_cache_token_usage_ratio", "KV slots holding tokens / slots."
        ),
        preemptions=_counter("inferd_llm_preemptions", "Sequences preempted (recomputed)."),
        prefix_queries=_counter(
            "inferd_llm_prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        ),
        prefix_hits=_counter(
            "inferd_llm_prefix_cache_hits", "Prompt tokens whose KV the prefix cache supplied."
        ),
        prefix_hit_ratio=_gauge(
            "inferd_llm_prefix_cache_hit_ratio", "Prefix cache hits / queries, since start."
        ),
        cost=_counter("inferd_llm_cost", "Currency units spent on the engine so far."),
        cost_per_million_tokens=_gauge(
            "inferd_llm_cost_per_million_tokens", "Window cost / window tokens (in + out) x 1e6."
        ),
        cost_per_million_output_tokens=_gauge(
            "inferd_llm_cost_per_million_output_tokens", "Window cost / window output tokens x 1e6."
        ),
        price_per_hour=_gauge("inferd_llm_price_per_hour", "Price of one engine-hour."),
    )


class LLMCollector:
    """Builds every LLM family from the models' state at scrape time."""

    def __init__(self, models: Mapping[str, LLMMetrics]) -> None:
        self._models = models

    def describe(self) -> Iterable[Metric]:
        return new_llm_exposition().families()

    def collect(self) -> Iterable[Metric]:
        out = new_llm_exposition()
        for model in list(self._models.values()):
            model.export(out)
        return out.families()

"""What a benchmark run does: one frozen, validated ``BenchSpec``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from inferd.errors import ConfigError

APIS: Final = ("kserve", "openai")


@dataclass(frozen=True)
class BenchSpec:
    """One load test against ``url``: closed loop (``concurrency``) or open loop (``rate``).

    Inputs: KServe requests are generated from the model's metadata (``rows`` per request,
    variable dims 1 unless ``shapes`` names them) or read from ``input_file`` (a JSON request
    body, or JSON Lines of several, cycled); ``binary`` sends Triton's binary tensor extension.
    OpenAI requests stream a prompt of about ``prompt_tokens`` words and ask ``max_tokens``.
    """

    url: str
    model: str
    api: str = "kserve"
    concurrency: int | None = 8
    rate: float | None = None
    duration_s: float = 10.0
    warmup_s: float = 2.0
    num_requests: int | None = None
    slo_ms: float | None = None
    processes: int = 1
    timeout_s: float = 30.0
    # open loop
    rate_end: float | None = None
    max_outstanding: int = 1024
    seed: int = 0
    # KServe inputs
    input_file: str | None = None
    rows: int = 1
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    binary: bool = False
    # OpenAI inputs
    chat: bool = False
    prompt_tokens: int = 128
    max_tokens: int = 64
    ignore_eos: bool = True

    def __post_init__(self) -> None:
        _check_target(self)
        _check_load(self)
        _check_inputs(self)

    @property
    def open_loop(self) -> bool:
        """True when requests arrive at ``rate`` whatever the server does."""
        return self.rate is not None

    def describe_load(self) -> str:
        """The load in words, e.g. ``closed loop, 8 clients``."""
        if self.rate is None:
            plural = "" if self.concurrency == 1 else "s"
            return f"closed loop, {self.concurrency} client{plural}"
        ramp = f" ramping to {self.rate_end:g}" if self.rate_end is not None else ""
        return f"open loop, Poisson {self.rate:g}/s{ramp}"


def _fail(key: str, flag: str, why: str) -> None:
    raise ConfigError(f"bench: {key} ({flag}) {why}")


def _check_target(spec: BenchSpec) -> None:
    parts = urlsplit(spec.url)
    if parts.scheme != "http" or not parts.hostname:
        _fail("url", "URL", f"must be an http:// URL with a host, not {spec.url!r}")
    if not spec.model:
        _fail("model", "--model", "must name the model to load")
    if spec.api not in APIS:
        _fail("api", "--api", f"must be one of {', '.join(APIS)}, not {spec.api!r}")


def _check_load(spec: BenchSpec) -> None:
    if (spec.concurrency is None) == (spec.rate is None):
        _fail("concurrency/rate", "--concurrency/--rate", "set exactly one of the two")
    if spec.concurrency is not None and spec.concurrency < 1:
        _fail("concurrency", "--concurrency", f"must be at least 1, not {spec.concurrency}")
    for key, flag, value in (
        ("rate", "--rate", spec.rate),
        ("rate_end", "--rate-end", spec.rate_end),
    ):
        if value is not None and not value > 0:
            _fail(key, flag, f"must be a positive number of requests per second, not {value}")
    if spec.rate_end is not None and spec.rate is None:
        _fail("rate_end", "--rate-end", "needs --rate (a ramp goes from --rate to --rate-end)")
    for key, flag, number in (
        ("duration_s", "--duration", spec.duration_s),
        ("timeout_s", "--timeout", spec.timeout_s),
    ):
        if not number > 0:
            _fail(key, flag, f"must be positive, not {number}")
    if not spec.warmup_s >= 0:
        _fail("warmup_s", "--warmup", f"must be zero or positive, not {spec.warmup_s}")
    _check_counts(spec)


def _check_counts(spec: BenchSpec) -> None:
    if spec.num_requests is not None and spec.num_requests < 1:
        _fail("num_requests", "--requests", f"must be at least 1, not {spec.num_requests}")
    if spec.slo_ms is not None and not spec.slo_ms > 0:
        _fail("slo_ms", "--slo-ms", f"must be positive, not {spec.slo_ms}")
    if spec.processes < 1:
        _fail("processes", "--processes", f"must be at least 1, not {spec.processes}")
    if spec.concurrency is not None and spec.processes > spec.concurrency:
        _fail("processes", "--processes", f"{spec.processes} exceeds --concurrency")
    if spec.max_outstanding < 1:
        _fail("max_outstanding", "--max-outstanding", "must be at least 1")


def _check_inputs(spec: BenchSpec) -> None:
    if spec.rows < 1:
        _fail("rows", "--rows", f"must be at least 1, not {spec.rows}")
    if spec.input_file is not None and spec.rows != 1:
        _fail("rows", "--rows", "cannot be combined with --input-file (its shapes give the rows)")
    for name, shape in spec.shapes:
        if not shape or any(d < 0 for d in shape):
            _fail("shapes", "--shape", f"{name}: dims must be zero or positive, not {shape}")
    if spec.prompt_tokens < 1:
        _fail("prompt_tokens", "--prompt-tokens", "must be at least 1")
    if spec.max_tokens < 1:
        _fail("max_tokens", "--max-tokens", "must be at least 1")
    if spec.api == "openai" and (spec.binary or spec.shapes or spec.rows != 1):
        _fail("api", "--api", "openai takes no --binary, --shape or --rows (KServe options)")

"""A batch job's options, validated once; errors name the command-line flag."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from inferd.errors import ConfigError, InvalidRequest
from inferd.jobs.formats import format_of
from inferd.llm.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Everything ``inferd batch`` was asked to do."""

    model: str
    """A model path (folder, file or repository), or with ``url`` the model's name."""
    input: Path
    output: Path
    model_name: str | None = None
    """``--model``: which model of a repository."""
    input_format: str | None = None
    output_format: str | None = None
    inputs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``--input NAME=COL,...`` overrides, in order."""
    id_column: str | None = None
    batch_size: int | None = None
    """None: chosen by measuring."""
    chunk_rows: int | None = None
    replicas: int | None = None
    price_per_hour: float | None = None
    url: str | None = None
    estimate: bool = False
    restart: bool = False
    max_rows_per_s: float | None = None
    progress: bool | None = None
    """None: a live bar on a terminal, a line every 10 s otherwise."""
    server_config: Path | None = None
    max_tokens: int = 128
    """LLM jobs: sampling (greedy by default, so that a resumed job repeats itself)."""
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    formats: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        _positive("--batch-size", self.batch_size)
        _positive("--chunk-rows", self.chunk_rows)
        _positive("--replicas", self.replicas)
        if self.price_per_hour is not None and not (
            math.isfinite(self.price_per_hour) and self.price_per_hour >= 0
        ):
            raise ConfigError(f"--price-per-hour {self.price_per_hour}: expected a number >= 0")
        if self.max_rows_per_s is not None and not self.max_rows_per_s > 0:
            raise ConfigError(f"--max-rows-per-s {self.max_rows_per_s}: expected a number > 0")
        if self.batch_size and self.chunk_rows and self.chunk_rows % self.batch_size:
            raise ConfigError(
                f"--chunk-rows {self.chunk_rows}: expected a multiple of --batch-size "
                f"{self.batch_size} (a chunk holds whole batches)"
            )
        if self.input.resolve() == self.output.resolve():
            raise ConfigError(f"-o {self.output}: the output would overwrite the input")
        if self.url is not None and self.replicas is not None:
            raise ConfigError("--replicas: the server at --url runs its own replicas")
        self.sampling_params()
        formats = (
            format_of(self.input, self.input_format, "--input-format"),
            format_of(self.output, self.output_format, "--output-format"),
        )
        object.__setattr__(self, "formats", formats)

    def sampling_params(self) -> SamplingParams:
        """The LLM sampling flags as ``SamplingParams``; ``ConfigError`` names the bad flag."""
        try:
            return SamplingParams(
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                seed=self.seed,
                stop=self.stop,
            )
        except InvalidRequest as e:
            flag = next((f for f in _SAMPLING_FLAGS if f.strip("-").replace("-", "_") in
                         e.message), "a sampling flag")  # fmt: skip
            raise ConfigError(f"{flag}: {e.message}") from None


_SAMPLING_FLAGS = ("--max-tokens", "--temperature", "--top-p", "--top-k", "--seed", "--stop")


def parse_input_mapping(values: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``["x=a,b", "y=c"]`` -> ``(("x", ("a", "b")), ("y", ("c",)))``."""
    parsed: dict[str, tuple[str, ...]] = {}
    for value in values:
        name, sep, columns = value.partition("=")
        cols = tuple(c.strip() for c in columns.split(",") if c.strip())
        if not sep or not name.strip() or not cols:
            raise ConfigError(f"--input {value}: expected NAME=COLUMN or NAME=COL1,COL2,...")
        if name.strip() in parsed:
            raise ConfigError(f"--input {value}: input {name.strip()!r} is mapped twice")
        parsed[name.strip()] = cols
    return tuple(parsed.items())


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} {value}: expected an integer >= 1")

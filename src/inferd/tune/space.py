"""The search space: named dimensions, each an ordered tuple of values, and candidate points.

A dimension names the setting it varies and where it lives in ``model.toml`` (a dotted key such
as ``batching.max_batch_size``), so the search stays generic: tensor models vary replicas, batch
size and queue delay; an LLM would vary its running sequences and token budget the same way.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

Value = int | float

INSTANCES: Final = "instances"
MAX_BATCH_SIZE: Final = "max_batch_size"
MAX_QUEUE_DELAY_MS: Final = "max_queue_delay_ms"
MAX_NUM_SEQS: Final = "max_num_seqs"
MAX_NUM_BATCHED_TOKENS: Final = "max_num_batched_tokens"
DEFAULT_DELAYS_MS: Final = (0.0, 1.0, 2.0, 5.0, 10.0)
DEFAULT_TOKEN_BUDGETS: Final = (256, 512, 1024, 2048, 4096)


@dataclass(frozen=True, slots=True)
class Dimension:
    """One setting the search varies: its name, its ``model.toml`` key and its values, ascending."""

    name: str
    toml_key: str
    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"dimension {self.name!r} has no values")
        if list(self.values) != sorted(set(self.values)):
            raise ValueError(f"dimension {self.name!r}: values must be distinct and ascending")

    def index(self, value: Value) -> int:
        """The position of ``value`` among the values."""
        return self.values.index(value)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One point of the space: a value per dimension, in the space's order."""

    items: tuple[tuple[str, Value], ...]

    def __getitem__(self, name: str) -> Value:
        for key, value in self.items:
            if key == name:
                return value
        raise KeyError(name)

    def with_value(self, name: str, value: Value) -> Candidate:
        """A copy with ``name`` set to ``value``."""
        if name not in self.as_dict():
            raise KeyError(name)
        return Candidate(tuple((k, value if k == name else v) for k, v in self.items))

    def as_dict(self) -> dict[str, Value]:
        """The values by dimension name."""
        return dict(self.items)

    def key(self) -> str:
        """A stable text key, e.g. ``instances=2,max_batch_size=16,max_queue_delay_ms=0``."""
        return ",".join(f"{name}={value:g}" for name, value in self.items)

    def replicas(self) -> int:
        """The replica count (1 for a space without an ``instances`` dimension)."""
        return int(self.as_dict().get(INSTANCES, 1))


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """The dimensions searched, outermost first."""

    dimensions: tuple[Dimension, ...]

    def __post_init__(self) -> None:
        names = [d.name for d in self.dimensions]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a search space needs distinct dimensions, got {names}")

    def dimension(self, name: str) -> Dimension:
        """The dimension called ``name``."""
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(name)

    def grid_size(self) -> int:
        """How many points a full grid search would try."""
        size = 1
        for dim in self.dimensions:
            size *= len(dim.values)
        return size

    def candidate(self, values: Mapping[str, Value]) -> Candidate:
        """The candidate with these values (each must be one of its dimension's)."""
        items = []
        for dim in self.dimensions:
            value = values[dim.name]
            if value not in dim.values:
                raise ValueError(f"{dim.name} = {value}: not one of {list(dim.values)}")
            items.append((dim.name, value))
        return Candidate(tuple(items))

    def first(self) -> Candidate:
        """The candidate with every dimension at its smallest value."""
        return Candidate(tuple((d.name, d.values[0]) for d in self.dimensions))

    def restrict(self, name: str, keep: Iterable[Value]) -> SearchSpace:
        """A copy whose dimension ``name`` keeps only the values in ``keep`` (at least one)."""
        kept = set(keep)
        dims = []
        for dim in self.dimensions:
            if dim.name == name:
                values = tuple(v for v in dim.values if v in kept) or dim.values[:1]
                dim = Dimension(dim.name, dim.toml_key, values)
            dims.append(dim)
        return SearchSpace(tuple(dims))


def powers_of_two(limit: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``limit``, and ``limit`` itself when it is not a power of two."""
    if limit < 1:
        raise ValueError(f"limit = {limit}: expected an integer >= 1")
    sizes = [1]
    while sizes[-1] * 2 <= limit:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != limit:
        sizes.append(limit)
    return tuple(sizes)


def tensor_space(
    max_replicas: int, max_batch_size: int, delays_ms: Iterable[float] = DEFAULT_DELAYS_MS
) -> SearchSpace:
    """Replicas 1..max_replicas, batch sizes in powers of two, and the queue delays given;
    replicas alone for a model without a batch axis (``max_batch_size`` 0)."""
    if max_replicas < 1:
        raise ValueError(f"max_replicas = {max_replicas}: expected an integer >= 1")
    replicas = Dimension(INSTANCES, INSTANCES, tuple(range(1, max_replicas + 1)))
    if max_batch_size == 0:
        return SearchSpace((replicas,))
    delays = tuple(sorted({float(d) for d in delays_ms}))
    if not delays or delays[0] < 0:
        raise ValueError(f"delays_ms = {list(delays)}: expected delays >= 0")
    return SearchSpace(
        (
            replicas,
            Dimension(MAX_BATCH_SIZE, "batching.max_batch_size", powers_of_two(max_batch_size)),
            Dimension(MAX_QUEUE_DELAY_MS, "batching.max_queue_delay_ms", delays),
        )
    )


def prune_tensor_space(
    space: SearchSpace, compute_ms: Mapping[int, float], slo_p99_ms: float
) -> SearchSpace:
    """Drop what cannot meet the target: batch sizes whose compute alone exceeds it (measured
    up front, ``compute_ms`` by batch size), and queue delays that alone leave no room for a
    batch of one."""
    batch = space.dimension(MAX_BATCH_SIZE)
    fits = [b for b in batch.values if compute_ms.get(int(b), 0.0) <= slo_p99_ms]
    pruned = space.restrict(MAX_BATCH_SIZE, fits)
    smallest = compute_ms.get(1, 0.0)
    delays = space.dimension(MAX_QUEUE_DELAY_MS).values
    return pruned.restrict(MAX_QUEUE_DELAY_MS, [d for d in delays if d + smallest < slo_p99_ms])


def llm_space(
    max_num_seqs: int, token_budgets: Iterable[int] = DEFAULT_TOKEN_BUDGETS
) -> SearchSpace:
    """An LLM's engine: the token budget per step (outer), then the sequences decoding together
    in powers of two. One engine per server, so no replica dimension."""
    budgets = tuple(sorted(set(token_budgets)))
    if not budgets or budgets[0] < 1:
        raise ValueError(f"token_budgets = {list(budgets)}: expected integers >= 1")
    return SearchSpace(
        (
            Dimension(MAX_NUM_BATCHED_TOKENS, "llm.max_num_batched_tokens", budgets),
            Dimension(MAX_NUM_SEQS, "llm.max_num_seqs", powers_of_two(max_num_seqs)),
        )
    )

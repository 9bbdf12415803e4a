"""One request's token state as the scheduler and the KV cache see it (pure bookkeeping)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias

from inferd.errors import InvalidRequest

BlockHash: TypeAlias = bytes
"""Identity of a full KV block: a digest of its tokens and of every block before it."""


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life; the FINISHED_* values say why it ended."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "finished_stopped"
    FINISHED_LENGTH = "finished_length"
    FINISHED_ABORTED = "finished_aborted"

    @property
    def is_finished(self) -> bool:
        return self in (
            SequenceStatus.FINISHED_STOPPED,
            SequenceStatus.FINISHED_LENGTH,
            SequenceStatus.FINISHED_ABORTED,
        )


class FinishReason(enum.Enum):
    """Why a sequence stopped, as the OpenAI API names it."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"

    @property
    def status(self) -> SequenceStatus:
        """The final status a sequence finished for this reason gets."""
        return _FINISHED_STATUS[self]


_FINISHED_STATUS = {
    FinishReason.STOP: SequenceStatus.FINISHED_STOPPED,
    FinishReason.LENGTH: SequenceStatus.FINISHED_LENGTH,
    FinishReason.ABORT: SequenceStatus.FINISHED_ABORTED,
}


@dataclass(frozen=True, slots=True)
class StopCondition:
    """When generation ends, by token count or token id (stop strings live in the detokenizer)."""

    max_tokens: int = 16
    """Most output tokens; reaching it finishes with ``length``."""
    stop_token_ids: frozenset[int] = frozenset()
    """Token ids that finish with ``stop``; the stop token is kept in the output."""
    eos_token_id: int | None = None
    """The model's end-of-sequence token, a stop token unless ``ignore_eos``."""
    ignore_eos: bool = False
    min_tokens: int = 0
    """Output tokens before stop and eos tokens count (``max_tokens`` always counts)."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidRequest(
                f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}"
            )

    def is_stop_token(self, token_id: int) -> bool:
        if token_id in self.stop_token_ids:
            return True
        return not self.ignore_eos and token_id == self.eos_token_id


@dataclass(slots=True, eq=False)
class Sequence:
    """A request's prompt, its outputs so far, and how much of both the KV cache holds.

    Known tokens are the prompt plus the outputs; the first ``num_computed_tokens`` of them
    have their KV in the blocks of ``block_table``. Mutate outputs only through
    ``append_token``, which keeps ``token_ids`` in step.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    stop: StopCondition = field(default_factory=StopCondition)
    arrival_time: float = 0.0
    """Seconds on the engine's clock; earlier arrivals have priority when blocks run out."""
    status: SequenceStatus = SequenceStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    """KV block ids, in order: block i holds the KV of tokens [i*block_size, (i+1)*block_size)."""
    block_hashes: list[BlockHash] = field(default_factory=list)
    """Hash chain of the full blocks of known tokens, extended by the KV cache manager."""
    finish_reason: FinishReason | None = None
    num_prefix_hit_tokens: int = 0
    """Tokens the prefix cache supplied at the latest admission."""
    num_preemptions: int = 0
    _token_ids: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.prompt_token_ids = tuple(self.prompt_token_ids)
        if not self.prompt_token_ids:
            raise InvalidRequest(f"request {self.request_id!r} has an empty prompt")
        self._token_ids = [*self.prompt_token_ids, *self.output_token_ids]

    @property
    def token_ids(self) -> list[int]:
        """Every known token: the prompt, then the outputs. Read only."""
        return self._token_ids

    @property
    def num_tokens(self) -> int:
        return len(self._token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        """Known tokens whose KV is not computed yet: what the scheduler must catch up."""
        return len(self._token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    def append_token(self, token_id: int) -> None:
        """Record one sampled output token."""
        self.output_token_ids.append(token_id)
        self._token_ids.append(token_id)

    def stop_reason(self) -> FinishReason | None:
        """Why the latest output token ends the sequence, or None to go on."""
        if not self.output_token_ids:
            return None
        if self.num_output_tokens >= self.stop.min_tokens and self.stop.is_stop_token(
            self.output_token_ids[-1]
        ):
            return FinishReason.STOP
        if self.num_output_tokens >= self.stop.max_tokens:
            return FinishReason.LENGTH
        return None

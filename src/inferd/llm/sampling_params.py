"""SamplingParams: how one request samples its tokens, validated where it enters (no torch).

The OpenAI front end builds these from request bodies; a bad field is a 400 naming it. The
sampler that applies them lives in ``sampling.py``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from inferd.errors import InvalidRequest
from inferd.llm.sequence import StopCondition

MAX_N = 16
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
GREEDY_BELOW = 1e-5
"""Temperatures under this are greedy: dividing by them would overflow fp32 logits."""


def _require(ok: bool, name: str, accepted: str, value: object) -> None:
    if not ok:
        # Values are stored hashable (tuples, frozensets); the client sent lists.
        shown = sorted(value) if isinstance(value, frozenset) else value
        shown = list(shown) if isinstance(shown, tuple) else shown
        raise InvalidRequest(f"{name} must be {accepted}, got {shown!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _num_in(value: object, lo: float, hi: float) -> bool:
    # One chained comparison, so that NaN fails it.
    return _is_number(value) and lo <= value <= hi  # type: ignore[operator]


def _int_in(value: object, lo: float, hi: float) -> bool:
    return _is_int(value) and lo <= value <= hi  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample one request's tokens; construction validates every field (400 on error)."""

    n: int = 1
    """Completions to generate for the prompt, 1..16."""
    max_tokens: int = 16
    min_tokens: int = 0
    """Output tokens before stop and eos tokens may be generated."""
    temperature: float = 1.0
    """0..2; 0 is greedy."""
    top_p: float = 1.0
    top_k: int = -1
    """-1 disables; otherwise keep the k most likely tokens."""
    min_p: float = 0.0
    """Keep tokens at least ``min_p`` times as likely as the most likely one."""
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    """Strings that end generation; they are not part of the output."""
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    """Most likely alternatives reported per token, 0..20; needs ``logprobs``."""
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        # Accept the OpenAI shapes (a bare stop string, lists) but store hashable values.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", frozenset(self.stop_token_ids))
        for name, ok, accepted in self._checks():
            _require(ok, name, accepted, getattr(self, name))

    def _checks(self) -> Iterator[tuple[str, bool, str]]:
        """``(field, valid, accepted values)``, lazily: a later check may rely on an earlier one."""
        yield "n", _int_in(self.n, 1, MAX_N), f"an integer in [1, {MAX_N}]"
        yield "max_tokens", _int_in(self.max_tokens, 1, math.inf), "an integer >= 1"
        yield (
            "min_tokens",
            _int_in(self.min_tokens, 0, self.max_tokens),
            f"in [0, {self.max_tokens}]",
        )
        yield "temperature", _num_in(self.temperature, 0, 2), "in [0, 2]"
        yield "top_p", _num_in(self.top_p, 0, 1) and self.top_p > 0, "in (0, 1]"
        yield "top_k", self.top_k == -1 or _int_in(self.top_k, 1, math.inf), "-1 or an int >= 1"
        yield "min_p", _num_in(self.min_p, 0, 1), "in [0, 1]"
        rp = self.repetition_penalty
        yield "repetition_penalty", _num_in(rp, 0, math.inf) and rp > 0, "> 0"
        yield "frequency_penalty", _num_in(self.frequency_penalty, -2, 2), "in [-2, 2]"
        yield "presence_penalty", _num_in(self.presence_penalty, -2, 2), "in [-2, 2]"
        yield "seed", self.seed is None or _is_int(self.seed), "an integer or null"
        yield "stop", len(self.stop) <= MAX_STOP_STRINGS, f"at most {MAX_STOP_STRINGS} strings"
        yield "stop", all(isinstance(t, str) and t for t in self.stop), "non-empty strings"
        ids_ok = all(_int_in(t, 0, math.inf) for t in self.stop_token_ids)
        yield "stop_token_ids", ids_ok, "token ids >= 0"
        k = self.top_logprobs
        yield "top_logprobs", _int_in(k, 0, MAX_TOP_LOGPROBS), f"in [0, {MAX_TOP_LOGPROBS}]"
        yield "top_logprobs", self.logprobs or k == 0, "0 unless logprobs is true"

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def to_stop_condition(
        self, eos_token_id: int | None, extra_eos_token_ids: Collection[int] = ()
    ) -> StopCondition:
        """The engine's stop rule; extra eos ids (models with several) also obey ``ignore_eos``."""
        stop_ids = self.stop_token_ids
        if not self.ignore_eos:
            stop_ids = stop_ids | frozenset(extra_eos_token_ids)
        return StopCondition(
            max_tokens=self.max_tokens,
            stop_token_ids=stop_ids,
            eos_token_id=eos_token_id,
            ignore_eos=self.ignore_eos,
            min_tokens=self.min_tokens,
        )

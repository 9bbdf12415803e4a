"""From one sequence's sampled tokens to the text a client sees: detokenizing and stop strings.

The engine knows tokens; stop strings live in text. ``OutputProcessor`` turns each
``StepOutput`` into a ``TextDelta``: the new text (never half a character, never any part of a
stop string), the tokens behind it, their logprobs, and a finish reason when the sequence ends,
either in the engine (stop token, length) or here (a stop string: the caller then aborts the
engine's sequence, which frees its blocks). vLLM's output processor does the same job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from inferd.llm.sampling_params import SamplingParams
from inferd.llm.scheduler import StepOutput
from inferd.llm.sequence import FinishReason
from inferd.llm.tokenizer import IncrementalDetokenizer, StopStringMatcher, Tokenizer


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One output token with its logprob and the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(slots=True)
class TextDelta:
    """What one engine step added to one sequence."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    """``stop`` or ``length`` once the sequence has ended, else None."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class OutputProcessor:
    """Follows one sequence: feed it every ``StepOutput``; it says when the text must end."""

    def __init__(
        self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int], params: SamplingParams
    ) -> None:
        self._detokenizer = IncrementalDetokenizer(
            tokenizer, prompt_token_ids, params.skip_special_tokens
        )
        self._stops = StopStringMatcher(params.stop)
        self._want_logprobs = params.logprobs
        self.token_ids: list[int] = []
        """Every output token so far (a stop token included, as the engine counts it)."""
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def push(self, output: StepOutput) -> TextDelta:
        """The text ``output`` completes; ``finish_reason`` set when the sequence is over."""
        if self.finished:
            raise RuntimeError(f"sequence {output.request_id!r} already finished")
        self.token_ids.append(output.token_id)
        logprobs = self._logprobs(output)
        ends_on_stop_token = output.finish_reason is FinishReason.STOP
        # A stop token ends the text without being part of it (OpenAI leaves eos out too).
        text = "" if ends_on_stop_token else self._detokenizer.push(output.token_id)
        if output.finished:
            if not ends_on_stop_token:
                text += self._detokenizer.flush()
            check = self._stops.push(text)
            reason = "stop" if check.stopped else _reason(output.finish_reason)
            tail = "" if check.stopped else self._stops.flush()
            self.finish_reason = reason
            return TextDelta(check.text + tail, [output.token_id], logprobs, reason)
        check = self._stops.push(text)
        if check.stopped:
            self.finish_reason = "stop"
            return TextDelta(check.text, [output.token_id], logprobs, "stop")
        return TextDelta(check.text, [output.token_id], logprobs)

    def _logprobs(self, output: StepOutput) -> list[TokenLogprob] | None:
        if not self._want_logprobs or output.logprob is None:
            return None
        top = tuple(output.top_logprobs or ())
        return [TokenLogprob(output.token_id, output.logprob, top)]


def _reason(reason: FinishReason | None) -> str:
    if reason is FinishReason.LENGTH:
        return "length"
    return "stop"  # STOP (a stop token); ABORT never reaches a stream as a token

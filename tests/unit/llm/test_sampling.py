"""The sampler: greedy, distribution, truncation sets, penalties, seeds, logprobs, validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from inferd.errors import InvalidRequest
from inferd.llm.sampling import Sampler, SamplingParams, apply_penalties
from inferd.llm.sequence import Sequence, StopCondition


@dataclass
class History:
    prompt_token_ids: tuple[int, ...] = (1,)
    output_token_ids: list[int] = field(default_factory=list)


def _sample_many(
    logits: torch.Tensor, params: SamplingParams, num: int = 4000, seed: int = 0
) -> torch.Tensor:
    """Sample ``num`` times from one row of logits in a single batch."""
    sampler = Sampler(generator=torch.Generator().manual_seed(seed))
    batch = logits.expand(num, -1)
    out = sampler.sample(batch, [params] * num, [History()] * num)
    return torch.tensor(out.token_ids)


def test_greedy_takes_the_argmax() -> None:
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=0.0, top_k=5 + i, top_p=0.9) for i in range(8)]
    out = Sampler().sample(logits, params, [History()] * 8)
    assert out.token_ids == logits.argmax(dim=-1).tolist()
    assert out.logprobs is None and out.top_logprobs is None


def test_greedy_ignores_the_random_state() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(2))
    params = [SamplingParams(temperature=0.0)] * 4
    first = Sampler(generator=torch.Generator().manual_seed(0)).sample(
        logits, params, [History()] * 4
    )
    second = Sampler(generator=torch.Generator().manual_seed(9)).sample(
        logits, params, [History()] * 4
    )
    assert first.token_ids == second.token_ids


def _chi_square(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples, minlength=probs.numel()).double()
    expected = probs.double() * samples.numel()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_temperature_sampling_matches_the_softmax(temperature: float) -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0])
    samples = _sample_many(logits, SamplingParams(temperature=temperature), num=20000)
    # 5 degrees of freedom: the 99.9% quantile is 20.5; a wrong temperature scores in the hundreds.
    assert _chi_square(samples, torch.softmax(logits / temperature, dim=-1)) < 25.0


def _ranked(logits: torch.Tensor) -> list[int]:
    return sorted(range(logits.numel()), key=lambda i: -float(logits[i]))


def test_top_k_samples_exactly_the_k_most_likely() -> None:
    logits = torch.randn(40, generator=torch.Generator().manual_seed(3))
    samples = _sample_many(logits, SamplingParams(top_k=4, temperature=1.5))
    assert set(samples.tolist()) == set(_ranked(logits)[:4])


def test_top_p_samples_the_smallest_set_covering_p() -> None:
    logits = torch.tensor([3.0, 2.5, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0])
    probs = torch.softmax(logits, dim=-1).tolist()
    nucleus, mass = [], 0.0
    for token in _ranked(logits):
        nucleus.append(token)
        mass += probs[token]
        if mass >= 0.8:
            break
    samples = _sample_many(logits, SamplingParams(top_p=0.8))
    assert set(samples.tolist()) == set(nucleus)


def test_min_p_samples_tokens_near_the_most_likely() -> None:
    logits = torch.tensor([2.0, 1.9, 1.0, 0.0, -1.0, 1.5, -5.0])
    probs = torch.softmax(logits, dim=-1)
    allowed = {i for i, p in enumerate(probs.tolist()) if p >= 0.3 * float(probs.max())}
    samples = _sample_many(logits, SamplingParams(min_p=0.3))
    assert set(samples.tolist()) == allowed


def test_truncations_combine_per_row() -> None:
    logits = torch.randn(3, 30, generator=torch.Generator().manual_seed(4)).repeat(300, 1)
    params = [SamplingParams(top_k=1), SamplingParams(top_k=3, top_p=0.5), SamplingParams()] * 300
    out = Sampler().sample(logits, params, [History()] * len(params))
    top3 = set(_ranked(logits[1])[:3])
    assert {t for t, p in zip(out.token_ids, params, strict=True) if p.top_k == 1} == {
        _ranked(logits[0])[0]
    }
    assert {t for t, p in zip(out.token_ids, params, strict=True) if p.top_k == 3} <= top3


def test_repetition_penalty_matches_transformers() -> None:
    logits = torch.randn(2, 64, generator=torch.Generator().manual_seed(5)) * 3
    history = History(prompt_token_ids=(3, 7, 7, 20), output_token_ids=[40, 3, 63])
    params = SamplingParams(repetition_penalty=1.3)
    ours = apply_penalties(logits, [params, SamplingParams()], [history, history])
    ids = torch.tensor([[*history.prompt_token_ids, *history.output_token_ids]])
    theirs = RepetitionPenaltyLogitsProcessor(penalty=1.3)(ids, logits[:1].clone())
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], logits[1])


def test_frequency_and_presence_penalties_follow_the_openai_formula() -> None:
    logits = torch.randn(1, 32, generator=torch.Generator().manual_seed(6))
    history = History(prompt_token_ids=(1, 2, 9), output_token_ids=[5, 5, 5, 9, 30])
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=-1.25)
    ours = apply_penalties(logits, [params], [history])
    counts = torch.bincount(torch.tensor(history.output_token_ids), minlength=32).float()
    expected = logits[0] - (0.5 * counts + -1.25 * (counts > 0))
    assert torch.equal(ours[0], expected)
    assert ours[0, 1] == logits[0, 1], "prompt tokens are not frequency-penalised"


def test_penalties_steer_greedy_decoding() -> None:
    logits = torch.tensor([[5.0, 4.9, 0.0]])
    history = History(output_token_ids=[0])
    out = Sampler().sample(logits, [SamplingParams(temperature=0, presence_penalty=1.0)], [history])
    assert out.token_ids == [1]


def _generate(
    sampler: Sampler, params: list[SamplingParams], steps: int, vocab: int = 500
) -> list[list[int]]:
    """Decode ``steps`` tokens for every row; logits depend on the row's last token only."""
    table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(7))
    histories = [History() for _ in params]
    for _ in range(steps):
        last = torch.tensor([(h.output_token_ids or [1])[-1] for h in histories])
        out = sampler.sample(table[last], params, histories)
        for history, token in zip(histories, out.token_ids, strict=True):
            history.output_token_ids.append(token)
    return [h.output_token_ids for h in histories]


def test_a_seed_gives_the_same_tokens_alone_or_batched() -> None:
    seeded = SamplingParams(seed=1234, temperature=1.2, top_p=0.95)
    alone = _generate(Sampler(), [seeded], steps=12)[0]
    torch.manual_seed(99)  # the unseeded rows below draw from the global generator
    others = [
        SamplingParams(),
        SamplingParams(seed=7, top_k=50),
        seeded,
        SamplingParams(temperature=0),
        SamplingParams(seed=1234, temperature=1.2, top_p=0.95, presence_penalty=0.5),
    ]
    batched = _generate(Sampler(), others, steps=12)
    assert batched[2] == alone
    assert _generate(Sampler(), [seeded, seeded], steps=12) == [alone, alone]
    assert _generate(Sampler(), [SamplingParams(seed=1235, temperature=1.2)], steps=12)[0] != alone


def test_a_seeded_row_resumes_identically_after_preemption() -> None:
    seeded = SamplingParams(seed=5)
    tokens = _generate(Sampler(), [seeded], steps=6)[0]
    logits = torch.randn(1, 500, generator=torch.Generator().manual_seed(8))
    history = History(output_token_ids=tokens[:3])
    first = Sampler().sample(logits, [seeded], [history]).token_ids
    again = Sampler().sample(logits, [seeded], [history]).token_ids
    assert first == again


def test_logprobs_are_of_the_processed_distribution() -> None:
    logits = torch.randn(2, 100, generator=torch.Generator().manual_seed(10))
    params = [
        SamplingParams(temperature=0.7, logprobs=True, top_logprobs=5, top_k=3),
        SamplingParams(temperature=0.0, logprobs=True, top_logprobs=2),
    ]
    out = Sampler().sample(logits, params, [History(), History()])
    assert out.logprobs is not None and out.top_logprobs is not None
    processed = torch.log_softmax(logits / torch.tensor([[0.7], [1.0]]), dim=-1)
    for row in range(2):
        chosen = out.token_ids[row]
        assert out.logprobs[row] == pytest.approx(float(processed[row, chosen]), abs=1e-6)
        top = out.top_logprobs[row]
        assert len(top) == params[row].top_logprobs
        assert sum(math.exp(lp) for _, lp in top) <= 1.0 + 1e-6
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
        assert chosen in {t for t, _ in top}, "top-k 3 sampling picks among the top 5"
    assert out.top_logprobs[1][0] == (out.token_ids[1], out.logprobs[1])


def test_rows_without_logprobs_get_no_alternatives() -> None:
    params = [SamplingParams(logprobs=True, top_logprobs=20), SamplingParams()]
    out = Sampler().sample(torch.randn(2, 8), params, [History(), History()])
    assert out.top_logprobs is not None
    assert len(out.top_logprobs[0]) == 8, "capped at the vocabulary"
    assert out.top_logprobs[1] == []


def test_min_tokens_masks_eos_and_stop_tokens() -> None:
    logits = torch.tensor([[0.0, 10.0, 9.0, 1.0]]).repeat(3, 1)
    params = [
        SamplingParams(temperature=0, min_tokens=2, stop_token_ids={2}),
        SamplingParams(temperature=0, min_tokens=2, ignore_eos=True),
        SamplingParams(temperature=0, min_tokens=2),
    ]
    histories = [History(), History(), History(output_token_ids=[3, 3])]
    out = Sampler(eos_token_ids={1}).sample(logits, params, histories)
    assert out.token_ids == [3, 1, 1]


def test_a_sequence_is_a_history() -> None:
    seq = Sequence("r", (4, 4, 4), output_token_ids=[2])
    logits = torch.zeros(1, 6)
    logits[0, 4] = 1.0
    out = apply_penalties(logits, [SamplingParams(repetition_penalty=2.0)], [seq])
    assert out[0, 4] == 0.5


def test_stop_condition_carries_the_limits_and_every_eos() -> None:
    params = SamplingParams(max_tokens=9, min_tokens=2, stop_token_ids=[5])
    assert params.to_stop_condition(2, extra_eos_token_ids=[3]) == StopCondition(
        max_tokens=9, stop_token_ids=frozenset({3, 5}), eos_token_id=2, min_tokens=2
    )
    ignoring = SamplingParams(ignore_eos=True).to_stop_condition(2, extra_eos_token_ids=[3])
    assert ignoring.stop_token_ids == frozenset() and ignoring.ignore_eos


def test_a_bare_stop_string_becomes_a_tuple() -> None:
    assert SamplingParams(stop="\n").stop == ("\n",)  # type: ignore[arg-type]
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]
    assert hash(SamplingParams(stop=["a"]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be an integer in [1, 16]"),
        ({"n": 17}, "n must be"),
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": 4, "min_tokens": 5}, "min_tokens must be in [0, 4]"),
        ({"temperature": -0.1}, "temperature must be in [0, 2]"),
        ({"temperature": 2.5}, "temperature must be in [0, 2]"),
        ({"temperature": math.nan}, "temperature must be"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.1}, "top_p must be"),
        ({"top_k": 0}, "top_k must be -1 or an int >= 1"),
        ({"top_k": -2}, "top_k must be"),
        ({"min_p": 1.5}, "min_p must be in [0, 1]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"frequency_penalty": 2.1}, "frequency_penalty must be in [-2, 2]"),
        ({"presence_penalty": -3}, "presence_penalty must be in [-2, 2]"),
        ({"seed": 1.5}, "seed must be an integer or null"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop must be at most 4 strings"),
        ({"stop": [""]}, "stop must be non-empty strings"),
        ({"stop_token_ids": [-1]}, "stop_token_ids must be token ids >= 0"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be in [0, 20]"),
        ({"top_logprobs": 3}, "top_logprobs must be 0 unless logprobs is true"),
    ],
)
def test_invalid_params_name_the_parameter_and_range(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        SamplingParams(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert info.value.status_code == 400


def test_boundary_values_are_accepted() -> None:
    SamplingParams(n=16, temperature=2.0, top_p=1.0, top_k=1, min_p=1.0, seed=-(2**70))
    SamplingParams(frequency_penalty=-2, presence_penalty=2, logprobs=True, top_logprobs=20)
    SamplingParams(stop=["a", "b", "c", "d"], max_tokens=1, min_tokens=1)


def test_huge_and_negative_seeds_sample() -> None:
    logits = torch.randn(2, 10)
    params = [SamplingParams(seed=-1), SamplingParams(seed=2**80)]
    assert len(Sampler().sample(logits, params, [History(), History()]).token_ids) == 2


def test_greedy_picks_what_torch_argmax_picks_ties_and_nan_included() -> None:
    """The sampler's CPU argmax goes through numpy (8x faster on 32,000-wide rows); it must
    choose exactly what torch.argmax chooses: the first maximum, and NaN as the largest."""
    from inferd.llm.sampling import _argmax

    torch.manual_seed(0)
    logits = torch.randn(16, 1000)
    logits[3, [10, 500]] = 50.0  # a tie: the first wins
    logits[5, 7] = math.nan
    logits[6] = -math.inf
    assert torch.equal(_argmax(logits), logits.argmax(dim=-1))
    assert _argmax(logits)[3] == 10 and _argmax(logits)[5] == 7

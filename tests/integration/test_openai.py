"""The OpenAI-compatible API against a real server, through the official ``openai`` client."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

from inferd.llm.tokenizer import Tokenizer  # noqa: E402

from .llm_checkpoint import write_tiny_llama  # noqa: E402
from .server import ServerProcess  # noqa: E402

MODEL = "tiny"
PROMPT = "The for statement is used to iterate over the elements of a sequence"
PRICE_PER_HOUR = 3.6
NO_EOS = {"ignore_eos": True}  # random weights may sample eos at once; these tests need text


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_tiny_llama(tmp_path_factory.mktemp("llm") / MODEL)
    (folder / "model.toml").write_text(
        f'backend = "llm"\nprice_per_hour = {PRICE_PER_HOUR}\n\n'
        "[llm]\nkv_cache_mb = 4\nblock_size = 8\nmax_num_seqs = 16\nmax_waiting = 4\n"
    )
    return folder


@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess([folder], log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Tokenizer:
    return Tokenizer.from_folder(folder)


def greedy(client: openai.OpenAI, prompt: str = PROMPT, max_tokens: int = 12, **kw: object) -> str:
    out = client.completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        extra_body=NO_EOS,
        **kw,  # type: ignore[arg-type]
    )
    return out.choices[0].text


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf'^{name}\{{model="{MODEL}"\}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


# --- models and plain completions --------------------------------------------------------------


def test_models_lists_the_llm(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_greedy_completion_matches_transformers(
    client: openai.OpenAI, folder: Path, tokenizer: Tokenizer
) -> None:
    out = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, extra_body=NO_EOS
    )
    prompt_ids = tokenizer.encode(PROMPT)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    with torch.inference_mode():
        expected = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=16,
            min_new_tokens=16,
            do_sample=False,
            eos_token_id=None,
        )[0, len(prompt_ids) :]
    assert out.choices[0].text == tokenizer.decode(expected.tolist())
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(prompt_ids)
    assert out.usage.completion_tokens == 16
    assert out.usage.total_tokens == len(prompt_ids) + 16


def test_streamed_text_equals_the_whole_answer(client: openai.OpenAI) -> None:
    whole = greedy(client, max_tokens=10)
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_EOS,
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole
    assert len(texts) >= 2  # it streamed, not one block
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10


def test_streamed_usage_counts_the_prompt_once_for_n_choices(
    client: openai.OpenAI, tokenizer: Tokenizer
) -> None:
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=5,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_EOS,
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert usage.completion_tokens == 10


def test_n_choices_with_a_seed_are_distinct_and_repeatable(client: openai.OpenAI) -> None:
    def sample() -> list[str]:
        out = client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=1.0, n=3, seed=11,
            extra_body=NO_EOS,
        )  # fmt: skip
        assert [c.index for c in out.choices] == [0, 1, 2]
        assert out.usage is not None and out.usage.completion_tokens == 24
        return [c.text for c in out.choices]

    first = sample()
    assert sample() == first
    assert len(set(first)) == 3


def test_batched_prompts_get_choices_in_order(client: openai.OpenAI) -> None:
    prompts = ["The while statement", PROMPT]
    out = client.completions.create(
        model=MODEL, prompt=prompts, max_tokens=6, temperature=0, extra_body=NO_EOS
    )
    assert [c.text for c in out.choices] == [greedy(client, p, 6) for p in prompts]


def test_a_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    whole = greedy(client, max_tokens=16)
    stop = whole[len(whole) // 2 : len(whole) // 2 + 3]
    assert stop.strip(), f"pick a visible stop string from {whole!r}"
    out = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop], extra_body=NO_EOS
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == whole[: whole.index(stop)]
    streamed = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=stop, stream=True,
        extra_body=NO_EOS,
    )  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed) == whole[: whole.index(stop)]


def test_completion_logprobs(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2, extra_body=NO_EOS
    )
    lp = out.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == 5
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.top_logprobs is not None
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 2
        assert max(top.values()) == pytest.approx(chosen)  # greedy: the best is the chosen


# --- chat ----------------------------------------------------------------------------------------


MESSAGES = [
    {"role": "system", "content": "You answer questions about Python."},
    {"role": "user", "content": "What does the for statement do?"},
]


def test_chat_completion_and_its_stream_agree(client: openai.OpenAI, tokenizer: Tokenizer) -> None:
    out = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
        extra_body=NO_EOS,  # type: ignore[arg-type]
    )
    message = out.choices[0].message
    assert message.role == "assistant" and message.content
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(tokenizer.encode_chat(MESSAGES))
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, stream=True,  # type: ignore[arg-type]
        extra_body=NO_EOS,
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_logprobs(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True,  # type: ignore[arg-type]
        top_logprobs=3, extra_body=NO_EOS,
    )  # fmt: skip
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 4
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token


# --- errors --------------------------------------------------------------------------------------


def test_unknown_model_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="nope", prompt="x")
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found" and "nope" in body["message"]


def test_prompt_longer_than_the_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="word " * 400, max_tokens=4)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded"
    assert "maximum context length is 256" in body["message"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"logprobs": 9}, "logprobs"),
        ({"extra_body": {"top_k": 0}}, "top_k"),
        ({"extra_body": {"suffix": "x"}}, "suffix"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    client: openai.OpenAI, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="x", **kwargs)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param, body


def test_a_bad_chat_message_is_400_naming_messages(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "wizard", "content": "hi"}],  # type: ignore[list-item,misc]
        )
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "messages", body
    assert "messages[0].role must be one of" in body["message"]


def test_more_sequences_than_the_waiting_room_get_503_at_once(server: ServerProcess) -> None:
    body = {"model": MODEL, "prompt": ["a", "b"], "n": 11, "max_tokens": 2}  # 22 > 16 + 4
    r = httpx.post(f"{server.url}/v1/completions", json=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    error = r.json()["error"]
    assert error["code"] == "overloaded" and "at capacity" in error["message"]
    body["n"] = 10  # 20 fit
    assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).status_code == 200


def test_malformed_bodies_are_400(server: ServerProcess) -> None:
    for body in (b"{", b"[]", b'{"model": "tiny"}', b'{"model": "tiny", "messages": []}'):
        for path in ("/v1/completions", "/v1/chat/completions"):
            r = httpx.post(f"{server.url}{path}", content=body)
            assert r.status_code == 400, (path, body, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_kserve_infer_on_an_llm_points_to_the_openai_api(server: ServerProcess) -> None:
    r = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json={"inputs": []})
    assert r.status_code == 400 and "/v1/chat/completions" in r.json()["error"]


# --- the engine behind it ------------------------------------------------------------------------


def test_a_client_that_leaves_mid_stream_frees_its_sequence(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    stream = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=200, temperature=0, stream=True, extra_body=NO_EOS
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()
    deadline = time.monotonic() + 10
    while metric(server, "inferd_llm_running_requests") > 0:
        assert time.monotonic() < deadline, "the sequence kept running after its client left"
        time.sleep(0.05)
    assert metric(server, "inferd_llm_kv_cache_usage_ratio") < 1.0
    text = httpx.get(f"{server.url}/metrics").text
    assert f'inferd_llm_requests_total{{model="{MODEL}",outcome="cancelled"}}' in text


def test_a_repeated_long_prefix_hits_the_prefix_cache(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    prompt = " ".join(["iterate over the elements of a sequence"] * 8)
    greedy(client, prompt, 2)
    hits = metric(server, "inferd_llm_prefix_cache_hits_total")
    greedy(client, prompt, 2)
    assert metric(server, "inferd_llm_prefix_cache_hits_total") >= hits + 32


def test_metrics_count_tokens_latency_and_cost(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    before = metric(server, "inferd_llm_generation_tokens_total")
    greedy(client, max_tokens=7)
    assert metric(server, "inferd_llm_generation_tokens_total") == before + 7
    assert metric(server, "inferd_llm_time_to_first_token_seconds_count") > 0
    assert metric(server, "inferd_llm_inter_token_latency_seconds_count") > 0
    assert metric(server, "inferd_llm_price_per_hour") == PRICE_PER_HOUR
    assert metric(server, "inferd_llm_cost_per_million_tokens") > 0
    assert metric(server, "inferd_llm_cost_total") > 0


def test_the_docs_page_and_openapi_list_the_llm(server: ServerProcess) -> None:
    page = httpx.get(f"{server.url}/docs").text
    assert f"<h3>{MODEL}</h3>" in page and "/v1/chat/completions" in page
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/models", "/v1/completions", "/v1/chat/completions"} <= set(paths)


def test_an_int8_llm_with_an_int8_kv_cache_serves(tmp_path: Path) -> None:
    """Serving wiring only: agreement with fp32 is measured on a trained model in
    tests/unit/llm/test_quant.py and benchmarks/llm_quant.py (this one's random weights, drawn
    wide, have near-ties that int8 flips)."""
    int8 = write_tiny_llama(tmp_path / MODEL)
    (int8 / "model.toml").write_text(
        'backend = "llm"\nprecision = "int8"\n\n[llm]\nkv_cache_mb = 4\nkv_cache_dtype = "int8"\n'
    )
    with (
        ServerProcess([int8], log_dir=tmp_path) as srv,
        openai.OpenAI(base_url=f"{srv.url}/v1", api_key="-", max_retries=0) as quantized,
    ):
        out = quantized.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, extra_body=NO_EOS
        )
        log = srv.log()
    assert out.choices[0].text and out.usage is not None and out.usage.completion_tokens == 8
    assert "quantization=int8" in log and "kv_cache_dtype=int8" in log, log[-2000:]


@pytest.mark.timeout(400)  # a fresh machine builds the native kernel first: about a minute
def test_a_compiled_llm_writes_what_the_eager_one_writes(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    """``[llm] compile = true``: the same greedy text, streamed and not, as the eager server
    (the same checkpoint, fp32); the server is ready only once the model has compiled."""
    compiled = write_tiny_llama(tmp_path / MODEL)
    (compiled / "model.toml").write_text(
        'backend = "llm"\n\n[llm]\nkv_cache_mb = 4\ncompile = true\n'
    )
    with (
        # Ready after compiling, and on a fresh machine after building the native kernel.
        ServerProcess([compiled], log_dir=tmp_path, ready_timeout=300) as srv,
        openai.OpenAI(base_url=f"{srv.url}/v1", api_key="-", max_retries=0) as fast,
    ):
        assert greedy(fast, max_tokens=16) == greedy(client, max_tokens=16)
        chunks = fast.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stream=True, extra_body=NO_EOS
        )
        assert "".join(c.choices[0].text for c in chunks) == greedy(client, max_tokens=16)
        log = srv.log()
    assert "compile=true" in log, log[-2000:]

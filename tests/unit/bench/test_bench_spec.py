"""``BenchSpec`` validation: every mistake is refused with the key and the flag named."""

from __future__ import annotations

from typing import Any

import pytest

from inferd.bench import BenchSpec
from inferd.cli import _parser
from inferd.cli.bench import spec_from_args
from inferd.errors import ConfigError


def make(**changes: Any) -> BenchSpec:
    return BenchSpec(**{"url": "http://127.0.0.1:8000", "model": "echo", **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "https://x"}, r"url \(URL\) must be an http:// URL"),
        ({"url": "127.0.0.1:8000"}, r"url \(URL\) must be an http:// URL"),
        ({"model": ""}, r"model \(--model\)"),
        ({"api": "grpc"}, r"api \(--api\) must be one of kserve, openai"),
        ({"rate": 10.0}, r"concurrency/rate .* set exactly one"),
        ({"concurrency": None}, r"concurrency/rate .* set exactly one"),
        ({"concurrency": 0}, r"concurrency \(--concurrency\) must be at least 1"),
        ({"concurrency": None, "rate": -1.0}, r"rate \(--rate\) must be a positive"),
        ({"rate_end": 5.0}, r"rate_end \(--rate-end\) needs --rate"),
        ({"duration_s": 0.0}, r"duration_s \(--duration\) must be positive"),
        ({"warmup_s": -1.0}, r"warmup_s \(--warmup\)"),
        ({"num_requests": 0}, r"num_requests \(--requests\)"),
        ({"slo_ms": 0.0}, r"slo_ms \(--slo-ms\)"),
        ({"processes": 9}, r"processes \(--processes\) 9 exceeds --concurrency"),
        ({"rows": 0}, r"rows \(--rows\)"),
        ({"rows": 2, "input_file": "a.json"}, r"cannot be combined with --input-file"),
        ({"shapes": (("x", ()),)}, r"shapes \(--shape\) x"),
        ({"api": "openai", "binary": True}, r"openai takes no --binary"),
    ],
)
def test_bad_specs_name_key_and_flag(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(**changes)


def test_open_loop_spec() -> None:
    spec = make(concurrency=None, rate=50.0, rate_end=100.0)
    assert spec.open_loop
    assert spec.describe_load() == "open loop, Poisson 50/s ramping to 100"
    assert make().describe_load() == "closed loop, 8 clients"


def test_command_line_flags_make_the_spec() -> None:
    args = _parser().parse_args(
        ["bench", "http://h:1", "-m", "m", "--rate", "30", "--shape", "x=2,3", "--binary",
         "--requests", "100", "--slo-ms", "5"]
    )  # fmt: skip
    spec = spec_from_args(args)
    assert (spec.url, spec.model, spec.rate, spec.concurrency) == ("http://h:1", "m", 30.0, None)
    assert spec.shapes == (("x", (2, 3)),)
    assert spec.binary and spec.num_requests == 100 and spec.slo_ms == 5.0
    default = spec_from_args(_parser().parse_args(["bench", "http://h:1", "-m", "m"]))
    assert default.concurrency == 8 and default.rate is None


def test_command_line_mistakes() -> None:
    with pytest.raises(ConfigError, match="give a URL and --model"):
        spec_from_args(_parser().parse_args(["bench", "http://h:1"]))
    with pytest.raises(ConfigError, match="--shape 'x=a': expected NAME=D0,D1"):
        spec_from_args(_parser().parse_args(["bench", "http://h:1", "-m", "m", "--shape", "x=a"]))

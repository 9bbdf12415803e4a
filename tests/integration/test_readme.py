"""The README's examples run against a real server exactly as printed (but on a test port)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.server import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_curl_and_python_examples(demo_repo: Path, tmp_path: Path) -> None:
    server = ServerProcess([demo_repo], log_dir=tmp_path)
    try:
        server.wait_ready()
        python = _blocks("python")[0]
        code = python.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert "(4, 10)" in run.stdout
        curl = next(b for b in _blocks("bash") if b.startswith("curl"))
        if shutil.which("curl"):
            command = curl.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
            assert '"data":[1.0,2.0,3.0' in out.stdout, out.stdout + out.stderr
    finally:
        server.stop()


def test_readme_model_toml_example_is_valid(tmp_path: Path) -> None:
    import tomllib

    from inferd.config import ModelConfig, model_config_from_dict

    llm_example, example = _blocks("toml")
    llm = model_config_from_dict(tomllib.loads(llm_example), tmp_path, "qwen", "README.md")
    assert llm["backend"] == "llm" and llm["llm"].dtype == "bfloat16"
    config = ModelConfig(
        **model_config_from_dict(tomllib.loads(example), tmp_path, "echo", "README.md")
    )
    assert config.autoscaling is not None and config.autoscaling.min_replicas == 0
    assert config.batching.max_queue_rows == 8192 and config.inputs[0].shape == (-1, 16)


def test_readme_openai_example(tmp_path: Path) -> None:
    """The OpenAI example, against a tiny random Llama served under the demo LLM's name."""
    from tests.integration.llm_checkpoint import write_tiny_llama

    folder = write_tiny_llama(tmp_path / "tiny_llama")
    with ServerProcess([folder], log_dir=tmp_path) as server:
        code = _blocks("python")[1].replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), "the stream printed no text"

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
        [python] = _blocks("python")
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

    [example] = _blocks("toml")
    config = ModelConfig(
        **model_config_from_dict(tomllib.loads(example), tmp_path, "echo", "README.md")
    )
    assert config.autoscaling is not None and config.autoscaling.min_replicas == 0
    assert config.batching.max_queue_rows == 8192 and config.inputs[0].shape == (-1, 16)

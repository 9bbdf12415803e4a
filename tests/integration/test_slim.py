"""The slim install: without PyTorch, inferd still serves ONNX and scikit-learn models."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as triton

from inferd.demo import held_out_digits
from tests.integration.server import ServerProcess

# Installed as sitecustomize in the server's PYTHONPATH: any import of torch fails as if it
# were not installed, however deep in a dependency it is attempted.
BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
"""


def test_serves_onnx_and_sklearn_without_torch(demo_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    paths = [
        demo_repo / "digits_sklearn",  # a model folder
        demo_repo / "digits_onnx" / "model.onnx",  # a bare model file, no config
        demo_repo / "digits_torch",  # needs torch: must be reported, not crash the server
    ]
    server = ServerProcess(paths, log_dir=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    try:
        server.wait_ready()
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        x, y = held_out_digits()
        for name, output in (("digits_sklearn", "label"), ("model", "probabilities")):
            tensor = triton.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            scores = client.infer(name, [tensor]).as_numpy(output)
            predicted = scores if scores.ndim == 1 else scores.argmax(axis=1)
            assert float(np.mean(predicted == y)) > 0.9, name
        client.close()
        index = {m["name"]: m for m in httpx.post(f"{server.url}/v2/repository/index").json()}
        assert index["digits_torch"]["state"] == "UNAVAILABLE"
        assert "torch" in index["digits_torch"]["reason"]
        assert "not installed" in index["digits_torch"]["reason"]
    finally:
        server.stop()

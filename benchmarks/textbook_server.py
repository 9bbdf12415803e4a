"""The reference: the textbook FastAPI server, one request = one forward call, no batching.

This is the server most tutorials show (pydantic request model, a sync endpoint that calls the
model). Run: TEXTBOOK_MODEL=echo uvicorn benchmarks.textbook_server:app
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from inferd.demo import demo_repository

app = FastAPI()
MODEL = os.environ.get("TEXTBOOK_MODEL", "echo")


def _load() -> Any:
    if MODEL == "echo":
        from inferd.demo.echo_model import Echo

        echo = Echo()
        return lambda x: echo.predict({"input": x})["output"]
    import torch

    module = torch.export.load(str(Path(demo_repository()) / "mlp" / "model.pt2")).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


predict = _load()


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferRequest(BaseModel):
    inputs: list[Tensor]


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v2/models/{model}/infer")
def infer(model: str, request: InferRequest) -> dict[str, Any]:
    tensor = request.inputs[0]
    x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    y = predict(x)
    return {
        "model_name": model,
        "outputs": [
            {
                "name": "output",
                "datatype": "FP32",
                "shape": list(y.shape),
                "data": y.ravel().tolist(),
            }
        ],
    }

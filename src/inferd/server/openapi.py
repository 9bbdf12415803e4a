"""The OpenAPI document of inferd's HTTP API and a self-contained page for humans at ``/docs``.

The page needs no CDN (inferd's machines may have no internet): it is rendered here from the
same document, plus a ready-to-paste curl call for every model being served.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import orjson

from inferd.replicas.manager import ServedLLM, ServedModel
from inferd.version import __version__

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "parameters": {"type": "object"},
        "data": {"description": "row-major elements (flat or nested); absent for binary data"},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}


def _op(summary: str, description: str = "", body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "responses": {
            "200": {"description": "OK"},
            "4XX": {
                "description": "Client error",
                "content": {"application/json": {"schema": _ERROR}},
            },
            "5XX": {
                "description": "Server error",
                "content": {"application/json": {"schema": _ERROR}},
            },
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


_INFER_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "description": "binary_data_output: bool"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}

_PATHS: dict[str, dict[str, Any]] = {
    "/v2/health/live": {"get": _op("Server liveness", "200 while the process serves HTTP.")},
    "/v2/health/ready": {
        "get": _op("Server readiness", "200 once models have loaded and one is ready; 503 before.")
    },
    "/v2": {"get": _op("Server metadata", "Name, version and protocol extensions.")},
    "/v2/models/{model}": {
        "get": _op("Model metadata", "Inputs and outputs with datatypes and shapes (-1 = any).")
    },
    "/v2/models/{model}/ready": {
        "get": _op("Model readiness", "200 when the model serves; 503 with the reason otherwise.")
    },
    "/v2/models/{model}/config": {
        "get": _op(
            "Model configuration",
            "Triton's model configuration document (tritonclient's get_model_config): batch "
            "size, tensors without the batch axis, dynamic batching, instances; inferd's own "
            "settings under parameters.",
        )
    },
    "/v2/models/{model}/stats": {
        "get": _op(
            "Model statistics",
            "Triton's statistics extension (tritonclient's get_inference_statistics): counts and "
            "cumulative times of successes, failures, queueing and compute, per batch size too.",
        )
    },
    "/v2/models/stats": {"get": _op("Statistics of every model")},
    "/v2/models/{model}/infer": {
        "post": _op(
            "Inference",
            "JSON tensors, or the binary tensor data extension: send the JSON header length in "
            "Inference-Header-Content-Length and the tensors' bytes after it.",
            _INFER_BODY,
        )
    },
    "/v2/models/{model}/versions/{version}": {"get": _op("Model metadata (versioned)")},
    "/v2/models/{model}/versions/{version}/ready": {"get": _op("Model readiness (versioned)")},
    "/v2/models/{model}/versions/{version}/config": {"get": _op("Model configuration (versioned)")},
    "/v2/models/{model}/versions/{version}/infer": {
        "post": _op("Inference (versioned)", body=_INFER_BODY)
    },
    "/v2/repository/index": {
        "post": _op("Repository index", "Every model with its state and, if unavailable, why.")
    },
    "/v1/models": {"get": _op("LLMs (OpenAI API)", "Every LLM served, with its context length.")},
    "/v1/completions": {
        "post": _op(
            "Text completion (OpenAI API)",
            "prompt: text, token ids, or a list of either; stream: true for server-sent events.",
            {"type": "object", "required": ["model", "prompt"]},
        )
    },
    "/v1/chat/completions": {
        "post": _op(
            "Chat completion (OpenAI API)",
            "messages through the model's chat template; stream: true for server-sent events.",
            {"type": "object", "required": ["model", "messages"]},
        )
    },
    "/metrics": {"get": _op("Prometheus metrics", "Definitions in docs/metrics.md.")},
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the HTTP API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inferd",
            "version": __version__,
            "description": "Open Inference Protocol (KServe v2) over HTTP.",
        },
        "paths": _PATHS,
    }


def _example_request(model: ServedModel) -> str:
    inputs = []
    for spec in model.config.inputs if model.config else ():
        shape = [1 if d == -1 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        value: Any = (
            "text" if spec.datatype == "BYTES" else (False if spec.datatype == "BOOL" else 0)
        )
        inputs.append(
            {
                "name": spec.name,
                "shape": shape,
                "datatype": spec.datatype,
                "data": [value] * min(count, 64),
            }
        )
    return orjson.dumps({"inputs": inputs}).decode()


def docs_page(models: list[ServedModel], base_url: str, llms: Sequence[ServedLLM] = ()) -> str:
    """A plain HTML page: the endpoints, then each model's signature and a curl example."""
    rows = "".join(
        f"<tr><td>{m.upper()}</td><td><code>{html.escape(p)}</code></td>"
        f"<td>{html.escape(op['summary'])}</td>"
        f"<td>{html.escape(op.get('description', ''))}</td></tr>"
        for p, ops in _PATHS.items()
        for m, op in ops.items()
    )
    sections = "".join(_model_section(m, base_url) for m in models)
    sections += "".join(_llm_section(m, base_url) for m in llms)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>inferd API</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}td,th{padding:.3em;"
        "border-bottom:1px solid #ddd;text-align:left}pre{background:#f4f4f4;padding:1em;"
        "overflow-x:auto}</style></head><body>"
        f"<h1>inferd {__version__}</h1><p>Open Inference Protocol (KServe v2) for tensor "
        "models, the OpenAI API for LLMs. "
        "Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"<h2>Endpoints</h2><table><tr><th>Method</th><th>Path</th><th>What</th><th></th></tr>{rows}</table>"
        f"<h2>Models</h2>{sections or '<p>No models.</p>'}</body></html>"
    )


def _model_section(model: ServedModel, base_url: str) -> str:
    meta = model.metadata()
    state = "ready" if model.ready else html.escape(model.not_ready_reason())
    tensors = "".join(
        f"<tr><td>{kind}</td><td>{html.escape(t['name'])}</td><td>{t['datatype']}</td><td>{t['shape']}</td></tr>"
        for kind in ("inputs", "outputs")
        for t in meta[kind]
    )
    curl = (
        f"curl -s {base_url}/v2/models/{model.name}/infer -H 'Content-Type: application/json' "
        f"-d '{_example_request(model)}'"
    )
    return (
        f"<h3>{html.escape(model.name)}</h3><p>{html.escape(meta['platform'])}, {state}</p>"
        f"<table>{tensors}</table><pre>{html.escape(curl)}</pre>"
    )


def _llm_section(llm: ServedLLM, base_url: str) -> str:
    state = f"ready, context {llm.max_model_len} tokens" if llm.ready else llm.not_ready_reason()
    body = orjson.dumps(
        {"model": llm.name, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}
    ).decode()
    curl = f"curl -s {base_url}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'"
    return (
        f"<h3>{html.escape(llm.name)}</h3><p>LLM (OpenAI API), {html.escape(state)}</p>"
        f"<pre>{html.escape(curl)}</pre>"
    )

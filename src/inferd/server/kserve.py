"""Open Inference Protocol (KServe v2) REST handlers.

Readiness endpoints answer 200 when ready and 503 with the reason when not (the protocol asks
for any non-200; 503 is what load balancers and Kubernetes probes expect).
"""

from __future__ import annotations

from typing import Any

from inferd.batching.batcher import Answer
from inferd.errors import InvalidRequest, ModelError, ModelNotReady
from inferd.replicas.manager import ModelManager, RequestOptions, ServedModel
from inferd.server.codec import (
    InferRequest,
    InferResponse,
    content_type,
    decode_request,
    encode_response,
)
from inferd.server.http import Request, Response, json_response, watch_disconnect
from inferd.server.model_config import triton_model_config
from inferd.server.model_stats import triton_model_stats
from inferd.version import __version__

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]


def server_live() -> Response:
    return json_response(200, {"live": True})


def server_ready(manager: ModelManager) -> Response:
    if manager.ready:
        return json_response(200, {"ready": True})
    reason = "models are still loading" if not manager.loaded else "no model is ready"
    return json_response(503, {"ready": False, "error": f"server is not ready: {reason}"})


def server_metadata() -> Response:
    return json_response(200, {"name": "inferd", "version": __version__, "extensions": EXTENSIONS})


def model_metadata(model: ServedModel) -> Response:
    return json_response(200, model.metadata())


def model_config(model: ServedModel) -> Response:
    """Triton's model configuration extension (what tritonclient's ``get_model_config`` reads)."""
    if model.config is None:
        raise ModelNotReady(model.not_ready_reason())
    return json_response(200, triton_model_config(model.config))


def model_stats(models: list[ServedModel]) -> Response:
    """Triton's statistics extension (what tritonclient's ``get_inference_statistics`` reads)."""
    stats = [
        triton_model_stats(m.name, m.version, m.metrics.stats, m.metrics.last_inference_unix_ms())
        for m in models
    ]
    return json_response(200, {"model_stats": stats})


def model_ready(model: ServedModel) -> Response:
    if model.ready:
        return json_response(200, {"name": model.name, "ready": True})
    return json_response(
        503, {"name": model.name, "ready": False, "error": model.not_ready_reason()}
    )


def metrics(manager: ModelManager, request: Request) -> Response:
    body, media_type = manager.metrics.render(request.header(b"accept") or "")
    return Response(200, [body], media_type.encode())


def repository_index(manager: ModelManager) -> Response:
    index: list[dict[str, Any]] = []
    for model in manager.models:
        entry = {"name": model.name, "version": model.version, "state": model.state.value}
        if model.error:
            entry["reason"] = model.error
        index.append(entry)
    return json_response(200, index)


async def infer(request: Request, model: ServedModel) -> Response:
    """Decode, validate, batch, compute and encode one infer request."""
    if b"inferd-timeout-ms" in request.headers:
        # The deadline came before the body: if the queue already rules it out, refuse now
        # and never read the body (overload then costs the front end little per request).
        model.admit_early(request_options(request, {}))
    body = await request.body()
    decoded = decode_request(body, _header_length(request))
    options = request_options(request, decoded.parameters)
    # From here the body is read: a disconnect now cancels the request, queued or computing.
    with watch_disconnect(request):
        answer = await model.infer(decoded.inputs, decoded.input_datatypes, options)
    check_outputs(model, answer.outputs)
    parameters = cost_parameters(model, answer, decoded) if decoded.parameters.get("cost") else None
    response = InferResponse(
        model_name=model.name,
        model_version=model.version,
        id=decoded.id,
        outputs=answer.outputs,
        output_datatypes=model.output_datatypes,
        parameters=parameters,
    )
    chunks, header_length = encode_response(
        response, decoded.outputs, decoded.binary_output_default
    )
    headers = []
    if header_length is not None:
        headers.append((b"inference-header-content-length", str(header_length).encode()))
    return Response(200, chunks, content_type(header_length).encode(), headers)


_DEFAULT_OPTIONS = RequestOptions()


def request_options(request: Request, parameters: dict[str, Any]) -> RequestOptions:
    """Priority and deadline: Triton's ``priority`` and ``timeout`` (µs) parameters, or the
    ``inferd-timeout-ms`` header."""
    if not parameters and b"inferd-timeout-ms" not in request.headers:
        return _DEFAULT_OPTIONS  # most requests set neither
    priority = parameters.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise InvalidRequest(f"parameter 'priority' must be an integer >= 0, got {priority!r}")
    timeout_s = None
    if "timeout" in parameters:
        micros = parameters["timeout"]
        if not isinstance(micros, int | float) or isinstance(micros, bool) or micros <= 0:
            raise InvalidRequest(f"parameter 'timeout' must be microseconds > 0, got {micros!r}")
        timeout_s = micros / 1e6
    header = request.header(b"inferd-timeout-ms")
    if header is not None:
        try:
            timeout_s = float(header) / 1e3
        except ValueError:
            raise InvalidRequest(
                f"header inferd-timeout-ms must be a number, got {header!r}"
            ) from None
        if timeout_s <= 0:
            raise InvalidRequest(f"header inferd-timeout-ms must be > 0, got {header!r}")
    return RequestOptions(priority=priority, timeout_s=timeout_s)


def cost_parameters(model: ServedModel, answer: Answer, decoded: InferRequest) -> dict[str, Any]:
    """The response parameters a request asking for ``cost`` gets: its share and its timing."""
    rows = (
        next(iter(decoded.inputs.values())).shape[0] if model.config and model.config.batched else 1
    )
    return {
        "cost": model.cost_share(answer, rows),
        "queue_ms": round(answer.queue_s * 1e3, 3),
        "compute_ms": round(answer.compute_s * 1e3, 3),
        "batch_rows": answer.batch_rows,
    }


def _header_length(request: Request) -> int | None:
    raw = request.header(b"inference-header-content-length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            f"Inference-Header-Content-Length must be an integer, got {raw!r}"
        ) from None
    if value < 0:
        raise InvalidRequest(f"Inference-Header-Content-Length must be >= 0, got {value}")
    return value


def check_outputs(model: ServedModel, outputs: dict[str, Any]) -> None:
    """``ModelError`` naming the first declared output the model did not return."""
    for name in model.output_datatypes:
        if name not in outputs:
            raise ModelError(
                f"model {model.name!r} did not return its declared output {name!r} "
                f"(it returned {', '.join(sorted(outputs)) or 'nothing'})"
            )

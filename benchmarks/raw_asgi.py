"""The echo handler as a bare ASGI app, for ``http_stack``: what the HTTP stack alone costs."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/":
        out = b"{}"
    else:
        tensor = orjson.loads(body)["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        out = orjson.dumps(
            {"model_name": "echo", "outputs": [{"name": "output", "datatype": "FP32",
                                                "shape": list(x.shape), "data": x.ravel()}]},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})

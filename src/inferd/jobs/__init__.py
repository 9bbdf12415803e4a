"""Jobs that run models over data outside the request path.

``inferd batch``: ``batch`` is the job and ``pipeline`` its chunk loop; ``readers``, ``columns``
and ``writers`` turn files into tensors and back; ``manifest`` (pure) and ``journal`` keep the
commit log; ``tuning`` (pure) and ``sizing`` choose chunk and batch sizes; ``progress`` (pure)
is the progress line and report; ``local``, ``remote`` and ``llm`` are where the model runs.

``inferd stream``: ``stream`` and ``redis_stream`` (see their docstrings).
"""

"""The LLM engine: continuous batching over a paged KV cache.

Layers inside this package, imported one way only: ``sequence`` → ``kv_cache`` → ``scheduler``
form the pure core (no torch, no asyncio, no I/O), which ``testing`` drives with a fake runner;
the runner, sampler, models and engine build on top of it.
"""

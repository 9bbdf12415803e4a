"""Dynamic batching: a pure policy (``policy``) and the asyncio loop applying it (``batcher``)."""

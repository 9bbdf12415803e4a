"""inferd: an inference server for tensor models and LLMs."""

from inferd.version import __version__

__all__ = ["__version__"]

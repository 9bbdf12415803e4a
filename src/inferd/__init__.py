"""inferd: an inference server for tensor models and LLMs."""

__version__ = "0.1.0"

__all__ = ["__version__"]

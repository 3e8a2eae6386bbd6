"""zoo: a package manager, file format and CPU runtime for sparse, quantized LLMs."""

__version__ = "0.1.0"

"""zoo.convert: import checkpoints (GGUF, Hugging Face dirs, zoo artifacts) and write zoo artifacts."""

from .source import Source, open_source

__all__ = ["Source", "open_source"]

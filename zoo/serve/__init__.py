"""zoo.serve: the OpenAI and Ollama HTTP APIs over zoo's models (FastAPI on uvicorn).

`create_app(manager, api_key)` builds the ASGI app; `ModelManager` loads models by name on first
request and unloads them after a keep-alive (LRU beyond `max_loaded`); `server.serve` runs uvicorn.
"""

from __future__ import annotations

from .app import create_app
from .manager import ModelManager, parse_duration

__all__ = ["ModelManager", "create_app", "parse_duration"]

"""Running the app: preload models, then uvicorn on one host and port until Ctrl-C or SIGTERM.

uvicorn catches SIGINT/SIGTERM itself, stops accepting and lets running requests finish; GRACEFUL_S
after the signal, generations still running end at their next token (their answers close normally,
cut short), and uvicorn re-raises the signal afterwards, so the caller sees the usual KeyboardInterrupt
or SIGTERM exit. A second Ctrl-C quits at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path

import uvicorn

from .app import create_app
from .manager import ModelManager

GRACEFUL_S = 5  # seconds running generations get to finish once the server is asked to stop
BACKSTOP_S = 30  # then uvicorn cancels whatever still runs (a load or a pull cannot be interrupted)


def default_threads() -> int:
    """Kernel threads a server uses unless told: one CPU fewer than numba's, at least 1. Its event loop and the
    clients on the same machine need a core; a kernel region that loses one of its threads to them stalls (2 vCPUs:
    1 thread decodes 4 streams at 2.35x one and the API keeps 98% of in-process speed, 2 threads 0.71x and 59%,
    bench/results/serve.md)."""
    import numba

    return max(1, numba.config.NUMBA_NUM_THREADS - 1)


def exposure_warning(host: str) -> str | None:
    """A warning when `host` is not a loopback address (other machines could reach the server)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return None  # uvicorn reports the bad host
    if all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        return None
    return (f"listening on {host}: other machines can reach this server"
            " (protect it with --api-key, or bind 127.0.0.1)")


def preload(manager: ModelManager, models: list[str]) -> list[str]:
    """Load each model (a name, or an artifact directory served under its directory name); they stay
    loaded for the server's life. Returns the served names."""
    names = []
    for model in models:
        path = Path(model).expanduser()
        key = manager.add_path(path.resolve()) if path.is_dir() else manager.add_name(model)
        manager.load_blocking(key, pinned=True)
        names.append(key)
    return names


class _Server(uvicorn.Server):
    """uvicorn's server that, once asked to stop, ends the generations still running after GRACEFUL_S."""

    def __init__(self, config: uvicorn.Config, manager: ModelManager) -> None:
        super().__init__(config)
        self.manager = manager

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().call_later(GRACEFUL_S, self.manager.halt.set)
        await super().shutdown(sockets)


def serve(manager: ModelManager, host: str, port: int, api_key: str | None = None) -> None:
    """Serve until interrupted (blocks); zoo.serve's log lines go to stderr as 'zoo: ...'."""
    logger = logging.getLogger("zoo.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("zoo: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    config = uvicorn.Config(create_app(manager, api_key), host=host, port=port, log_level="info",
                            timeout_graceful_shutdown=GRACEFUL_S + BACKSTOP_S, server_header=False)
    _Server(config, manager).run()

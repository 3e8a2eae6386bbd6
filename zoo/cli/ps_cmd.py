"""`zoo ps`: what a running `zoo serve` holds, asked over its /api/ps (as `ollama ps` does)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Optional
from urllib.parse import urlsplit

import typer

from zoo.errors import ServerUnreachableError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 11434
TIMEOUT_S = 5.0


def server_url(host: str | None, port: int | None) -> str:
    """The server's base URL: --host/--port, else ZOO_HOST (as OLLAMA_HOST: 'host', 'host:port' or a URL),
    else 127.0.0.1:11434."""
    env = os.environ.get("ZOO_HOST", "").strip()
    if host is None and env:
        parts = urlsplit(env if "://" in env else f"http://{env}")
        try:
            env_port = parts.port
        except ValueError:
            raise ServerUnreachableError(f"ZOO_HOST={env!r} is not host[:port] or a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerUnreachableError(f"ZOO_HOST={env!r} is not host[:port] or a URL")
        return f"{parts.scheme}://{_bracket(parts.hostname)}:{port or env_port or DEFAULT_PORT}"
    return f"http://{_bracket(host or DEFAULT_HOST)}:{port or DEFAULT_PORT}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def fetch_ps(url: str, api_key: str | None) -> list[dict]:
    """The server's loaded models (/api/ps); one-line errors when nothing answers or the key is refused."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url}/api/ps", headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as err:
        raise ServerUnreachableError(f"no zoo server answers at {url} ({type(err).__name__}); "
                                     "start one with `zoo serve`") from None
    if r.status_code == 401:
        raise ServerUnreachableError(f"the server at {url} wants an API key (--api-key or ZOO_API_KEY)")
    try:
        models = r.json()["models"] if r.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        models = None
    if not isinstance(models, list):
        raise ServerUnreachableError(f"{url} did not answer /api/ps as a zoo or Ollama server does "
                                     f"(HTTP {r.status_code})")
    return models


def until(expires_at: str | None, now: float | None = None) -> str:
    """'Forever', 'Stopping...' or 'N minutes from now' for an /api/ps expires_at (ISO 8601)."""
    try:
        when = datetime.fromisoformat(expires_at).timestamp() if expires_at else None
    except ValueError:
        return "-"
    if when is None or datetime.fromtimestamp(when).year >= 9999:
        return "Forever"
    left = when - (time.time() if now is None else now)
    if left <= 0:
        return "Stopping..."
    for unit, seconds in (("hour", 3600), ("minute", 60)):
        if left >= seconds:
            n = int(left // seconds)
            return f"{n} {unit}{'s' if n > 1 else ''} from now"
    return "Less than a minute from now"


def ps(
    host: Optional[str] = typer.Option(None, "--host", help="Server address (default: ZOO_HOST, then 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535, help="Server port (default 11434)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ZOO_API_KEY",
                                          help="The server's API key, if it wants one (or set ZOO_API_KEY)."),
    as_json: bool = typer.Option(False, "--json", help="Print the server's answer as one JSON document."),
) -> None:
    """Show the models a running `zoo serve` holds: name, size, processor, context, until when.

    Examples:
      zoo ps
      zoo ps --port 8080 --api-key secret
      ZOO_HOST=192.168.1.5:11434 zoo ps
    """
    models = fetch_ps(server_url(host, port), api_key)
    if as_json:
        typer.echo(json.dumps({"models": models}, indent=2))
        return
    from rich.console import Console  # rich only when a table is drawn, not at start-up
    from rich.table import Table

    from zoo import card as cards

    table = Table("NAME", "SIZE", "PROCESSOR", "CONTEXT", "RUNNING", "UNTIL", box=None)
    table.columns[0].no_wrap = True
    for m in models:
        zoo = m.get("zoo") or {}
        running = f"{zoo['running']}/{zoo['max_batch']}" if {"running", "max_batch"} <= set(zoo) else "-"
        table.add_row(str(m.get("name") or m.get("model")), cards.human_size(m.get("size")), "100% CPU",
                      str(m.get("context_length") or "-"), running, until(m.get("expires_at")))
    Console(soft_wrap=True).print(table)


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)

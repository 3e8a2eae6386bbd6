"""`zoo serve`: the OpenAI and Ollama HTTP APIs on loopback for zoo's models (zoo.serve does the work)."""

from __future__ import annotations

import typer

from zoo.cli import options
from zoo.cli.consoles import stderr_console


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(11434, "--port", "-p", min=0, max=65535, help="TCP port (11434, Ollama's)."),
    models: list[str] = typer.Option(None, "--models", "-m", help="Load at start and keep loaded: a name in the "
                                     "store (pulled or built if missing), a registry reference, an artifact "
                                     "directory, or a GGUF file / Hugging Face dir (converted, cached) (repeatable)."),
    keep_alive: str = typer.Option("5m", "--keep-alive", help="Unload a model this long after its last request "
                                   "(e.g. 30s, 5m, 1h; -1 = never)."),
    max_loaded: int = typer.Option(1, "--max-loaded", min=1, help="Models loaded at once (least recently used "
                                   "is unloaded)."),
    batch: int = typer.Option(8, "--batch", min=1, max=128, help="Requests to one model decoded together "
                              "(continuous batching; more wait their turn)."),
    threads: int = options.threads("Kernel threads (default: all CPUs but one, which the event loop and local "
                                   "clients need)."),
    ctx: int = options.ctx(None, "Context length of each loaded model (default: the model's, at most 4096)."),
    api_key: str = typer.Option(None, "--api-key", envvar="ZOO_API_KEY", help="Require "
                                "'Authorization: Bearer KEY' on every request (or set ZOO_API_KEY)."),
) -> None:
    """Serve the local store's models over the OpenAI and Ollama APIs until Ctrl-C.

    Models load on their first request (by name, as `zoo run` finds them); concurrent requests to one
    model are decoded together, up to --batch at once. Point clients at http://127.0.0.1:11434/v1
    (OpenAI) or http://127.0.0.1:11434 (Ollama).

    Examples:
      zoo serve
      zoo serve --models smollm2-135m-instruct-sparse50-int4 --keep-alive 30m
      zoo serve --port 8080 --api-key secret --max-loaded 2
    """
    from zoo.errors import RuntimeModelError
    from zoo.runtime import set_threads
    from zoo.serve import ModelManager, parse_duration
    from zoo.serve.errors import ApiError
    from zoo.serve.server import default_threads, exposure_warning, preload, serve as run_server

    try:
        keep = parse_duration(keep_alive)
    except ApiError as bad:
        raise typer.BadParameter(str(bad), param_hint="--keep-alive") from None
    if models and len(models) > max_loaded:
        raise RuntimeModelError(f"--models names {len(models)} models but --max-loaded is {max_loaded}")
    set_threads(threads or default_threads())
    warning = exposure_warning(host)
    if warning:
        stderr_console().print(f"zoo: warning: {warning}", soft_wrap=True)
    manager = ModelManager(keep_alive=keep, max_loaded=max_loaded, ctx=ctx, max_batch=batch)
    if models:
        served = [_served(model) for model in models]  # every name found (or built) before the first one loads
        with stderr_console().status(f"loading {', '.join(models)}"):
            names = preload(manager, served)
        stderr_console().print(f"zoo: loaded {', '.join(names)}")
    run_server(manager, host, port, api_key)


def _served(model: str) -> str:
    """What to hand zoo.serve for a --models entry, resolved as `zoo run` resolves MODEL (did you mean, missing
    paths named, checkpoints converted, a long catalog build refused unless `zoo pull --yes` made it): a name or
    reference (now in the store) as given, a path as the artifact directory it resolved to."""
    from zoo.cli.resolve import local_path, resolve_model

    path = local_path(model)
    if path is not None:
        return str(path)
    resolve_model(model)
    return model


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

"""`zoo export`: a zoo artifact as a Hugging Face checkpoint (transformers) or a GGUF file (llama.cpp)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zoo.cli import options
from zoo.cli.names import complete_model
from zoo.errors import ConvertError

TARGETS = ("hf", "gguf")
TYPES = {"hf": ("f16", "f32"), "gguf": ("f16", "q8_0", "q4_0")}  # first = default


def export(
    model: str = typer.Argument(..., metavar="MODEL", autocompletion=complete_model,
        help="A zoo artifact directory, NAME[:TAG] (pulled or built "
             "when missing) or a registry reference."),
    to: str = typer.Option(..., "--to", help="hf (a transformers checkpoint dir) or gguf (one llama.cpp file)."),
    out: Path = options.out(..., "-o", "--output", help="Directory (hf) or .gguf file to create; must not exist "
                                                          "or be empty."),
    type_: str = typer.Option(None, "--type", help="Stored type. hf: f16 (default) or f32 (every decoded value "
                                                   "exact); gguf: f16 (default), q8_0 or q4_0."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (path, type, size, sparsity) on stdout."),
    no_verify: bool = options.no_verify(),
) -> None:
    """Export a zoo artifact for transformers or llama.cpp, weights decoded from their zoo encoding.

    Both formats store every weight densely: the zeros stay exact zeros, but take space and time there.
    The artifact's files are first checked against the card's sha256 (once; then cached).

    Examples:
      zoo export ./smol-sparse50-q4 --to hf -o smol-sparse50-hf
      zoo export ./smol-sparse50-q4 --to gguf -o smol-sparse50.gguf --type q8_0
      zoo export smollm2-135m-instruct-q8 --to hf -o smol-q8-hf
    """
    from zoo.cli.resolve import Checkpoints, resolve_model

    if to not in TARGETS:
        raise ConvertError(f"--to {to!r} is not a target (choose from {', '.join(TARGETS)})")
    kind = type_ or TYPES[to][0]
    if kind not in TYPES[to]:
        raise ConvertError(f"--type {kind!r} is not available for --to {to} (choose from {', '.join(TYPES[to])})")
    artifact = resolve_model(model, Checkpoints.REFUSE, quiet=as_json)
    from zoo.convert.export_gguf import export_gguf
    from zoo.convert.export_hf import export_hf

    from rich.console import Console  # rich only when there is work to show, not at start-up
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from zoo.card import human_size

    err = Console(stderr=True)
    with Progress(TextColumn(f"exporting to {to}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("", total=None)

        def progress(i: int, n: int, name: str) -> None:
            bar.update(task, completed=i, total=n, description=name)

        run = export_hf if to == "hf" else export_gguf
        result = run(artifact, out, kind, progress=progress, verify=not no_verify)
    if as_json:
        typer.echo(json.dumps({"path": str(result.path), "to": to, "type": result.dtype,
                               "size_bytes": result.size_bytes, "sparsity": round(result.sparsity, 6),
                               "padded_mlp": result.padded_mlp, "fallback_f16": result.fallback}))
        return
    err.print(f"wrote {result.path} ({human_size(result.size_bytes)}, {result.dtype})", highlight=False,
              soft_wrap=True)
    if result.fallback:
        err.print(f"{len(result.fallback)} tensors stored F16 (rows not whole {kind} blocks): "
                  f"{', '.join(result.fallback[:3])}{' ...' if len(result.fallback) > 3 else ''}", highlight=False, soft_wrap=True)
    padded = "; neuron-pruned MLP layers padded with zero neurons to one width" if result.padded_mlp else ""
    err.print(f"sparsity {result.sparsity:.1%} of the linear weights is stored densely in this format: zeros stay "
              f"exact zeros but save no space or time{padded}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)

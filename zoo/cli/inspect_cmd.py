"""`zoo inspect`: validate an artifact and summarize its card, tensors and sizes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zoo.cli import options
from zoo.cli.names import complete_model


def inspect(
    model: str = typer.Argument(..., metavar="MODEL", autocompletion=complete_model,
        help="Artifact directory (or one .safetensors file), or "
             "NAME[:TAG] / registry reference of a pulled model."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    tensors: bool = typer.Option(True, "--tensors/--no-tensors", help="List every tensor (table output)."),
    no_verify: bool = options.no_verify(),
) -> None:
    """Validate an artifact and show its card, per-tensor encodings and totals.

    A directory's files are first checked against the card's sha256 (once; then cached).

    Examples:
      zoo inspect ./smollm2-sparse50-int4
      zoo inspect smollm2-135m-instruct-q8
      zoo inspect ./model --json | jq .totals
    """
    from zoo.cli.resolve import Checkpoints, resolve_model
    from zoo.inspect import inspect_artifact  # imported here: numba loads only for verbs that need it

    path = Path(model).expanduser()
    if not (path.is_file() and path.suffix == ".safetensors"):  # one shard is inspected as is
        path = resolve_model(model, Checkpoints.REFUSE, fetch=False)
    report = inspect_artifact(path, verify=not no_verify)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console  # rich only when a report is drawn, not at start-up
    from rich.table import Table

    out = Console()
    card = report["card"] or {}
    out.print(f"[bold]{card.get('name', report['path'])}[/bold]  "
              f"arch={report['config']['arch']}  format={report['format_version']}")
    for key in ("description", "base_model", "compression", "metrics"):
        if card.get(key) not in (None, {}, ""):
            out.print(f"  {key}: {card[key]}")
    if tensors:
        table = Table("tensor", "encoding", "shape", "sparsity", "bits/w", "bytes", box=None)
        for t in report["tensors"]:
            sparsity = f"{t['sparsity']:.1%}" if t["zero_codes"] is None else f"{t['zero_codes']:.1%} (codes)"
            table.add_row(t["name"], t["encoding"], "x".join(map(str, t["shape"])), sparsity,
                          f"{t['bits_per_weight']:.2f}", f"{t['bytes']:,}")
        out.print(table)
        for encoding, why in dict.fromkeys((t["encoding"], t["why"]) for t in report["tensors"] if t["why"]):
            out.print(f"why {encoding}: {why}")
    tot = report["totals"]
    out.print(f"parameters {tot['parameters']:,}  stored {tot['stored']:,}  sparsity {tot['sparsity']:.1%}  "
              f"bytes {tot['bytes']:,}  bits/w {tot['bits_per_weight']:.3f}  "
              f"linear bits/w {tot['linear_bits_per_weight']:.3f}  linear sparsity {tot['linear_sparsity']:.1%}")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)

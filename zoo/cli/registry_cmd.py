"""`zoo push / pull / list / show / search / rm / cp / gc`: the package-manager verbs.

Progress (bytes, speed, ETA) goes to stderr; `--json` prints one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

# zoo.card (yaml) and rich are imported inside the verbs that use them, not each time `zoo` starts
from zoo.cli.names import complete_model

REGISTRY_HELP = "Registry URL or path (default: ZOO_REGISTRY, then ~/.config/zoo/config.yaml, then ZOO_HOME/registry)."
JSON_HELP = "Print one JSON document on stdout."
def _existing_registry(value: str | None) -> str | None:
    """Callback for commands that read a registry: a local path that does not exist is named as a missing
    directory (a mistyped `--registry ./registy`), not reported later as a model missing from it."""
    if value and "://" not in value and not Path(value).expanduser().exists():
        raise typer.BadParameter(f"{value}: no such registry directory")
    return value


INSECURE_HELP = "Allow plain HTTP to an oci:// registry that is not on loopback (as ZOO_OCI_INSECURE=1)."


def _emit(doc) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


@contextmanager
def _bar(label: str, quiet: bool):
    """A rich byte progress bar on stderr; yields (advance, set_total) callbacks. The bar appears when the total
    is set, i.e. when bytes are about to move: a pull that builds from a recipe instead never shows `0/? bytes`."""
    if quiet or not sys.stderr.isatty():
        yield None, None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    prog = Progress(*columns, console=Console(stderr=True), transient=False)
    task = prog.add_task(label, total=None)

    def set_total(total: int) -> None:
        prog.update(task, total=total)
        prog.start()

    try:
        yield (lambda n: prog.advance(task, n)), set_total
    finally:
        prog.stop()


def push(
    artifact: str = typer.Argument(..., metavar="SOURCE",
        help="Artifact directory, or NAME[:TAG] of a model in the local store."),
    name: str = typer.Argument(..., metavar="NAME", help="NAME[:TAG], or a full s3://, hf:// reference."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", help=REGISTRY_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing tag."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Validate an artifact and its card, upload its blobs, then its manifest.

    Examples:
      zoo push ./smollm2-sparse50 smollm2-sparse50:v1
      zoo push ./smollm2-sparse50 s3://models/zoo/smollm2-sparse50:v1
      zoo push ./smollm2-sparse50 hf://me/smollm2-sparse50
      zoo push smollm2-135m-instruct-q8 smol-q8:v1 --registry ./registry
    """
    from zoo import card as cards
    from zoo.cli.names import suggest_names
    from zoo.cli.resolve import Checkpoints, local_path
    from zoo.errors import NotFoundError
    from zoo.registry import insecure_registries, parse_ref
    from zoo.registry.transfer import push as do_push
    from zoo.store import Store

    path = local_path(artifact, Checkpoints.REFUSE)  # a missing path or a GGUF file is said as such
    if path is None:  # a stored model: near names when it is not there
        store = Store()
        with suggest_names(artifact, store):
            ref = parse_ref(artifact)
            if ref.registry is not None or not store.has(ref.store_name, ref.tag):
                raise NotFoundError(f"{artifact}: not in the local store (push an artifact directory, or "
                                    f"`zoo pull {artifact}` first)")
    with insecure_registries(insecure), _bar(f"push {name}", as_json) as (advance, total):
        summary = do_push(artifact, name, registry=registry, force=force, progress=advance, on_total=total)
    for warning in summary["warnings"]:
        print(f"zoo: warning: {warning}", file=sys.stderr)
    if as_json:
        _emit(summary)
    elif summary["unchanged"]:
        print(f"{summary['name']}:{summary['tag']} is already in {summary['registry']} with the same files "
              "(nothing uploaded)", file=sys.stderr)
    else:
        print(f"pushed {summary['name']}:{summary['tag']} to {summary['registry']} "
              f"({summary['files']} files, {cards.human_size(summary['size'])})", file=sys.stderr)


def pull(
    name: str = typer.Argument(..., metavar="NAME", autocompletion=complete_model,
        help="NAME[:TAG], or s3://…/NAME[:TAG], http(s)://…/NAME[:TAG], hf://org/repo[@rev]."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", callback=_existing_registry,
                                           help=REGISTRY_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="When the model is built from its catalog recipe instead, "
                                                        "build without asking however long the estimate."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Download a model into the local store: missing blobs only, resuming partial ones, sha256-verified.

    A catalog name no registry has is built from its recipe (see `zoo build`): zoo says what that
    downloads and how long it took where measured, and asks first above 10 minutes or 1 GB.

    Examples:
      zoo pull smollm2-sparse50:v1
      zoo pull s3://models/zoo/smollm2-sparse50:v1
      zoo pull hf://me/smollm2-sparse50@main --json
      zoo pull llama-7b-sparse90-int4 --yes
    """
    from zoo import card as cards
    from zoo.cli.long_work import checked, confirm_build, step_progress
    from zoo.cli.names import suggest_names
    from zoo.registry import insecure_registries
    from zoo.registry.transfer import pull as do_pull
    from zoo.store import Store

    log = None if as_json else (lambda msg: print(f"zoo: {msg}", file=sys.stderr))
    with (insecure_registries(insecure), suggest_names(name, Store()),
          _bar(f"pull {name}", as_json) as (advance, total), step_progress(as_json) as steps):
        result = do_pull(name, registry=registry, progress=advance, on_total=total, log=log, steps=steps,
                         confirm=confirm_build(yes, as_json))
    doc = {"name": result.name, "tag": result.tag, "path": str(result.path), "digest": result.digest,
           "downloaded_bytes": result.downloaded_bytes, "reused_bytes": result.reused_bytes, "built": result.built}
    if result.built:  # what the build could check: a card without digests (the 7B cards) verifies nothing
        from zoo.registry.transfer import catalog_card

        card = catalog_card(result.name)
        doc["verified"] = bool(card and card.get("files"))
        doc["base_verified"] = bool(card and ((card.get("recipe") or {}).get("base") or {}).get("sha256"))
    if as_json:
        _emit(doc)
    elif result.built:
        print(f"built {result.name}:{result.tag} from its recipe ({checked(card, doc['verified'])})", file=sys.stderr)
    else:
        print(f"pulled {result.name}:{result.tag} ({cards.human_size(result.downloaded_bytes)} downloaded, "
              f"{cards.human_size(result.reused_bytes)} already present)", file=sys.stderr)


def list_models(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the models in the local store.

    Examples:
      zoo list
      zoo list --json
    """
    from rich.console import Console
    from rich.table import Table

    from zoo import card as cards
    from zoo.store import Store

    items = Store().list()
    if as_json:
        _emit([{**item, "modified": _iso(item["modified"])} for item in items])
        return
    # as `ollama list`: NAME:TAG, ID, SIZE, MODIFIED; at 80 columns a long catalog name stays whole and the ID
    # gives way (names say sparsity and bits; `zoo show` and `--json` have the card)
    table = Table("name", "id", "size", "modified", box=None)
    for column in table.columns:
        column.no_wrap = True
    table.columns[1].overflow = "ellipsis"
    now = time.time()
    for item in items:
        table.add_row(f"{item['name']}:{item['tag']}", item["digest"][:12], cards.human_size(item["size"]),
                      ago(item["modified"], now))
    Console().print(table)


def _iso(posix: float) -> str:
    """An ISO 8601 UTC timestamp, to the second: 2026-12-07T02:18:47+00:00."""
    return datetime.fromtimestamp(posix, timezone.utc).replace(microsecond=0).isoformat()


_SPANS = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400), ("hour", 3600),
          ("minute", 60), ("second", 1))


def ago(then: float, now: float) -> str:
    """How long ago `then` was, as `ollama list` says it: "just now", "2 minutes ago", "1 hour ago"."""
    seconds = now - then
    if seconds < 1:
        return "just now"
    unit, size = next((unit, size) for unit, size in _SPANS if seconds >= size)
    count = int(seconds // size)
    return f"{count} {unit}{'s' if count > 1 else ''} ago"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def show(
    name: str = typer.Argument(..., metavar="MODEL", autocompletion=complete_model,
        help="NAME[:TAG] (store, then registry, then the built-in "
             "catalog), a registry reference, or an artifact directory."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", callback=_existing_registry,
                                           help=REGISTRY_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show a model's card (nothing is downloaded).

    Examples:
      zoo show llama-7b-sparse90-int4
      zoo show smollm2-sparse50:v1 --json
      zoo show ./smol-sgpt50-q4
    """
    from rich.console import Console

    from zoo import card as cards
    from zoo.cli.names import suggest_names
    from zoo.cli.resolve import Checkpoints, local_path
    from zoo.registry import insecure_registries
    from zoo.registry.transfer import show as do_show
    from zoo.store import Store

    path = local_path(name, Checkpoints.REFUSE)
    if path is not None:
        card = _dir_card(path)
        doc = {"name": card.get("name") or path.name, "tag": None, "source": str(path), "card": card,
               "files": card.get("files", [])}
    else:
        with insecure_registries(insecure), suggest_names(name, Store()):
            doc = do_show(name, registry=registry)
    if as_json:
        _emit(doc)
        return
    title = f"{doc['name']}:{doc['tag']}" if doc["tag"] else doc["name"]
    Console().print(cards.render(doc["card"], title=f"{title}  [dim]({doc['source']})[/dim]"))


def _dir_card(path: Path) -> dict:
    """An artifact directory's card (zoo.yaml), parsed within the readers' limits; CardError when malformed."""
    from zoo.errors import CardError
    from zoo.untrusted import MAX_YAML_BYTES, load_yaml

    with open(path / "zoo.yaml", "rb") as f:
        card = load_yaml(f.read(MAX_YAML_BYTES + 1), f"{path}/zoo.yaml", CardError)
    if not isinstance(card, dict):
        raise CardError(f"{path}/zoo.yaml: not a card (a YAML mapping)")
    return card


def search(
    query: Optional[str] = typer.Argument(None, metavar="QUERY",
        help="Words to match in name, description, method, tags."),
    arch: Optional[str] = typer.Option(None, "--arch", help="llama or mpt."),
    min_sparsity: Optional[float] = typer.Option(None, "--min-sparsity", help="e.g. 0.5"),
    bits: Optional[int] = typer.Option(None, "--bits", help="4, 8 or 16."),
    max_size: Optional[str] = typer.Option(None, "--max-size", help="e.g. 500MB, 2GB."),
    max_params: Optional[str] = typer.Option(None, "--max-params", help="e.g. 1e9."),
    max_perplexity: Optional[float] = typer.Option(None, "--max-perplexity", help="Measured perplexity at most."),
    min_decode_tps: Optional[float] = typer.Option(None, "--min-tps", help="Measured decode tokens/s at least."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", callback=_existing_registry,
                                           help=REGISTRY_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Search the registry's cards and the built-in catalog. Unmeasured metrics never pass a filter on them.

    Examples:
      zoo search llama --min-sparsity 0.5 --bits 4
      zoo search --arch mpt --max-size 2GB --json
    """
    from rich.console import Console
    from rich.table import Table

    from zoo import card as cards
    from zoo.registry import insecure_registries
    from zoo.registry.transfer import search as do_search

    with insecure_registries(insecure):
        results = do_search(query, registry=registry, arch=arch, min_sparsity=min_sparsity, bits=bits,
                            max_size=cards.parse_size(max_size) if max_size else None,
                            max_params=int(float(max_params)) if max_params else None,
                            max_perplexity=max_perplexity, min_decode_tps=min_decode_tps)
    if as_json:
        _emit([{k: v for k, v in r.items() if k != "card"} for r in results])
        return
    table = Table("name", "arch", "params", "sparsity", "bits", "recovery", "size", "ppl/base", "tech/base", "tok/s",
                  "source", box=None)
    table.columns[0].no_wrap = True
    machines: list[str] = []  # footnotes: a speed means nothing without the CPU it was measured on
    for r in results:
        name = f"{r['name']}:{r['tag']}" if r["tag"] else r["name"]
        params = "-" if r["parameters"] is None else f"{r['parameters'] / 1e9:.2f}B"
        tps = "-"
        if r["decode_tps"] is not None:
            machine = r["decode_machine"] or "machine not recorded"
            machines += [machine] if machine not in machines else []
            tps = f"{r['decode_tps']} [{machines.index(machine) + 1}]"
        table.add_row(name, r["architecture"] or "-", params, _pct(r["sparsity"]), str(r["bits"] or "-"),
                      r["recovery"] or "-", cards.human_size(r["size_bytes"]), _times(r["perplexity_ratio"]), _times(r["perplexity_technical_ratio"]), tps, r["source"])
    Console().print(table)
    for i, machine in enumerate(machines, 1):
        print(f"[{i}] tok/s measured on {machine}")
    if not results:
        print("no model matches", file=sys.stderr)


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"x{ratio:.2f}"


def rm(
    names: list[str] = typer.Argument(..., metavar="NAME[:TAG]", autocompletion=complete_model,
        help="Models in the local store (`:latest` "
             "when no tag is given)."),
    prune: bool = typer.Option(False, "--prune", help="Then delete the blobs no stored model refers to "
                                                      "(what `zoo gc` does) and report the bytes freed."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Remove models from the local store; their blobs stay until `zoo gc` (or `--prune`).

    As `docker rmi`: every name that exists is removed, each name that does not is an error line,
    and the exit code is 1 if any name was not found.

    Examples:
      zoo rm smollm2-sparse50:v1 smol-q8 --prune
    """
    from zoo import card as cards
    from zoo.cli.names import suggest_names
    from zoo.errors import ZooError
    from zoo.registry import parse_ref
    from zoo.store import Store

    store = Store()
    removed, failed = [], []
    for name in names:
        try:
            with suggest_names(name, store, catalog=False):
                ref = parse_ref(name)
                store.remove(ref.store_name, ref.tag)
        except ZooError as err:
            failed.append({"name": name, "error": str(err)})
            print(f"zoo: error: {err}", file=sys.stderr)
            continue
        removed.append(f"{ref.store_name}:{ref.tag}")
        if not as_json:
            print(f"removed {ref.store_name}:{ref.tag}", file=sys.stderr)
    pruned = store.gc() if prune else None
    if as_json and (removed or pruned):
        _emit({"removed": removed, "errors": failed, "pruned": pruned})
    elif pruned:
        print(f"pruned {pruned['blobs_removed']} blobs, {pruned['snapshots_removed']} snapshots, "
              f"freed {cards.human_size(pruned['bytes_freed'])}", file=sys.stderr)
    if failed:
        raise typer.Exit(1)


def cp(
    source: str = typer.Argument(..., metavar="SOURCE", autocompletion=complete_model,
        help="NAME[:TAG] in the local store."),
    target: str = typer.Argument(..., metavar="TARGET", help="The new NAME[:TAG] (`:latest` when no tag is given)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Give a stored model another name or tag, as `ollama cp`: no file is copied, both names share its blobs.

    A TARGET that already names another model is refused (`zoo rm` it first).

    Examples:
      zoo cp smollm2-sparse50:v1 smol
      zoo cp smol smol:stable
    """
    from zoo.cli.names import suggest_names
    from zoo.registry import parse_ref
    from zoo.store import Store

    store = Store()
    src, dst = parse_ref(source), parse_ref(target)
    if src.registry is not None or dst.registry is not None:
        from zoo.errors import RegistryError

        raise RegistryError("zoo cp names models in the local store: NAME[:TAG], not a registry reference "
                            "(`zoo pull` or `zoo push` copy between registries)")
    with suggest_names(source, store, catalog=False):
        digest = store.copy(src.store_name, src.tag, dst.store_name, dst.tag)
    if as_json:
        _emit({"source": f"{src.store_name}:{src.tag}", "target": f"{dst.store_name}:{dst.tag}", "digest": digest})
    else:
        print(f"copied {src.store_name}:{src.tag} to {dst.store_name}:{dst.tag}", file=sys.stderr)


def gc(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Delete blobs and snapshots that no stored model refers to.

    Examples:
      zoo gc
    """
    from zoo import card as cards
    from zoo.store import Store

    result = Store().gc()
    if as_json:
        _emit(result)
    else:
        print(f"removed {result['blobs_removed']} blobs, {result['snapshots_removed']} snapshots, "
              f"freed {cards.human_size(result['bytes_freed'])}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("push")(push)
    app.command("pull")(pull)
    app.command("list")(list_models)
    app.command("show")(show)
    app.command("search")(search)
    app.command("rm")(rm)
    app.command("cp")(cp)
    app.command("gc")(gc)

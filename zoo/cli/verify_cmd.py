"""`zoo verify MODEL`: hash every file of a stored model or an artifact directory against its digests."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zoo.cli.consoles import stderr_console
from zoo.cli.names import complete_model


def verify(
    target: str = typer.Argument(..., metavar="MODEL", autocompletion=complete_model,
        help="A model in the local store (NAME[:TAG], :latest "
             "implied, or a registry reference) or an artifact "
             "directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Re-check every file against the sha256 its card (and, for a stored model, its manifest) promises.

    Every file is hashed (the verification cache is not trusted here, only refreshed); each failure is
    printed on its own line, then a summary. Exit 1 on any mismatch, missing file, or a missing or
    inconsistent card.

    Examples:
      zoo verify smollm2-sparse50-int4
      zoo verify ./my-model --json
    """
    from zoo.errors import ChecksumError

    with stderr_console().status(f"verifying {target}", spinner="dots") if not as_json else _Null() as status:
        path, report = _verify(target, (lambda rel: status.update(f"verifying {rel}")) if status else None)
    failures = [{"path": rel, "problem": problem} for rel, problem in report.failures]
    if as_json:
        typer.echo(json.dumps({"target": target, "path": str(path), "files": report.checked, "bytes": report.bytes,
                               "ok": not failures, "failures": failures}))
    else:
        for f in failures:
            typer.echo(f"{f['path']}: {f['problem']}")
    if failures:
        raise ChecksumError(f"{target}: {len(failures)} problem(s) found in {report.checked} file(s) ({path})")
    if not as_json:
        typer.echo(f"{target}: {report.checked} files, {report.bytes:,} bytes: every sha256 matches")


def _verify(target: str, on_file):
    """(path, Report) for an artifact directory, or a model in the local store (its manifest checked too)."""
    from zoo.cli.names import suggest_names
    from zoo.cli.resolve import Checkpoints, local_path
    from zoo.errors import NotFoundError
    from zoo.registry import parse_ref
    from zoo.store import Store
    from zoo.verify import verify_dir, verify_stored

    path = Path(target).expanduser()
    if not path.is_dir():  # a directory is verified as it is: a missing or broken card is one of its failures
        path = local_path(target, Checkpoints.REFUSE)
    if path is not None:
        return path, verify_dir(path, on_file=on_file)
    ref, store = parse_ref(target), Store()
    with suggest_names(target, store):
        if not store.has(ref.store_name, ref.tag):
            raise NotFoundError(f"{target}: not in the local store (`zoo pull {target}` fetches it, "
                                "verified as it downloads)")
    return verify_stored(store, ref.store_name, ref.tag, on_file)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)

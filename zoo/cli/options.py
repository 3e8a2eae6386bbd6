"""Command-line options several verbs share, each with its range checked before the command runs.

A value out of range is a usage error (one line, exit 2), never a silent default or an "internal
error" further down: `--threads 0`, `--ctx -5`, `--seed -1`, `--temperature nan`, `--group-size 0`,
`-o some-file/sub` and a prompt that is not valid UTF-8 all stop here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer


def finite(value: float | None) -> float | None:
    """Callback: refuse nan and ±inf (typer's ranges let them through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def utf8(value: Any) -> Any:
    """Callback: refuse text that is not valid UTF-8 (the shell hands such bytes over as surrogates)."""
    for text in value if isinstance(value, (list, tuple)) else [value]:
        if text is not None:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise typer.BadParameter("is not valid UTF-8 text") from None
    return value


def output_dir(value: Path | None) -> Path | None:
    """Callback: an output directory whose parent path runs through a file can never be created."""
    if value is not None:
        for parent in value.expanduser().absolute().parents:
            if parent.exists() and not parent.is_dir():
                raise typer.BadParameter(f"{parent} is a file, so {value} cannot be created")
    return value


def threads() -> Any:
    return typer.Option(None, "--threads", min=1, help="Kernel threads (default: all CPUs).")


def ctx(default: int | None, help: str) -> Any:
    return typer.Option(default, "--ctx", min=1, help=help)


def seed(default: int | None, help: str) -> Any:
    return typer.Option(default, "--seed", min=0, help=help)


def group_size(default: int, help: str) -> Any:
    return typer.Option(default, "--group-size", min=1, help=help)


def temperature() -> Any:
    return typer.Option(0.7, "--temperature", "-t", min=0.0, callback=finite, help="0 = greedy.")


def no_verify() -> Any:
    return typer.Option(False, "--no-verify", help="Skip checking the files against the card's sha256 "
                                                   "(hashed once per file, then cached by inode, size and mtime).")


def out(default: Path | None, *names: str, help: str) -> Any:
    return typer.Option(default, *names, callback=output_dir, help=help)


def hide_flag_types() -> None:
    """Show flags (`--json`, `-h/--help`, counters) in help without a `<bool>` type: they take no value.

    typer 0.29's help prints every option's Python type, flags included; git, ollama and click itself
    print a flag bare, so a flag here shows the metavar it was given, or nothing.
    """
    from typer.core import TyperOption

    typed = TyperOption.display_type_rich
    if getattr(typed, "hides_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if (self.is_flag or self.count) and self.metavar is None:
            return None
        return typed(self, ctx)

    display_type_rich.hides_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]

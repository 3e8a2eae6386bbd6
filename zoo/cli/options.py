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


def threads(help: str = "Kernel threads (default: all CPUs).") -> Any:
    return typer.Option(None, "--threads", min=1, help=help)


def ctx(default: int | None, help: str) -> Any:
    return typer.Option(default, "--ctx", min=1, help=help)


def seed(default: int | None, help: str) -> Any:
    return typer.Option(default, "--seed", min=0, help=help)


def group_size(default: int, help: str) -> Any:
    return typer.Option(default, "--group-size", min=1, help=help)


def temperature() -> Any:
    return typer.Option(0.7, "--temperature", min=0.0, callback=finite, help="0 = greedy.")


def no_verify() -> Any:
    return typer.Option(False, "--no-verify", help="Skip checking the files against the card's sha256 "
                                                   "(hashed once per file, then cached by inode, size and mtime).")


def yes() -> Any:
    return typer.Option(False, "--yes", "-y", help="When MODEL is built from its catalog recipe, build without "
                                                   "asking however long the estimate (as `zoo pull --yes`).")


def out(default: Path | None, *names: str, help: str) -> Any:
    return typer.Option(default, *names, callback=output_dir, help=help)


# Old spellings still accepted but not shown in help: one name per concept across commands (issue 21).
HIDDEN_ALIASES: dict[str, tuple[str, ...]] = {
    "--output": ("--out",),  # compress, sweep and tune said --out, convert and export --output
    "--temperature": ("-t",),  # run's -t; -t is --tag (build), as in docker and podman
}


def accept_hidden_aliases() -> None:
    """Let every option whose name is a key of HIDDEN_ALIASES also be given by its aliases, which help never
    lists (click has no hidden alias of its own: they are added to the parser, not to the option's names)."""
    from typer.core import TyperOption

    add = TyperOption.add_to_parser
    if getattr(add, "adds_aliases", False):
        return

    def add_to_parser(self: TyperOption, parser: Any, ctx: Any) -> None:
        add(self, parser, ctx)
        aliases = [alias for name in self.opts for alias in HIDDEN_ALIASES.get(name, ())]
        if aliases:
            opts, secondary = self.opts, self.secondary_opts
            self.opts, self.secondary_opts = aliases, []
            try:
                add(self, parser, ctx)
            finally:
                self.opts, self.secondary_opts = opts, secondary

    add_to_parser.adds_aliases = True  # type: ignore[attr-defined]
    TyperOption.add_to_parser = add_to_parser  # type: ignore[method-assign]


ENCODING_ALIASES = {"int4": "q4", "int8": "q8", "sparse-int4": "sparse-q4", "sparse-int8": "sparse-q8"}


def encoding(value: str) -> str:
    """Callback: zoo's encodings are spelled q4/q8 (format/SPEC.md); int4/int8 are accepted as hidden aliases."""
    return ENCODING_ALIASES.get(value.lower(), value) if value else value


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

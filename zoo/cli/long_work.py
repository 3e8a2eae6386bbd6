"""Long work said honestly: a build's cost before it starts (asking above a threshold), and a step bar with ETA.

`confirm_build(yes=...)` is the callback zoo.build.build and the pull/run build fallback call with the
estimate; `step_progress(quiet)` turns the compression's "layer i/N: ..." messages into a rich bar on stderr.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from zoo.errors import BuildError

if TYPE_CHECKING:  # zoo.build pulls in zoo.format and numpy: imported only when a build is estimated
    from zoo.build.estimate import BuildEstimate

CONFIRM_SECONDS = 600  # a build estimated longer than this is asked about first
CONFIRM_BYTES = 1_000_000_000  # and one that downloads more than this

_STEP = re.compile(r"^(?P<phase>\D*?)\s*(?P<done>\d+)/(?P<total>\d+)\b[:,]?\s*(?P<detail>.*)$")
_ETA = re.compile(r"\s*\(eta [^)]*\)")  # the pipeline's own ETA text: the bar shows one


def confirm_build(yes: bool, quiet: bool = False,
                  go_ahead: str = "run again with --yes to go ahead") -> Callable[[BuildEstimate], None]:
    """The `confirm` callback of a build: say its cost on stderr (unless quiet), and above the threshold ask on a
    terminal, or refuse in one line ending with `go_ahead` (how to build anyway) when stdin is not one. `yes`
    goes ahead without asking."""

    def confirm(estimate: BuildEstimate) -> None:
        from zoo import card as cards
        from zoo.build.estimate import duration

        ask = not yes and estimate.exceeds(CONFIRM_SECONDS, CONFIRM_BYTES)
        if ask and not sys.stdin.isatty():  # the refusal says it all, on one line
            raise BuildError(f"{estimate.words}; that is over {duration(CONFIRM_SECONDS)} or "
                             f"{cards.human_size(CONFIRM_BYTES)} (or of unknown size), so zoo asks first, and stdin "
                             f"is not a terminal: {go_ahead}")
        if not quiet or ask:
            print(f"zoo: {estimate.words}", file=sys.stderr)
        if ask and not typer.confirm(f"Build {estimate.name}?", default=False, err=True):
            raise BuildError(f"{estimate.name}: not built (declined)")

    return confirm


def checked(card: dict | None, files_verified: bool) -> str:
    """What a build from `card`'s recipe checked, said honestly for its last line. Built files that match the
    card's digests verify the whole build; a card without digests (the 7B cards) leaves only the base's sha256,
    and only when the recipe pins one."""
    if files_verified:
        return "every file matches the card's sha256"
    base = ((card or {}).get("recipe") or {}).get("base") or {}
    pinned = "only the base was checked (it matched the recipe's sha256)" if base.get("sha256") else \
        "nor was the base (the recipe pins no sha256)"
    return f"UNVERIFIED: the card lists no file digests, so the built files were not checked; {pinned}"


@dataclass(frozen=True)
class Step:
    """One progress message as a step: `phase` (e.g. "layer", "owl: layer"), done of total, and the rest."""

    phase: str
    done: int
    total: int
    detail: str


def parse_step(message: str) -> Step | None:
    """The step a message like "layer 3/30: sparsity 0.500 (eta 1m02s)" reports, or None for a plain message."""
    m = _STEP.match(message)
    if m is None or not m["phase"].strip() or int(m["total"]) <= 0:
        return None
    return Step(m["phase"].strip(), int(m["done"]), int(m["total"]), _ETA.sub("", m["detail"]).strip(" ,:"))


@contextmanager
def step_progress(quiet: bool, plain: Callable[[str], None] | None = None) -> Iterator[Callable[[str], None]]:
    """A `progress(str)` callback: nothing when quiet, `plain` lines (default `zoo: ...`) when stderr is not a
    terminal, else a bar per phase (done/total, ETA, the latest detail), started at the first step (so a
    question asked before it is not drawn over) and gone when the work ends."""
    if quiet:
        yield lambda _message: None
        return
    if not sys.stderr.isatty():  # as the byte bar of `zoo pull` decides, before rich is imported
        yield plain or (lambda message: print(f"zoo: {message}", file=sys.stderr))
        return
    from rich.console import Console  # rich only to draw bars: `zoo pull` to a pipe starts without it
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    console = Console(stderr=True, highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("[dim]{task.fields[detail]}"))
    bar = Progress(*columns, console=console, transient=True)
    shown: dict[str, tuple[TaskID, Step]] = {}  # phase -> its bar and latest step

    def progress(message: str) -> None:
        step = parse_step(message)
        if step is None:
            bar.console.print(f"zoo: {message}", markup=False)
            return
        if not shown:
            bar.start()
        task, last = shown.get(step.phase, (None, None))
        if last is None or last.done > step.done or last.total != step.total:  # a phase starts (again)
            if task is not None:
                bar.remove_task(task)
            task = bar.add_task(step.phase, total=step.total, detail="")
        shown[step.phase] = (task, step)
        bar.update(task, completed=step.done, detail=step.detail)

    try:
        yield progress
    finally:
        bar.stop()

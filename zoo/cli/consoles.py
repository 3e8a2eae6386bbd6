"""The CLI's rich console on stderr, made on first use: importing rich is a start-up cost `zoo pull` need not pay."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def stderr_console() -> Console:
    """One console for notes, spinners and warnings on stderr (it writes to sys.stderr as it is at each print)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)

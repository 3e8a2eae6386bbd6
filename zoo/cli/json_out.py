"""`--json` means stdout holds exactly one JSON document: whatever else the work writes there goes to stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """While the work runs, send stdout to stderr when `active` (--json): a library's print and a C extension's
    write to file descriptor 1 alike, so the JSON printed afterwards is all a pipe reads."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)

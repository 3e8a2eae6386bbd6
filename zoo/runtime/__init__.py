"""zoo.runtime: run Llama and MPT artifacts on the CPU with encoded weights (numba kernels).

Public API: `load(path, ctx=None, threads=None, verify=False) -> (Model, Tokenizer)`, `Session` (generate, chat),
`SamplingParams`, `measure` (the benchmark), and `reference` (the dense numpy forward).
"""

from __future__ import annotations

from pathlib import Path

from .generate import Result, Session
from .sampling import SamplingParams


def load(path: str | Path, ctx: int | None = None, threads: int | None = None, verify: bool = False):
    """Open, validate and load an artifact; returns (Model, Tokenizer or None when it has no tokenizer.json).
    verify=True checks the directory's files (tokenizer included) against the card's sha256 first."""
    from .model import Model
    from .tokenizer import Tokenizer

    if threads:
        set_threads(threads)
    model = Model.load(path, ctx=ctx, verify=verify)
    has_tokenizer = (Path(path) / "tokenizer.json").is_file()
    return model, Tokenizer.from_artifact(Path(path), model.config) if has_tokenizer else None


def set_threads(n: int) -> None:
    """Threads for the numba kernels (1..number of CPUs)."""
    import numba

    from zoo.errors import RuntimeModelError

    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise RuntimeModelError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {n}")
    numba.set_num_threads(n)


__all__ = ["Result", "SamplingParams", "Session", "load", "set_threads"]

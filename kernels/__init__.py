"""zoo.kernels: numba CPU kernels that compute on zoo-format encoded weights, never densifying them.

Public API (docs/kernels.md): `linear`, `prepare`, `selected_path`, `set_path`, `available_paths`,
`set_threads`, `get_threads`, and the small ops in ops.py / attention.py. Kernels compile lazily on
first use and are cached on disk (numba cache=True), so a second process does not recompile.
"""

from __future__ import annotations

import numba

from ._cpu import supported_paths as _supported
from ._paths import selected_path, set_path
from .linear import PreparedWeight, linear, prepare
from .wrappers import (alibi_slopes, attention, gelu, layernorm, rmsnorm, rope, rope_tables, silu_mul,
                       softmax)


def available_paths() -> list[str]:
    """Kernel paths this CPU can run, slowest first (always includes 'portable')."""
    return _supported()


def set_threads(n: int) -> None:
    """Threads used by the parallel kernels (numba; applies to the calling thread)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_threads() -> int:
    return numba.get_num_threads()


__all__ = ["PreparedWeight", "alibi_slopes", "attention", "available_paths", "gelu", "get_threads", "layernorm",
           "linear", "prepare", "rmsnorm", "rope", "rope_tables", "selected_path", "set_path", "set_threads", "silu_mul",
           "softmax"]

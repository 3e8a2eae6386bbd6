"""zoo.kernels: numba CPU kernels that compute on zoo-format encoded weights, never densifying them.

Public API (docs/kernels.md): `linear`, `quantize_input`, `prepare`, `PreparedWeight`, `selected_path`,
`set_path`, `available_paths`, `set_threads`, `get_threads`, and the small ops of ops.py. Kernels compile lazily on
first use and are cached on disk (jit.py: keyed to the package's sources), so a second process does not
recompile.
"""

from __future__ import annotations

import numba

from .activations import Activations, quantize_input
from .cpu import selected_path, set_path
from .cpu import supported_paths as _supported
from .dispatch import linear
from .layout import PreparedWeight, prepare
from .ops import alibi_slopes, attention, gelu, layernorm, rmsnorm, rope, rope_tables, silu_mul, softmax


def available_paths() -> list[str]:
    """Kernel paths this CPU can run, slowest first (always includes 'portable')."""
    return _supported()


def set_threads(n: int) -> None:
    """Threads used by the parallel kernels (numba; applies to the calling thread)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_threads() -> int:
    return numba.get_num_threads()


__all__ = ["Activations", "PreparedWeight", "alibi_slopes", "attention", "available_paths", "gelu", "get_threads",
           "layernorm", "linear", "prepare", "quantize_input", "rmsnorm", "rope", "rope_tables", "selected_path", "set_path",
           "set_threads", "silu_mul", "softmax"]

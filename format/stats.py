"""Size statistics of encoded tensors: stored values, bytes, bits per weight, structural sparsity."""

from __future__ import annotations

import numba
import numpy as np

from .checks import _popcount
from .encode import EncodedTensor


@numba.njit(cache=True, nogil=True)
def _mask_popcount(bitmask):
    """Set bits in a uint64 [rows, words] mask."""
    rows, words = bitmask.shape
    per_row = np.zeros(rows, np.int64)
    for r in range(rows):
        c = np.uint64(0)
        for w in range(words):
            c += _popcount(bitmask[r, w])
        per_row[r] = c
    return per_row.sum()


def tensor_stats(t: EncodedTensor) -> dict:
    """numel, stored (positions the encoding stores), sparsity (1 - stored/numel), bytes, bits_per_weight."""
    numel = int(np.prod(t.shape))
    stored = int(_mask_popcount(t.parts["bitmask"])) if t.encoding.startswith("sparse-") else numel
    nbytes = t.nbytes
    return {"numel": numel, "stored": stored, "sparsity": 1.0 - stored / numel if numel else 0.0,
            "bytes": nbytes, "bits_per_weight": 8.0 * nbytes / numel if numel else 0.0}


def is_linear(name: str, t: EncodedTensor) -> bool:
    """A linear layer's weight: a matrix other than the token embedding."""
    return len(t.shape) == 2 and name != "token_embd.weight"

"""Size statistics of encoded tensors: stored values, bytes, bits per weight, structural sparsity, zero weights."""

from __future__ import annotations

import numba
import numpy as np

from .checks import _popcount
from .constants import ENCODINGS, TILE_GROUP, n_groups
from .encode import EncodedTensor, unpack_nibbles


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
    """numel, stored (positions the encoding stores), sparsity (1 - stored/numel), bytes, bits_per_weight.

    For tile4-q4, stored counts the real positions the tiles keep, min(keep, width) per row and group
    (what validation guarantees); the padding lanes of a narrow last group are in bytes, not stored.
    """
    numel = int(np.prod(t.shape))
    if t.encoding == "tile4-q4":
        rows, cols = t.shape
        widths = np.minimum(TILE_GROUP, cols - TILE_GROUP * np.arange(n_groups(cols, TILE_GROUP)))
        stored = rows * int(np.minimum(t.keep, widths).sum())
    elif ENCODINGS[t.encoding].sparse:  # sparse-*: the set bits of the mask
        stored = int(_mask_popcount(t.parts["bitmask"]))
    else:
        stored = numel
    nbytes = t.nbytes
    return {"numel": numel, "stored": stored, "sparsity": 1.0 - stored / numel if numel else 0.0,
            "bytes": nbytes, "bits_per_weight": 8.0 * nbytes / numel if numel else 0.0}


def decoded_zeros(t: EncodedTensor, rows_per_step: int = 1024) -> int | None:
    """How many weights of a q4/q8 tensor decode to exactly 0 (pruned weights kept dense): a code equal to its
    group's zero point (8 for symmetric q4, 0 for q8), or any code of a group whose scale is 0. None otherwise.

    Counted on the codes, `rows_per_step` rows at a time, so a 7B weight needs no dense copy.
    """
    if t.encoding not in ("q4", "q8"):
        return None
    rows, cols = t.shape
    g = t.group_size
    zero = 0
    for r in range(0, rows, rows_per_step):
        q = np.asarray(t.parts["qweight"][r:r + rows_per_step])
        if t.encoding == "q4":
            q = unpack_nibbles(q, cols)  # uint8 u [step, cols]
            z = np.asarray(t.parts["zeros"][r:r + rows_per_step]) if "zeros" in t.parts else np.uint8(8)
        else:
            z = np.int8(0)
        if np.ndim(z):
            z = np.repeat(z, g, axis=1)[:, :cols]  # [step, cols]
        dead = np.repeat(np.asarray(t.parts["scales"][r:r + rows_per_step]) == 0, g, axis=1)[:, :cols]
        zero += int(np.count_nonzero((q == z) | dead))
    return zero


def is_linear(name: str, t: EncodedTensor) -> bool:
    """A linear layer's weight: a matrix other than the token embedding."""
    return len(t.shape) == 2 and name != "token_embd.weight"

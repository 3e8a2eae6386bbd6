"""Pruning masks from importance scores: per row, per layer, N:M, tile4; magnitude and Wanda scores.

A mask is bool [rows, cols] with True = keep. Selection is that of a stable sort (ties break by
position), so the same scores always give the same mask; the k lowest are found by partition.

tile4 (the `tile4-q4` encoding, format/SPEC.md): the 4 rows of a tile (rows 4t..4t+3) share one
column mask, and every (tile, 128-column group) keeps exactly K = 128·(1 − sparsity) columns, K in
{16, 32, 48, 64}; a narrower last group keeps min(K, width). The tile's score of a column is the sum
of its 4 rows' scores.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import CompressError
from zoo.format.constants import TILE_GROUP, TILE_KEEP, TILE_ROWS

PATTERNS = ("unstructured", "2:4", "4:8", "neurons", "tile4")

# sparsity -> columns kept per (tile, 128-column group), from the format's table: {0.5: 64, 0.625: 48, 0.75: 32, 0.875: 16}
TILE4_KEEP = {1 - keep / TILE_GROUP: keep for keep in sorted(TILE_KEEP, reverse=True)}


def parse_nm(pattern: str) -> tuple[int, int] | None:
    """'2:4' -> (2, 4) (keep N of every M); None for 'unstructured', 'neurons' and 'tile4'."""
    if pattern in ("unstructured", "neurons", "tile4"):
        return None
    try:
        n, m = (int(p) for p in pattern.split(":"))
    except ValueError:
        raise CompressError(f"pattern {pattern!r}: expected unstructured, neurons, tile4 or N:M such as 2:4") from None
    if not 0 < n < m:
        raise CompressError(f"pattern {pattern!r}: need 0 < N < M")
    return n, m


def n_pruned(total: int, sparsity: float) -> int:
    """How many of `total` weights a sparsity prunes (round half to even, as numpy.rint)."""
    return int(np.rint(total * sparsity))


def _lowest_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool [rows, n]: the k lowest of every row, ties broken by position — the first k of a stable
    argsort, found in O(n) with a partition (a full sort of 7B-sized layers dominated Wanda's time)."""
    kth = np.partition(scores, k - 1, axis=1)[:, k - 1:k]  # [rows, 1] the k-th lowest value of each row
    below = scores < kth
    ties = scores == kth
    need = k - below.sum(axis=1, keepdims=True)  # [rows, 1] how many tied values to take, leftmost first
    return below | (ties & (np.cumsum(ties, axis=1) <= need))


def prune_lowest_per_row(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask pruning the round(sparsity*cols) lowest scores of every row."""
    rows, cols = scores.shape
    k = n_pruned(cols, sparsity)
    if not k:
        return np.ones((rows, cols), dtype=bool)
    return ~_lowest_k(scores, k)


def prune_lowest_global(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask pruning the k lowest scores of the whole matrix."""
    if not k:
        return np.ones(scores.shape, dtype=bool)
    return ~_lowest_k(scores.reshape(1, -1), k).reshape(scores.shape)


def prune_nm(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep-mask keeping the n highest scores in every group of m consecutive columns of a row.

    A trailing partial group (cols % m) keeps its top round(len*n/m).
    """
    rows, cols = scores.shape
    mask = np.zeros((rows, cols), dtype=bool)
    full = cols - cols % m
    if full:
        groups = scores[:, :full].reshape(rows, full // m, m)
        keep = np.argsort(-groups, axis=2, kind="stable")[:, :, :n]  # [rows, groups, n]
        gmask = np.zeros(groups.shape, dtype=bool)
        np.put_along_axis(gmask, keep, True, axis=2)
        mask[:, :full] = gmask.reshape(rows, full)
    if full < cols:
        tail = scores[:, full:]
        mask[:, full:] = prune_lowest_per_row(tail, 1.0 - n / m)
    return mask


def tile4_keep(sparsity: float | None) -> int:
    """K, the columns each (tile, 128-column group) keeps, for a tile4 sparsity; CompressError otherwise."""
    for level, keep in TILE4_KEEP.items():
        if sparsity is not None and abs(sparsity - level) < 1e-9:
            return keep
    allowed = ", ".join(f"{s:g}" for s in TILE4_KEEP)
    shown = "none" if sparsity is None else f"{sparsity:g}"
    raise CompressError(f"pattern tile4 needs sparsity {allowed} (keep {', '.join(map(str, TILE4_KEEP.values()))} "
                        f"of every 128 columns), got {shown}")


def prune_tile4(scores: np.ndarray, keep: int) -> np.ndarray:
    """Keep-mask [rows, cols]: the 4 rows of each tile share columns; every (tile, 128-column group)
    keeps the `keep` columns with the highest score summed over the tile's rows (min(keep, width) in a
    narrower last group). Ties break by position as in the other patterns (the leftmost lowest pruned)."""
    rows, cols = scores.shape
    if rows % TILE_ROWS:
        raise CompressError(f"pattern tile4 needs a row count divisible by {TILE_ROWS}, got a {rows}x{cols} weight")
    tiles = rows // TILE_ROWS
    tile_scores = scores.reshape(tiles, TILE_ROWS, cols).sum(axis=1, dtype=np.float64)  # [tiles, cols]
    tmask = np.ones((tiles, cols), dtype=bool)
    full = cols - cols % TILE_GROUP
    if full and keep < TILE_GROUP:
        groups = tile_scores[:, :full].reshape(-1, TILE_GROUP)  # [tiles * full groups, 128]
        tmask[:, :full] = ~_lowest_k(groups, TILE_GROUP - keep).reshape(tiles, full)
    width = cols - full
    if width > keep:
        tmask[:, full:] = ~_lowest_k(tile_scores[:, full:], width - keep)
    return np.repeat(tmask, TILE_ROWS, axis=0)


def select(scores: np.ndarray, sparsity: float, pattern: str = "unstructured", scope: str = "row") -> np.ndarray:
    """Keep-mask from scores (higher = more important) for a pattern; scope 'row' or 'layer' (unstructured)."""
    if pattern == "tile4":
        return prune_tile4(scores, tile4_keep(sparsity))
    nm = parse_nm(pattern)
    if nm is not None:
        return prune_nm(scores, *nm)
    if scope == "layer":
        return prune_lowest_global(scores, n_pruned(scores.size, sparsity))
    return prune_lowest_per_row(scores, sparsity)


def magnitude_scores(w: np.ndarray) -> np.ndarray:
    """|W|."""
    return np.abs(w)


def wanda_scores(w: np.ndarray, col_norms: np.ndarray) -> np.ndarray:
    """Wanda's |W| * ||x_col||_2: weight size times the L2 norm of its input feature over the calibration tokens."""
    return np.abs(w) * col_norms[None, :].astype(w.dtype)


def pattern_sparsity(pattern: str, sparsity: float | None) -> float:
    """The sparsity a pattern implies: N:M fixes it to 1 - N/M, tile4 allows four levels, otherwise the requested value."""
    if pattern == "tile4":
        keep = tile4_keep(sparsity)
        return 1.0 - keep / TILE_GROUP
    nm = parse_nm(pattern)
    if nm is None:
        if sparsity is None:
            raise CompressError("--sparsity is required for unstructured and neuron pruning")
        return float(sparsity)
    implied = 1.0 - nm[0] / nm[1]
    if sparsity is not None and sparsity not in (0.0, implied) and abs(sparsity - implied) > 1e-9:
        raise CompressError(f"pattern {pattern} implies sparsity {implied:g}, not {sparsity:g}")
    return implied

"""The optimal-brain-surgeon column sweep shared by SparseGPT and GPTQ.

Columns are processed left to right in lazy blocks; each column is pruned (SparseGPT picks the mask
from w² / [H⁻¹]²_cc at the start of each block, or every M columns for N:M; for tile4 the block is
one 128-column group and its scores are summed over each 4-row tile) and/or quantized (GPTQ),
and its error is spread over the not-yet-processed columns through the upper Cholesky factor of the
inverse Hessian H = XᵀX of the layer input. Pruned weights end exactly zero; quantized weights end
on the group grid. float64 throughout: the matrices are small next to the forward pass.

GPTQ act-order: columns are swept in order of decreasing H_cc (the inputs with the most energy
first, while the most columns remain to absorb their error) with *static groups*, as the reference
GPTQ code's `static_groups`: every group's scale is fixed up front from the original weights of its
natural (contiguous) columns, so the stored layout — one scale per group of dense columns — needs no
column index; the permutation is undone before the weights and codes are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from zoo.errors import CompressError
from zoo.format import Q4_TOP_CODE

from .masks import TILE_GROUP, n_pruned, parse_nm, prune_lowest_global, prune_nm, prune_tile4, tile4_keep
from .quant import f16_scale, group_scales, group_zero_points, per_column, qmax_of


@dataclass
class ObsResult:
    """Final weights float32 [rows, cols], keep-mask, and codes int8 / scales f16 (/ zero points) when quantized."""

    weight: np.ndarray
    mask: np.ndarray
    codes: np.ndarray | None
    scales: np.ndarray | None
    zeros: np.ndarray | None = None  # uint8 [rows, groups]: q4 zero points (`zero_points`)


def inverse_hessian_factor(h: np.ndarray, percdamp: float) -> tuple[np.ndarray, np.ndarray]:
    """(upper Cholesky factor U of (H + λI)⁻¹ with λ = percdamp·mean(diag H), dead-column mask).

    Columns never active in the calibration data (diag 0) get H_cc = 1 so the factorization exists;
    the caller zeroes their weights.
    """
    h = np.array(h, dtype=np.float64)  # [cols, cols]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    damp = percdamp * float(np.mean(np.diag(h)))
    h[np.diag_indices_from(h)] += damp
    try:
        lower = np.linalg.cholesky(h)
        inv = np.linalg.inv(lower)
        hinv = inv.T @ inv  # H⁻¹
        u = np.linalg.cholesky(hinv).T  # upper: H⁻¹ = Uᵀ U
    except np.linalg.LinAlgError:
        raise CompressError("layer Hessian is not positive definite even after dampening; "
                            "use more calibration samples or a larger dampening") from None
    return u, dead


@numba.njit(cache=True)
def _sweep(w1, u1, mask1, scale1, zero1, qlo, qhi, codes1, err1, lo, hi):  # pragma: no cover - compiled
    """Columns lo..hi-1 of one lazy block, in place.

    w1 [rows, count] f64 block weights; u1 [count, count] f64 its inverse-Hessian factor; mask1
    [rows, count] bool keep; scale1 [rows, count] f64 each column's group scale and zero1 its zero point
    (the code q = clip(rint(w / s), qlo - z, qhi - z); qhi = 0: no quantization); codes1 [rows, count] int8
    out; err1 [rows, count] f64 out (scaled errors for the lazy update).
    """
    rows, count = w1.shape
    for i in range(lo, hi):
        d = u1[i, i]
        for r in range(rows):
            wv = w1[r, i]
            q = 0.0
            if mask1[r, i]:
                q = wv
                if qhi > 0:
                    c = 0.0
                    s = scale1[r, i]
                    if s > 0:
                        z = zero1[r, i]
                        c = min(max(np.rint(wv / s), qlo - z), qhi - z)
                    codes1[r, i] = np.int8(c)
                    q = c * s
            e = (wv - q) / d
            err1[r, i] = e
            w1[r, i] = q
            for j in range(i + 1, count):
                w1[r, j] -= e * u1[i, j]


def obs_compress(w: np.ndarray, h: np.ndarray, *, sparsity: float = 0.0, pattern: str = "unstructured",
                 fixed_mask: np.ndarray | None = None, bits: int | None = None, group_size: int = 128,
                 blocksize: int = 128, percdamp: float = 0.01, act_order: bool = False, zero_points: bool = False,
                 factor: tuple[np.ndarray, np.ndarray] | None = None) -> ObsResult:
    """Prune (adaptive mask, or `fixed_mask`) and/or quantize `w` [rows, cols] given H [cols, cols].

    - SparseGPT: sparsity > 0 or an N:M pattern, no fixed mask. tile4: each 128-column block keeps, per
      4-row tile, the K columns with the highest w²/[U]²_cc summed over the tile's rows (blocksize 128).
    - GPTQ: bits set; with `fixed_mask` the pruned weights are held at zero (joint with Wanda/magnitude).
      `act_order`: columns by decreasing H_cc with static group scales (GPTQ only, not SparseGPT's masks).
      `zero_points` (4 bits): each group's grid spans its own range, codes [-z, 15 - z] (quant.group_zero_points).
    Unstructured masks prune exactly round(sparsity · rows · cols) weights, spread over the blocks.
    `factor`: `inverse_hessian_factor(h, percdamp)` already computed (linears sharing an input share it).
    """
    rows, cols = w.shape
    nm = parse_nm(pattern)
    adaptive = fixed_mask is None and (nm is not None or sparsity > 0)
    tile4 = adaptive and pattern == "tile4"
    keep = tile4_keep(sparsity) if tile4 else None
    qmax = qmax_of(bits) if bits is not None else None
    if zero_points and bits != 4:
        raise CompressError(f"zero points apply to 4-bit codes, not {bits}")
    qlo, qhi = (0, Q4_TOP_CODE) if zero_points else (-(qmax or 0), qmax or 0)
    if tile4 and (blocksize != TILE_GROUP or (qmax is not None and group_size != TILE_GROUP)):
        raise CompressError(f"SparseGPT with pattern tile4 needs blocksize and group size {TILE_GROUP} "
                            f"(the tile's column group), got {blocksize} and {group_size}")
    if act_order and (adaptive or qmax is None):
        raise CompressError("act-order applies to GPTQ quantization (alone or under a fixed mask), "
                            "not to SparseGPT's mask selection")
    h = np.asarray(h, dtype=np.float64)
    wk = np.array(w, dtype=np.float64)  # [rows, cols], updated in place
    dead = np.diag(h) == 0
    wk[:, dead] = 0.0
    mask = np.ones((rows, cols), bool) if fixed_mask is None else fixed_mask.copy()
    n_groups = -(-cols // group_size)
    perm = None
    col_scales = None  # act-order: float64 [rows, cols] each (permuted) column's static group scale
    zeros = col_zeros = None  # the same for zero points (uint8 [rows, groups]; float64 [rows, cols])
    if act_order:
        if zero_points:  # [rows, groups] f16 and u8, natural columns
            scales, zeros = group_zero_points(wk.astype(np.float32), mask, group_size)
        else:
            scales = group_scales(wk.astype(np.float32), mask, group_size, qmax)
        diag = np.where(dead, 1.0, np.diag(h))
        perm = np.argsort(-diag, kind="stable")  # [cols] intp: sweep order
        h = h[np.ix_(perm, perm)]
        wk, mask = wk[:, perm], mask[:, perm]
        col_scales = per_column(scales, group_size, cols)[:, perm].astype(np.float64)
        if zero_points:
            col_zeros = per_column(zeros, group_size, cols)[:, perm].astype(np.float64)
    elif qmax is not None:
        blocksize = group_size  # a group's scale is fixed at its first column, from the current weights
        scales = np.zeros((rows, n_groups), np.float16)
        zeros = np.zeros((rows, n_groups), np.uint8) if zero_points else None
    else:
        scales = None
    u = factor[0] if factor is not None and perm is None else inverse_hessian_factor(h, percdamp)[0]
    codes = np.zeros((rows, cols), np.int8) if qmax is not None else None
    total = rows * cols
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = wk[:, i1:i2].copy()  # [rows, count]
        err1 = np.zeros((rows, count))
        u1 = np.ascontiguousarray(u[i1:i2, i1:i2])
        d1 = np.diag(u1)
        if tile4:  # the block is one group: per tile, the K best columns of the block's current weights
            mask[:, i1:i2] = prune_tile4(w1 ** 2 / d1[None, :] ** 2, keep)
        elif adaptive and nm is None:
            k = n_pruned(total, sparsity * (i2 / cols)) - n_pruned(total, sparsity * (i1 / cols))
            mask[:, i1:i2] = prune_lowest_global(w1 ** 2 / d1[None, :] ** 2, k)
        if adaptive and nm is not None and qmax is not None:
            mask[:, i1:i2] = prune_nm(w1 ** 2 / d1[None, :] ** 2, *nm)
        s1 = np.zeros((rows, count))  # [rows, count] f64 each column's scale
        z1 = np.zeros((rows, count))  # and zero point
        if col_scales is not None:
            s1 = np.ascontiguousarray(col_scales[:, i1:i2])
            if col_zeros is not None:
                z1 = np.ascontiguousarray(col_zeros[:, i1:i2])
        elif qmax is not None:
            if zero_points:  # the block is one group
                s, z = group_zero_points(w1.astype(np.float32), mask[:, i1:i2], count)
                scales[:, i1 // group_size], zeros[:, i1 // group_size] = s[:, 0], z[:, 0]
                s1, z1 = (np.repeat(a[:, :1].astype(np.float64), count, axis=1) for a in (s, z))
            else:
                kept = np.where(mask[:, i1:i2], np.abs(w1), 0.0)
                s = f16_scale(kept.max(axis=1), qmax)  # [rows] f16
                scales[:, i1 // group_size] = s
                s1 = np.repeat(s.astype(np.float64)[:, None], count, axis=1)
        codes1 = np.zeros((rows, count), np.int8)
        if adaptive and nm is not None and qmax is None:  # N:M masks chosen lazily, every M columns
            for i in range(0, count, nm[1]):
                span = min(nm[1], count - i)
                mask[:, i1 + i:i1 + i + span] = prune_nm(w1[:, i:i + span] ** 2 / d1[None, i:i + span] ** 2, *nm)
                _sweep(w1, u1, np.ascontiguousarray(mask[:, i1:i2]), s1, z1, 0, 0, codes1, err1, i, i + span)
        else:
            _sweep(w1, u1, np.ascontiguousarray(mask[:, i1:i2]), s1, z1, qlo, qhi, codes1, err1, 0, count)
        if codes is not None:
            codes[:, i1:i2] = codes1
        wk[:, i1:i2] = w1
        wk[:, i2:] -= err1 @ u[i1:i2, i2:]
    if perm is not None:
        back = np.argsort(perm)  # undo the sweep order: natural columns again
        wk, mask, codes = wk[:, back], mask[:, back], codes[:, back]
    wk[~mask] = 0.0
    return ObsResult(wk.astype(np.float32), mask, codes, scales, zeros)


def hessian(x: np.ndarray) -> np.ndarray:
    """XᵀX [cols, cols] float32 of inputs x [tokens, cols] (one BLAS syrk; the caller sums batches in float64).

    With a fixed BLAS thread count the product is deterministic; OpenBLAS rounds it differently with
    1 and 2 threads, hence `zoo.evaluate.fixed_blas_threads` (docs/compress.md).
    """
    x32 = np.ascontiguousarray(x, np.float32)
    return x32.T @ x32

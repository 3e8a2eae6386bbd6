"""Group quantization on the zoo format's grid (SPEC.md 3.5) and packing into encodings.

Codes are signed integers q with w ≈ q · scale[r, c // group_size]; scales are f16 and computed over
the kept (mask = True) weights of a group only, so pruned weights stay exactly zero and do not widen
the grid. Symmetric codes lie in [-qmax, qmax]; 3 bits is stored in the 4-bit containers with codes
limited to [-3, 3]. With zero points (plain q4 only) a group's grid spans its own [min, max] (0 included):
the stored u = q + z lies in [0, 15], so q lies in [-z, 15 - z] and a pruned weight (q = 0) is still 0.

Which encoding `pack` chooses for a 4-bit (or 3-bit) weight:
- tile4 mask (`keep` = K given) -> `tile4-q4`, the encoding the decode kernels skip columns in;
- any other mask pruning at least SPARSE_Q4_MIN_SPARSITY (90%) of the weight -> `sparse-q4`;
- a mask pruning less -> plain `q4`, the pruned weights stored as code 0 (value exactly 0): the rule "no
  sparse weight decodes slower than the same weight in q4" (the bitmask's crossover, SPARSE_Q4_MIN_SPARSITY);
- no mask -> `q4`.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import CompressError
from zoo.format import Q4_TOP_CODE, EncodedTensor, encode, pack_q4, pack_q8, pack_sparse, q4_zero_point_grid

QMAX = {8: 127, 4: 7, 3: 3}
# below this share of pruned weights a 4-bit weight without a tile pattern is stored as plain q4 (pruned = code 0):
# the format 1.0 bitmask decodes slower than q4 below ~70-85% (bench/RESULTS.md: sparse-q4 vs q4 matvec 0.70 / 0.93 /
# 1.09x at 50 / 70 / 90% on a Zen 4, 0.67-0.81 / 1.10 / 1.45-1.52x at 50 / 75 / 90% on an Intel AVX-512, 0.4-0.9x on
# AVX2 at any sparsity); a small and fast sparse weight takes --pattern tile4 instead
SPARSE_Q4_MIN_SPARSITY = 0.9


def qmax_of(bits: int) -> int:
    if bits not in QMAX:
        raise CompressError(f"bits must be one of 16, {', '.join(str(b) for b in QMAX)}; got {bits}")
    return QMAX[bits]


def f16_scale(absmax: np.ndarray, qmax: int) -> np.ndarray:
    """f16(absmax / qmax) as float16, refusing values f16 cannot hold."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _finite((np.asarray(absmax, np.float32) / np.float32(qmax)).astype(np.float16))


def _finite(scales: np.ndarray) -> np.ndarray:
    """`scales` unchanged if f16 held every one, else CompressError: a weight too large (or not finite) for f16."""
    if not np.all(np.isfinite(scales)):
        raise CompressError("weights too large or not finite for f16 scales")
    return scales


def _grouped(w: np.ndarray, mask: np.ndarray | None, group_size: int) -> np.ndarray:
    """Kept weights float32 [rows, groups, group_size], pruned and padding positions 0."""
    rows, cols = w.shape
    g = -(-cols // group_size)
    padded = np.zeros((rows, g * group_size), np.float32)
    padded[:, :cols] = w if mask is None else np.where(mask, w, 0)
    return padded.reshape(rows, g, group_size)


def group_scales(w: np.ndarray, mask: np.ndarray | None, group_size: int, qmax: int) -> np.ndarray:
    """Per-group scales float16 [rows, ceil(cols/group_size)] from the absmax of kept weights."""
    return f16_scale(np.abs(_grouped(w, mask, group_size)).max(axis=2), qmax)


def group_zero_points(w: np.ndarray, mask: np.ndarray | None, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(scales f16, zero points uint8) [rows, groups] of q4 with zero points over the kept weights: the format's
    grid (zoo.format.q4_zero_point_grid) with pruned positions left out of each group's range."""
    scales, zeros = q4_zero_point_grid(_grouped(w, mask, group_size))
    return _finite(scales), zeros


def code_bounds(zeros: np.ndarray | None, qmax: int) -> tuple[np.ndarray | int, np.ndarray | int]:
    """(lowest, highest) signed code: ±qmax, or per position [-z, 15 - z] for zero points z (any shape)."""
    if zeros is None:
        return -qmax, qmax
    z = np.asarray(zeros, np.float32)
    return -z, Q4_TOP_CODE - z


def codes_for(w: np.ndarray, scale: np.ndarray, qmax: int, zeros: np.ndarray | None = None) -> np.ndarray:
    """clip(rint(w / s), lowest, highest) (`code_bounds`), 0 where s = 0; scale (and zeros) broadcast against w."""
    s = np.asarray(scale, np.float32)
    lo, hi = code_bounds(zeros, qmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.rint(w / np.where(s > 0, s, 1)), 0)
    return np.clip(q, lo, hi).astype(np.int8)


def per_column(scales: np.ndarray, group_size: int, cols: int) -> np.ndarray:
    """Scales [rows, groups] expanded to float32 [rows, cols]."""
    return np.repeat(scales.astype(np.float32), group_size, axis=1)[:, :cols]


def rtn(w: np.ndarray, mask: np.ndarray | None, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest: (codes int8 [rows, cols], scales f16 [rows, groups]); pruned codes are 0."""
    qmax = qmax_of(bits)
    scales = group_scales(w, mask, group_size, qmax)
    codes = codes_for(w, per_column(scales, group_size, w.shape[1]), qmax)
    if mask is not None:
        codes[~mask] = 0
    return codes, scales


def rtn_zero_points(w: np.ndarray, mask: np.ndarray | None, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest on q4's zero-point grid: (codes int8 [rows, cols] in [-z, 15 - z], scales f16, zeros u8)."""
    scales, zeros = group_zero_points(w, mask, group_size)
    cols = w.shape[1]
    codes = codes_for(w, per_column(scales, group_size, cols), 0, per_column(zeros, group_size, cols))
    if mask is not None:
        codes[~mask] = 0
    return codes, scales, zeros


def dequantize(codes: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """float32 [rows, cols] = codes · scales."""
    return codes.astype(np.float32) * per_column(scales, group_size, codes.shape[1])


def pack(w: np.ndarray, mask: np.ndarray | None, bits: int, group_size: int,
         codes: np.ndarray | None = None, scales: np.ndarray | None = None, keep: int | None = None,
         zeros: np.ndarray | None = None) -> EncodedTensor:
    """Encode one linear weight: dense/q8/q4, sparse-*, or tile4-q4 (the choice: module docstring).

    With bits 16 the values are stored as f16 (`w` already holds the final weights, zeros pruned).
    With bits 8/4/3 give `codes`/`scales` (GPTQ) or let RTN pick them from `w`. `keep`: the mask is
    tile4's with K = keep columns per (4-row tile, 128-column group). `zeros` (uint8 [rows, groups], with
    `codes`): q4 with zero points, which only plain q4 stores.
    """
    sparse = mask is not None and not bool(mask.all())
    if sparse and bits <= 4 and keep is None and (  # a row's count rounds by one weight
            np.count_nonzero(~mask) / mask.size < SPARSE_Q4_MIN_SPARSITY - 1 / mask.shape[-1]):
        sparse = False  # below the crossover: plain q4, pruned weights are code 0 (rtn and GPTQ both give 0 there)
    if bits == 16:
        if not sparse:
            return encode(w, "dense", dtype="F16")
        return pack_sparse("sparse-f16", mask, np.where(mask, w, 0).astype(np.float16), None, None)
    if codes is None:
        codes, scales = rtn(w, mask, bits, group_size)
    if zeros is not None and (sparse or bits != 4):
        raise CompressError("zero points are stored by plain q4 only: not at "
                            f"{bits} bits{' or with a sparse encoding' if sparse else ''}")
    if sparse and bits <= 4 and keep is not None:
        if group_size != 128:
            raise CompressError(f"tile4-q4 needs group size 128, got {group_size}")
        from zoo.format.encode import pack_tile4_q4

        return pack_tile4_q4(codes, np.ascontiguousarray(mask[::4]), scales, keep)
    if sparse:
        if group_size % 64:
            raise CompressError(f"sparse quantized tensors need a group size that is a multiple of 64, got {group_size}")
        if bits == 8:
            return pack_sparse("sparse-q8", mask, codes, scales, group_size)
        return pack_sparse("sparse-q4", mask, (codes + 8).astype(np.uint8), scales, group_size)
    if group_size % 32:
        raise CompressError(f"quantized tensors need a group size that is a multiple of 32, got {group_size}")
    if bits == 8:
        return pack_q8(codes, scales, group_size)
    if zeros is not None:
        return pack_q4((codes + per_column(zeros, group_size, codes.shape[1])).astype(np.uint8), scales, group_size, zeros)
    return pack_q4((codes + 8).astype(np.uint8), scales, group_size)

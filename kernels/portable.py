"""Portable matrix-vector kernels (decode, one token): plain numba, float32 activations.

One function per encoding, parallel over output rows with `prange`, float32 accumulation. They
read each stored weight byte once and never build a dense row. Weight parts arrive flattened to
1-D (see linear.py); f16 scales and values arrive as their uint16 bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._llvm import bf16_to_f32, f16_to_f32, popcount, trailing_zeros

# reassociation lets LLVM vectorize the row reductions; no nnan/ninf, so inf/nan inputs propagate
FAST = {"reassoc", "contract"}


@njit(cache=True, fastmath=FAST)
def group_sums(x, cols, group_size):
    """Sum of x over each group of `group_size` columns: float32 [n_groups]."""
    n_groups = (cols + group_size - 1) // group_size
    sums = np.zeros(n_groups, np.float32)
    for g in range(n_groups):
        acc = np.float32(0.0)
        for c in range(g * group_size, min(cols, (g + 1) * group_size)):
            acc += x[c]
        sums[g] = acc
    return sums


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_dense_f32(w, rows, cols, x, out):
    """out[r] = w[r, :] . x for float32 w [rows * cols]."""
    for r in prange(rows):
        base = r * cols
        acc = np.float32(0.0)
        for c in range(cols):
            acc += w[base + c] * x[c]
        out[r] = acc


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_dense_16(w, is_bf16, rows, cols, x, out):
    """out[r] = w[r, :] . x for f16 or bf16 bits w: uint16 [rows * cols]."""
    for r in prange(rows):
        base = r * cols
        acc = np.float32(0.0)
        if is_bf16:
            for c in range(cols):
                acc += bf16_to_f32(w[base + c]) * x[c]
        else:
            for c in range(cols):
                acc += f16_to_f32(w[base + c]) * x[c]
        out[r] = acc


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_q8(qweight, scales, rows, cols, group_size, x, out):
    """q8: qweight int8 [rows * cols], scales f16 bits uint16 [rows * n_groups]."""
    n_groups = (cols + group_size - 1) // group_size
    for r in prange(rows):
        acc = np.float32(0.0)
        for g in range(n_groups):
            c0 = g * group_size
            c1 = min(cols, c0 + group_size)
            base = r * cols
            part = np.float32(0.0)
            for c in range(c0, c1):
                part += np.float32(np.int8(qweight[base + c])) * x[c]
            acc += f16_to_f32(scales[r * n_groups + g]) * part
        out[r] = acc


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_q4(qweight, scales, zeros, has_zeros, rows, cols, group_size, x, out):
    """q4: qweight uint8 [rows * ceil(cols/2)] (low nibble first), scales uint16 [rows * n_groups],
    zeros uint8 [rows * n_groups] when has_zeros (else the zero point is 8)."""
    n_groups = (cols + group_size - 1) // group_size
    row_bytes = (cols + 1) // 2
    sums = group_sums(x, cols, group_size)
    for r in prange(rows):
        acc = np.float32(0.0)
        for g in range(n_groups):
            c0 = g * group_size  # even: group_size is a multiple of 32
            c1 = min(cols, c0 + group_size)
            b0 = r * row_bytes + c0 // 2
            pairs = (c1 - c0) // 2
            part = np.float32(0.0)
            for k in range(pairs):
                byte = qweight[b0 + k]
                part += np.float32(byte & 15) * x[c0 + 2 * k] + np.float32(byte >> 4) * x[c0 + 2 * k + 1]
            if (c1 - c0) & 1:
                part += np.float32(qweight[b0 + pairs] & 15) * x[c1 - 1]
            z = np.float32(zeros[r * n_groups + g]) if has_zeros else np.float32(8.0)
            acc += f16_to_f32(scales[r * n_groups + g]) * (part - z * sums[g])
        out[r] = acc


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_sparse_q(bitmask, row_offsets, values, scales, is_q4, rows, cols, group_size, x, out):
    """sparse-q4 / sparse-q8: bitmask uint64 [rows * n_words], row_offsets int64 [rows + 1],
    values uint8 nibbles (q4) or int8 viewed as uint8 (q8), scales uint16 [rows * n_groups]."""
    n_words = (cols + 63) // 64
    n_groups = (cols + group_size - 1) // group_size
    words_per_group = group_size // 64
    for r in prange(rows):
        pos = row_offsets[r] * 2 if is_q4 else row_offsets[r]  # nibble (q4) or byte (q8) index
        acc = np.float32(0.0)
        for g in range(n_groups):
            part = np.float32(0.0)
            for wd in range(g * words_per_group, min(n_words, (g + 1) * words_per_group)):
                m = bitmask[r * n_words + wd]
                base = wd * 64
                while m != 0:
                    c = base + trailing_zeros(m)
                    if is_q4:
                        code = np.int32((values[pos >> 1] >> ((pos & 1) * 4)) & 15) - 8
                    else:
                        code = np.int32(np.int8(values[pos]))
                    part += np.float32(code) * x[c]
                    pos += 1
                    m &= m - np.uint64(1)
            acc += f16_to_f32(scales[r * n_groups + g]) * part
        out[r] = acc


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_sparse_f16(bitmask, row_offsets, values, rows, cols, x, out):
    """sparse-f16: values are f16 bits uint16 [nnz]; no scales."""
    n_words = (cols + 63) // 64
    for r in prange(rows):
        pos = row_offsets[r]
        acc = np.float32(0.0)
        for wd in range(n_words):
            m = bitmask[r * n_words + wd]
            base = wd * 64
            while m != 0:
                acc += f16_to_f32(values[pos]) * x[base + trailing_zeros(m)]
                pos += 1
                m &= m - np.uint64(1)
        out[r] = acc


@njit(cache=True)
def row_popcounts(bitmask, rows, n_words):
    """Stored values per row (used by tests and the benchmark): int64 [rows]."""
    counts = np.zeros(rows, np.int64)
    for r in range(rows):
        for wd in range(n_words):
            counts[r] += popcount(bitmask[r * n_words + wd])
    return counts

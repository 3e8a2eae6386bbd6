"""Portable matrix-vector kernels (decode, one token): plain numba, float32 activations.

(q4 with groups of 64k columns and sparse-q4 / sparse-q8 rows: generic.py, generic LLVM IR.)

One function per encoding, parallel over output rows with `prange`, float32 accumulation. They
read each stored weight byte once and never build a dense row. Weight parts arrive flattened to
1-D (see layout.prepare); f16 scales and values arrive as their uint16 bits.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..intrinsics import bf16_to_f32, f16_to_f32, trailing_zeros
from ..jit import FAST, kernel

# Inner loops index slices with range(len): numba's negative-index wraparound check on a computed
# index (a[base + c]) blocks LLVM's vectorizer (measured: 35x slower).


@kernel(fastmath=FAST, inline=True)
def _dot_i8(q, x):
    acc = np.float32(0.0)
    for c in range(q.size):
        acc += np.float32(np.int8(q[c])) * x[c]
    return acc


@kernel(fastmath=FAST, inline=True)
def _dot_nibbles(q, x_even, x_odd):
    """sum of low nibble * x_even + high nibble * x_odd over the bytes of q."""
    acc = np.float32(0.0)
    for k in range(q.size):
        acc += np.float32(q[k] & 15) * x_even[k] + np.float32(q[k] >> 4) * x_odd[k]
    return acc


@kernel(fastmath=FAST)
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


@kernel(parallel=True, fastmath=FAST)
def matvec_dense_f32(w, rows, cols, x, out):
    """out[r] = w[r, :] . x for float32 w [rows * cols]."""
    for r in prange(rows):
        row = w[r * cols:(r + 1) * cols]
        acc = np.float32(0.0)
        for c in range(cols):
            acc += row[c] * x[c]
        out[r] = acc


@kernel(parallel=True, fastmath=FAST)
def matvec_dense_16(w, is_bf16, rows, cols, x, out):
    """out[r] = w[r, :] . x for f16 or bf16 bits w: uint16 [rows * cols]."""
    for r in prange(rows):
        row = w[r * cols:(r + 1) * cols]
        acc = np.float32(0.0)
        if is_bf16:
            for c in range(cols):
                acc += bf16_to_f32(row[c]) * x[c]
        else:
            for c in range(cols):
                acc += f16_to_f32(row[c]) * x[c]
        out[r] = acc


@kernel(parallel=True, fastmath=FAST)
def matvec_q8(qweight, scales, rows, cols, group_size, x, out):
    """q8: qweight int8 [rows * cols], scales f16 bits uint16 [rows * n_groups]."""
    n_groups = (cols + group_size - 1) // group_size
    for r in prange(rows):
        acc = np.float32(0.0)
        for g in range(n_groups):
            c0 = g * group_size
            c1 = min(cols, c0 + group_size)
            part = _dot_i8(qweight[r * cols + c0:r * cols + c1], x[c0:c1])
            acc += f16_to_f32(scales[r * n_groups + g]) * part
        out[r] = acc


@kernel(parallel=True, fastmath=FAST)
def matvec_q4(qweight, scales, zeros, has_zeros, rows, cols, group_size, x, out):
    """q4: qweight uint8 [rows * ceil(cols/2)] (low nibble first), scales uint16 [rows * n_groups],
    zeros uint8 [rows * n_groups] when has_zeros (else the zero point is 8)."""
    n_groups = (cols + group_size - 1) // group_size
    row_bytes = (cols + 1) // 2
    sums = group_sums(x, cols, group_size)
    x_even = np.zeros(row_bytes, np.float32)  # x[0::2], x[1::2] padded: contiguous for the nibble loop
    x_odd = np.zeros(row_bytes, np.float32)
    for c in range(cols):
        if c & 1:
            x_odd[c >> 1] = x[c]
        else:
            x_even[c >> 1] = x[c]
    for r in prange(rows):
        acc = np.float32(0.0)
        for g in range(n_groups):
            c0 = g * group_size  # even: group_size is a multiple of 32
            c1 = min(cols, c0 + group_size)
            b0 = r * row_bytes + c0 // 2
            nb = (c1 - c0 + 1) // 2  # an odd last column meets x_odd's zero padding
            part = _dot_nibbles(qweight[b0:b0 + nb], x_even[c0 // 2:c0 // 2 + nb], x_odd[c0 // 2:c0 // 2 + nb])
            z = np.float32(zeros[r * n_groups + g]) if has_zeros else np.float32(8.0)
            acc += f16_to_f32(scales[r * n_groups + g]) * (part - z * sums[g])
        out[r] = acc


@kernel(parallel=True, fastmath=FAST)
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

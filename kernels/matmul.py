"""Matrix-matrix kernels (prefill, a block of tokens): plain numba, work proportional to stored values.

Activations arrive transposed, xt float32 [cols, tokens], so each stored weight w[r, c] is
decoded once and applied to all tokens with one vectorized `acc[:] += w * xt[c, :]`; a sparse
row costs its nonzeros, not its columns. Output out float32 [tokens, rows]. Rows are processed in
blocks of ROW_BLOCK, one accumulator buffer per block (per-thread scratch, no shared state).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._llvm import bf16_to_f32, f16_to_f32, trailing_zeros
from .portable import FAST

ROW_BLOCK = 16


@njit(cache=True, fastmath=FAST, inline="always")
def _axpy(acc, w, xt, c, tokens):
    xr = xt[c * tokens:(c + 1) * tokens]  # a slice indexed by range(len) vectorizes (see portable.py)
    for t in range(tokens):
        acc[t] += w * xr[t]


@njit(cache=True, fastmath=FAST, inline="always")
def _store(acc, out, r, rows, tokens):
    for t in range(tokens):
        out[t * rows + r] = acc[t]
        acc[t] = 0.0


@njit(parallel=True, cache=True, fastmath=FAST)
def matmul_dense(w32, w16, kind, rows, cols, xt, tokens, out):
    """Dense weights: kind 0 = f32 from w32 [rows * cols]; 1 = f16, 2 = bf16 bits from w16."""
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        acc = np.zeros(tokens, np.float32)
        for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
            for c in range(cols):
                if kind == 0:
                    v = w32[r * cols + c]
                elif kind == 1:
                    v = f16_to_f32(w16[r * cols + c])
                else:
                    v = bf16_to_f32(w16[r * cols + c])
                _axpy(acc, v, xt, c, tokens)
            _store(acc, out, r, rows, tokens)


@njit(parallel=True, cache=True, fastmath=FAST)
def matmul_q(qweight, scales, zeros, has_zeros, is_q4, rows, cols, group_size, xt, tokens, out):
    """q4 (uint8 nibbles [rows * ceil(cols/2)], optional zeros) or q8 (int8 viewed as uint8)."""
    n_groups = (cols + group_size - 1) // group_size
    row_len = (cols + 1) // 2 if is_q4 else cols
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        acc = np.zeros(tokens, np.float32)
        for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
            for g in range(n_groups):
                s = f16_to_f32(scales[r * n_groups + g])
                if s == 0.0:
                    continue
                z = np.float32(zeros[r * n_groups + g]) if has_zeros else np.float32(8.0)
                for c in range(g * group_size, min(cols, (g + 1) * group_size)):
                    if is_q4:
                        code = np.float32((qweight[r * row_len + (c >> 1)] >> ((c & 1) * 4)) & 15) - z
                    else:
                        code = np.float32(np.int8(qweight[r * row_len + c]))
                    _axpy(acc, code * s, xt, c, tokens)
            _store(acc, out, r, rows, tokens)


@njit(parallel=True, cache=True, fastmath=FAST)
def matmul_sparse(bitmask, row_offsets, values, scales, kind, rows, cols, group_size, xt, tokens, out):
    """Sparse weights; kind 0 = sparse-q4, 1 = sparse-q8 (int8 as uint8), 2 = sparse-f16 (uint16 values)."""
    n_words = (cols + 63) // 64
    n_groups = (cols + group_size - 1) // group_size
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        acc = np.zeros(tokens, np.float32)
        for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
            pos = row_offsets[r] * 2 if kind == 0 else row_offsets[r]
            s = np.float32(1.0)
            for wd in range(n_words):
                m = bitmask[r * n_words + wd]
                if m == 0:
                    continue
                if kind != 2:
                    s = f16_to_f32(scales[r * n_groups + (wd * 64) // group_size])
                base = wd * 64
                while m != 0:
                    c = base + trailing_zeros(m)
                    if kind == 0:
                        v = np.float32(np.int32((values[pos >> 1] >> ((pos & 1) * 4)) & 15) - 8) * s
                    elif kind == 1:
                        v = np.float32(np.int8(values[pos])) * s
                    else:
                        v = f16_to_f32(np.uint16(values[pos]))
                    _axpy(acc, v, xt, c, tokens)
                    pos += 1
                    m &= m - np.uint64(1)
            _store(acc, out, r, rows, tokens)

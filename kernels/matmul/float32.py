"""Matrix-matrix kernels (prefill, a block of tokens) for dense, q4 and q8 weights: plain numba.

Rows are decoded once into a float32 row buffer, then dotted with each token's activations
(x float32 [tokens, cols], row-major). Output out float32 [tokens, rows]. Rows go in blocks of
ROW_BLOCK with per-block scratch (no shared state). Sparse weights: csr.py, vnni.py, vnni_csr.py.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..intrinsics import bf16_to_f32, f16_to_f32
from ..jit import FAST, kernel
from ..layout import Kind

ROW_BLOCK = 16


@kernel(fastmath=FAST, inline=True)
def _row_dots(wrow, x, tokens, cols, out, r, rows):
    """out[t, r] = wrow . x[t] for every token; x float32 [tokens * cols] (not transposed)."""
    for t in range(tokens):
        xr = x[t * cols:(t + 1) * cols]
        acc = np.float32(0.0)
        for c in range(cols):
            acc += wrow[c] * xr[c]
        out[t * rows + r] = acc


@kernel(parallel=True, fastmath=FAST)
def matmul_dense(w32, w16, kind, rows, cols, x, tokens, out):
    """Dense weights: kind Kind.F32 from w32 [rows * cols]; Kind.F16 / Kind.BF16 bits from w16.
    x float32 [tokens * cols] (row-major, not transposed); out [tokens * rows]."""
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        wrow = np.empty(cols, np.float32)  # [cols] one decoded row, reused for every token
        for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
            if kind == Kind.F32:
                _row_dots(w32[r * cols:(r + 1) * cols], x, tokens, cols, out, r, rows)
                continue
            src = w16[r * cols:(r + 1) * cols]
            if kind == Kind.F16:
                for c in range(cols):
                    wrow[c] = f16_to_f32(src[c])
            else:
                for c in range(cols):
                    wrow[c] = bf16_to_f32(src[c])
            _row_dots(wrow, x, tokens, cols, out, r, rows)


@kernel(parallel=True, fastmath=FAST)
def matmul_q(qweight, scales, zeros, has_zeros, is_q4, rows, cols, group_size, x, tokens, out):
    """q4 (uint8 nibbles [rows * ceil(cols/2)], optional zeros) or q8 (int8 viewed as uint8).
    Each row is decoded once into a float32 buffer, then one vectorized dot per token: dense rows
    have no zeros to skip, and a dot streams x from cache with two loads per FMA."""
    n_groups = (cols + group_size - 1) // group_size
    row_len = (cols + 1) // 2 if is_q4 else cols
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        wrow = np.empty(cols + 1, np.float32)  # [cols (+1 for an odd last nibble)] decoded row
        for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
            for g in range(n_groups):
                c0 = g * group_size
                c1 = min(cols, c0 + group_size)
                s = f16_to_f32(scales[r * n_groups + g])
                if is_q4:
                    z = np.float32(zeros[r * n_groups + g]) if has_zeros else np.float32(8.0)
                    nb = (c1 - c0 + 1) // 2
                    qb = qweight[r * row_len + c0 // 2:r * row_len + c0 // 2 + nb]
                    wg = wrow[c0:c0 + 2 * nb]
                    for k in range(nb):
                        wg[2 * k] = (np.float32(qb[k] & 15) - z) * s
                        wg[2 * k + 1] = (np.float32(qb[k] >> 4) - z) * s
                else:
                    qb = qweight[r * row_len + c0:r * row_len + c1]
                    wg = wrow[c0:c1]
                    for k in range(c1 - c0):
                        wg[k] = np.float32(np.int8(qb[k])) * s
            _row_dots(wrow, x, tokens, cols, out, r, rows)

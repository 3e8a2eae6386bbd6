"""tile4-q4 matmul (prefill). avx512 / avx2: every token's activations to int8 (once per input, by the caller),
then per tile the tokens in turn through the matvec's tile body (matvec/tile4.simd_tile); portable: float32, a
tile's activations gathered once for every token and its 4 rows decoded once."""

from __future__ import annotations

import numpy as np
from numba import prange

from ..intrinsics import f16_to_f32, trailing_zeros
from ..jit import FAST, kernel
from ..matvec.tile4 import GROUP, TILE_BLOCK, scratch_bytes, simd_tile

@kernel(parallel=True, fastmath=FAST)
def matmul_simd(mask, qweight, scales, isa, rows, cols, keep, xq, xd, stride, tokens, out):
    """Prefill on avx512 / avx2: the tokens' int8 activations (vnni.quantize_tokens(x, ..., GROUP, False):
    xq [tokens * stride], xd [tokens * ng]), then per tile the tokens in turn, so the tile's codes are read
    from memory once and from cache for the other tokens. out float32 [tokens * rows] (a tile's 4 outputs of
    a token are contiguous)."""
    ng = (cols + GROUP - 1) // GROUP
    tiles = rows // 4
    n_blocks = (tiles + TILE_BLOCK - 1) // TILE_BLOCK
    bufs = np.empty((n_blocks, scratch_bytes(cols, keep)), np.uint8)
    for blk in prange(n_blocks):
        for t in range(blk * TILE_BLOCK, min(tiles, (blk + 1) * TILE_BLOCK)):
            for tok in range(tokens):
                simd_tile(mask, qweight, scales, t, ng, keep, isa, xq[tok * stride:(tok + 1) * stride],
                          xd[tok * ng:(tok + 1) * ng], bufs[blk], out, tok * rows + 4 * t)


@kernel(parallel=True, fastmath=FAST)
def matmul(mask, qweight, scales, rows, cols, keep, x, tokens, out):
    """Prefill, every path: x float32 [tokens * cols] -> out [tokens * rows]. Per tile, the kept
    activations of every token are gathered once and the 4 rows decoded once to float32, then dotted."""
    ng = (cols + GROUP - 1) // GROUP
    nk = ng * keep
    tiles = rows // 4
    for t in prange(tiles):
        idx = np.empty(nk, np.int64)  # [ng * K] kept column of each lane, -1 for padding
        for g in range(ng):
            p = g * keep
            for h in range(2):
                bits = mask[(t * ng + g) * 2 + h]
                while bits != 0:
                    c = g * GROUP + h * 64 + trailing_zeros(bits)
                    idx[p] = c if c < cols else -1
                    p += 1
                    bits &= bits - np.uint64(1)
        xc = np.empty((tokens, nk), np.float32)  # [tokens, ng * K] gathered activations
        for tok in range(tokens):
            for i in range(nk):
                xc[tok, i] = x[tok * cols + idx[i]] if idx[i] >= 0 else np.float32(0.0)
        w = np.empty((4, nk), np.float32)  # [4, ng * K] the tile's rows, decoded
        for r in range(4):
            for g in range(ng):
                blk = (t * ng + g) * 2 * keep
                s = f16_to_f32(scales[(t * ng + g) * 4 + r])
                for i in range(keep):
                    lane = r * keep + i
                    b = qweight[blk + 32 * (lane >> 6) + (lane & 31)]
                    u = (b >> (((lane >> 5) & 1) * 4)) & 15
                    w[r, g * keep + i] = s * np.float32(np.int32(u) - 8)
        for tok in range(tokens):
            for r in range(4):
                acc = np.float32(0.0)
                for i in range(nk):
                    acc += xc[tok, i] * w[r, i]
                out[tok * rows + 4 * t + r] = acc

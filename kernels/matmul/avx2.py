"""q4 (and, with VNNI, q8) matmul (prefill, batched decode) in 8- and 4-token tiles: int8 activations x unsigned
codes; AVX2, and AVX-512 with vnni=1.

The same scheme as the AVX-512 VNNI tiles (matmul/vnni.py): activations quantized to int8 per (token,
group) and permuted per 128 columns (quantize_tokens, shared by the linears of one input), one weight
row's codes decoded once per 128 columns and multiplied with a tile of AVX2_TILE tokens (SMALL_TILE for 4-7
tokens). Without VNNI the dot is `vpmaddubsw` + `vpmaddwd` (ir/x86_tiles.q4_tile_avx2). The previous avx2 matmul decoded rows to
float32 and did one FMA per weight and token (0.2-0.5x numpy float32). The avx512 path runs the same driver
with vnni=1: the tile's dots are ymm `vpdpbusd` (x86_tiles.q4_tile_avx2(vnni=True)), same numbers.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..ir.x86_tiles import AVX2_TILE, SMALL_TILE
from ..jit import kernel
from .vnni import ROW_BLOCK, _tile_intrinsic

CHUNK_BYTES = 16 << 10  # a tile's (8 tokens) activations a chunk: with the row block's weights (8 KiB), in a 32 KiB L1

# qw, nr, qstride, sstride, cols, gs, xq, xstride, sc, xdt, xst, tstride, zs, hz, zc, out, ostride, skip, accum
_SPEC = "piiiii" + "pi" + "pppi" + "pi" + "f" + "piii"
mm_q4_avx2, mm_q4_vnni = (_tile_intrinsic(f"zoo_mm_q4x_{isa}_{AVX2_TILE}", _SPEC) for isa in ("avx2", "vnni"))
mm_q4_avx2_s, mm_q4_vnni_s = (_tile_intrinsic(f"zoo_mm_q4x_{isa}_{SMALL_TILE}", _SPEC) for isa in ("avx2", "vnni"))
mm_q8_vnni, mm_q8_vnni_s = (_tile_intrinsic(f"zoo_mm_q8_vnni_{tt}", _SPEC) for tt in (AVX2_TILE, SMALL_TILE))


def tile_tokens(tokens: int) -> int:
    """Tokens per tile for a matmul of `tokens` (at least SMALL_TILE): AVX2_TILE, or SMALL_TILE below it."""
    return AVX2_TILE if tokens >= AVX2_TILE else SMALL_TILE


@kernel()
def _by_group(a, tokens, n_groups):
    """float32 [tokens * n_groups] -> [n_groups * tokens] (a group's 4 tokens are one vector load)."""
    t = np.empty(tokens * n_groups, np.float32)
    for i in range(tokens):
        for g in range(n_groups):
            t[g * tokens + i] = a[i * n_groups + g]
    return t


@kernel(parallel=True, nogil=True)  # batched decode in zoo serve: the event loop writes while a step computes
def matmul(qweight, scales, zeros, has_zeros, bits, rows, cols, group_size, xq, xd, xs, stride, tokens, out, vnni, tt):
    """q4 or q8 (bits) rows, group_size a multiple of 128, x tokens (at least tt, tile_tokens(tokens)); xq, xd, xs,
    stride: quantize_tokens(x, ..., permute=bits == 4); out float32 [tokens * rows]; vnni: 1 = the AVX-512 module's
    VNNI tiles (avx512 path), 0 = the vpmaddubsw ones (avx2 path, q4 only). Loops as vnni.matmul_sparse: row
    blocks (parallel) > column chunks > token tiles > rows (the rows and the stores inside the IR). A last
    partial tile is computed as the last tt tokens and stores only the tokens the previous tiles did not."""
    n_groups = (cols + group_size - 1) // group_size
    xdt = _by_group(xd, tokens, n_groups)
    xst = _by_group(xs, tokens, n_groups)
    row_len = (cols + 1) // 2 if bits == 4 else cols
    chunk = max(group_size, CHUNK_BYTES // tt // group_size * group_size)
    n_tiles = (tokens + tt - 1) // tt
    zc = np.float32(8.0) if bits == 4 else np.float32(128.0)
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        for c0 in range(0, cols, chunk):
            cn = min(cols, c0 + chunk) - c0
            gc = c0 // group_size
            for tile in range(n_tiles):
                t0 = min(tile * tt, tokens - tt)
                skip = tile * tt - t0  # tokens of this tile that the previous tile already stored
                g0 = r0 * n_groups + gc
                args = (qweight, r0 * row_len + c0 * bits // 8, r1 - r0, row_len, n_groups, cn, group_size, xq,
                        t0 * stride + c0, stride, scales, g0, xdt, gc * tokens + t0, xst, gc * tokens + t0, tokens,
                        zeros, g0 if has_zeros else 0, has_zeros, zc, out, t0 * rows + r0, rows, skip,
                        1 if c0 > 0 else 0)
                if bits == 8 and tt == AVX2_TILE:
                    mm_q8_vnni(*args)
                elif bits == 8:
                    mm_q8_vnni_s(*args)
                elif vnni and tt == AVX2_TILE:
                    mm_q4_vnni(*args)
                elif vnni:
                    mm_q4_vnni_s(*args)
                elif tt == AVX2_TILE:
                    mm_q4_avx2(*args)
                else:
                    mm_q4_avx2_s(*args)

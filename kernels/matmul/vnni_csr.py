"""AVX-512 sparse matmul (prefill) over the nonzeros with int8 VNNI dot products.

Each row is expanded once to CSR (uint16 columns by `vpcompressw`, signed codes as bytes), its stored
values padded per scale group to a multiple of 4 (zero codes). The activations are quantized to
int8 per (token, group) as for the VNNI tiles, offset to unsigned (x + 128) and transposed to
xt uint8 [cols, 32 tokens]. Four nonzeros (c0..c3) make a quad: their four 32-byte token rows are
interleaved with 8 unpacks into four ymm of (x[c0,t], x[c1,t], x[c2,t], x[c3,t]) dwords and each
meets the quad's 4 codes (one broadcast dword) in one `vpdpbusd`: 128 multiply-adds for 4
nonzeros. Per group, int32 lanes minus 128 x (sum of the group's codes, one more `vpdpbusd` a
quad) are scaled by weight
scale x activation scale into float accumulators. Work is proportional to the nonzeros (plus the
padding), and activations take 32 bytes per nonzero instead of 128 in float32.
The token order inside xt is permuted (`_slot`) so that the unpacked lanes come out in order.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..intrinsics import call_intrinsic
from ..jit import kernel

TILE = 32  # tokens a tile (4 ymm of 8 int32 lanes)


ROW_BLOCK = 16


def _call_intrinsic(fname: str, spec: str, ret: str = "v"):
    """An intrinsic calling `fname` of the VNNI CSR IR module (ir/vnni_csr.py; see intrinsics.call_intrinsic)."""
    return call_intrinsic("zoo_vcsr", fname, spec, ret)


# build: mask, nwords, gw, ub, idx, codes, gq, kq
row_build = _call_intrinsic("zoo_vcsr_build", "pii" + "ppp" + "pi", ret="i")


# row: idx, codes, gq, ng, sc, xt, xd, res
row_dot = _call_intrinsic("zoo_vcsr_row", "ppp" + "i" + "pppp")


def quads_per_group(density: float, group_size: int) -> int:
    """Quads every group is padded to: the mean plus one standard deviation of a group's stored
    values (binomial) over 4, so that the quad loop's trip count is nearly always the same (a
    varying one costs a mispredicted branch a group) and only a few groups need more."""
    mean = density * group_size
    return max(1, int(np.ceil((mean + np.sqrt(group_size * density * (1.0 - density))) / 4)))


@kernel(inline=True)
def _slot(t):
    """Byte of token t (0..31) inside a column of xt: the unpacks leave lane j of dword vector k
    holding slot 4k + j (j < 4) or 16 + 4k + j - 4, so token 8k + j is stored there."""
    k, j = t // 8, t % 8
    return 4 * k + j if j < 4 else 12 + 4 * k + j


@kernel(parallel=True)
def transpose_tiles(xq, xd, stride, tokens, cols, n_groups):
    """int8 xq [tokens * stride] -> xt uint8 [n_tiles, cols, 32] (x + 128, slot order, missing tokens
    128 = zero); xd float32 [tokens * n_groups] -> xdt float32 [n_tiles, n_groups, 32] (token order, 0)."""
    n_tiles = (tokens + TILE - 1) // TILE
    xt = np.full(n_tiles * cols * TILE, 128, np.uint8)
    xdt = np.zeros(n_tiles * n_groups * TILE, np.float32)
    for tile in prange(n_tiles):
        for t in range(tile * TILE, min(tokens, (tile + 1) * TILE)):
            slot = _slot(t - tile * TILE)
            src = xq[t * stride:t * stride + cols]
            dst = xt[tile * cols * TILE + slot:(tile + 1) * cols * TILE]
            for c in range(cols):
                dst[c * TILE] = np.uint8(np.int32(src[c]) + 128)
            for g in range(n_groups):
                xdt[(tile * n_groups + g) * TILE + t - tile * TILE] = xd[t * n_groups + g]
    return xt, xdt


@kernel(inline=True)
def _unpack_row(values, row_offsets, r, is_q4, ub):
    """Row r's stored values as signed codes, one a byte, into ub (q4: nibble - 8; q8: the int8)."""
    src = values[row_offsets[r]:row_offsets[r + 1]]
    if is_q4:
        for k in range(src.size):
            ub[2 * k] = np.int8(np.int32(src[k] & 15) - 8)
            ub[2 * k + 1] = np.int8(np.int32(src[k] >> 4) - 8)
    else:
        for k in range(src.size):
            ub[k] = np.int8(src[k])


@kernel(parallel=True)
def matmul_vcsr(bitmask, row_offsets, values, scales, is_q4, rows, cols, group_size, kq, xt, xdt, tokens, out):
    """sparse-q4 / sparse-q8 rows x tokens (see module doc); xt, xdt: transpose_tiles of quantize_tokens(x,
    ..., permute=False) for x float32 [tokens, cols]; out float32 [tokens * rows]; kq: quads a group is
    padded to (quads_per_group). Parallel over blocks of rows;
    each row's CSR is built once for all tiles. One tile (<= 32 tokens): row by row, the tile's xt
    stays in L2. Several tiles: the block's rows are built first, then each tile meets all of them,
    so a tile's xt is fetched once a block, not once a row."""
    n_groups = (cols + group_size - 1) // group_size
    n_words = (cols + 63) // 64
    gw = group_size // 64
    n_tiles = (tokens + TILE - 1) // TILE
    pad = n_groups * (4 * kq + 3) + 16 * (kq // 4 + 2) + 64  # padding and SIMD slack a row can add
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        ub = np.empty(cols + 64, np.int8)  # [stored values of a row] signed codes + slack (read past: never used)
        res = np.empty(TILE, np.float32)
        if n_tiles == 1:
            cap = cols + pad
            nr = 1
        else:
            span = row_offsets[r1] - row_offsets[r0]
            cap = (2 * span if is_q4 else span) + (r1 - r0) * pad
            nr = r1 - r0
        idx = np.empty(cap, np.uint16)  # [padded values] column of each (cols < 65536); the build writes all it reads
        codes = np.empty(cap, np.int8)  # [padded values] signed code of each, 4 a quad
        gq = np.empty(nr * n_groups, np.int64)  # [row, group] quads of each group
        start = np.zeros(nr + 1, np.int64)  # where each built row begins in idx / codes
        for r in range(r0, r1):
            _unpack_row(values, row_offsets, r, is_q4, ub)
            j = 0 if n_tiles == 1 else r - r0
            start[j + 1] = start[j] + row_build(bitmask, r * n_words, n_words, gw, ub, 0, idx, start[j], codes,
                                                start[j], gq, j * n_groups, kq)
            if n_tiles == 1:
                row_dot(idx, 0, codes, 0, gq, 0, n_groups, scales, r * n_groups, xt, 0, xdt, 0, res, 0)
                for t in range(tokens):
                    out[t * rows + r] = res[t]
        if n_tiles == 1:
            continue
        for tile in range(n_tiles):
            for r in range(r0, r1):
                j = r - r0
                row_dot(idx, start[j], codes, start[j], gq, j * n_groups, n_groups, scales, r * n_groups, xt,
                        tile * cols * TILE, xdt, tile * n_groups * TILE, res, 0)
                for t in range(tile * TILE, min(tokens, (tile + 1) * TILE)):
                    out[t * rows + r] = res[t - tile * TILE]

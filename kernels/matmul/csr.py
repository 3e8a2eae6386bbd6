"""Sparse matrix-matrix kernel (prefill) with work proportional to the nonzeros, on every path.

A block of rows is first expanded to CSR: each stored value's column (int32, from a byte lookup
table over the mask, no per-bit branch) and its float32 weight (code x group scale, vectorized).
The activations are transposed once to tiles xt [cols, 32] (or [cols, 16] for a short last
tile), so a nonzero w at column c does acc[0:32] += w * xt[c, 0:32]: two vector FMAs in a
counted loop with 4 accumulator pairs (generic LLVM IR, `llvm.fmuladd` on <16 x float>, which
LLVM lowers for any CPU: zmm on AVX-512, 2 ymm on AVX2, 4 q-registers on NEON). Columns go in
chunks of CHUNK_COLS so a tile's chunk of xt (256 KiB) stays in L2 while the block's rows use it.
Exact float32 arithmetic (no activation quantization). out float32 [tokens, rows].
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..intrinsics import call_intrinsic, f16_to_f32
from ..jit import kernel
from ..layout import Kind

ROW_BLOCK = 64  # rows expanded together; they share the L2-resident xt chunk


CHUNK_COLS = 2048  # columns a chunk: 2048 x 32 tokens x 4 bytes = 256 KiB of xt, L2-resident (256: more calls, slower)


TILE = 32  # tokens a tile; a last tile of <= 16 tokens is 16 wide


def _call_intrinsic(fname: str, spec: str, ret: str = "v"):
    """An intrinsic calling `fname` of the CSR IR module (ir/csr.py; see intrinsics.call_intrinsic for `spec`)."""
    return call_intrinsic("zoo_csr", fname, spec, ret)


# rows: idx, wf, starts, sstride, nrows, xt, res, rstride
rows32 = _call_intrinsic("zoo_csr_rows_32", "ppp" + "ii" + "pp" + "i")
rows16 = _call_intrinsic("zoo_csr_rows_16", "ppp" + "ii" + "pp" + "i")


# cols: mask, nwords, lut, idx, p0, starts, cw
row_cols = _call_intrinsic("zoo_csr_cols", "pi" + "p" + "p" + "i" + "p" + "i", ret="i")


# scale: mask, nwords, gw, sc, cf, wf
row_scale = _call_intrinsic("zoo_csr_scale", "pii" + "ppp")


def bit_table() -> np.ndarray:
    """int32 [256 * 8]: for each byte value, the positions of its set bits, in order (rest 0)."""
    lut = np.zeros((256, 8), np.int32)
    for b in range(256):
        bits = [j for j in range(8) if b >> j & 1]
        lut[b, :len(bits)] = bits
    return lut.reshape(-1)


BIT_TABLE = bit_table()
BIT_TABLE.flags.writeable = False


@kernel(fastmath={"contract"})
def _row_codes(values, voff, kind, nnz, cf):
    """Codes of one row's nnz stored values as float32 into cf[:nnz] (sparse-q4: nibble - 8,
    sparse-q8: the int8, sparse-f16: the value itself)."""
    if kind == Kind.SPARSE_Q4:
        nb = (nnz + 1) // 2
        src = values[voff:voff + nb]
        for k in range(nb):
            cf[2 * k] = np.float32(np.int32(src[k] & 15) - 8)
            cf[2 * k + 1] = np.float32(np.int32(src[k] >> 4) - 8)
    elif kind == Kind.SPARSE_Q8:
        src = values[voff:voff + nnz]
        for k in range(nnz):
            cf[k] = np.float32(np.int8(src[k]))
    else:
        src = values[voff:voff + nnz]
        for k in range(nnz):
            cf[k] = f16_to_f32(np.uint16(src[k]))


@kernel(parallel=True)
def transpose_tiles(x, tokens, cols):
    """x float32 [tokens * cols] -> xt float32: tile i (tokens 32i..) at i * cols * 32, laid out
    [cols, width] with width 32, or 16 for a last tile of <= 16 tokens; missing tokens are zero."""
    n_tiles = (tokens + TILE - 1) // TILE
    xt = np.zeros(n_tiles * cols * TILE, np.float32)
    for tile in prange(n_tiles):
        t0 = tile * TILE
        nt = min(TILE, tokens - t0)
        width = 16 if nt <= 16 else TILE
        dst = xt[tile * cols * TILE:tile * cols * TILE + cols * width]
        for t in range(nt):
            row = x[(t0 + t) * cols:(t0 + t + 1) * cols]
            for c in range(cols):
                dst[c * width + t] = row[c]
    return xt


@kernel(parallel=True)
def matmul_csr(bitmask, row_offsets, values, scales, kind, rows, cols, group_size, x, tokens, out):
    """Sparse weights x tokens; kind Kind.SPARSE_Q4 (values uint8 nibbles), SPARSE_Q8 (int8 as uint8) or
    SPARSE_F16 (uint16 bits; scales unused). x float32 [tokens * cols] (row-major),
    out float32 [tokens * rows]. Loops: row blocks (parallel) > column chunks > token tiles > rows."""
    xt = transpose_tiles(x, tokens, cols)
    lut = BIT_TABLE
    n_words = (cols + 63) // 64
    n_groups = (cols + group_size - 1) // group_size
    words_per_group = group_size // 64
    chunk_words = CHUNK_COLS // 64
    n_chunks = (n_words + chunk_words - 1) // chunk_words
    n_tiles = (tokens + TILE - 1) // TILE
    last_width = 16 if tokens - (n_tiles - 1) * TILE <= 16 else TILE
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        span = row_offsets[r1] - row_offsets[r0]
        cap = (2 * span if kind == Kind.SPARSE_Q4 else span) + 32
        idx = np.empty(cap, np.int32)  # [stored values of the block] column of each, rows one after another
        wf = np.empty(cap, np.float32)  # [same] its weight
        starts = np.empty((r1 - r0) * (n_chunks + 1), np.int64)  # [row, chunk + 1] first position of each chunk
        res = np.zeros((r1 - r0) * n_tiles * TILE, np.float32)  # [row, tile, 32] sums
        cf = np.empty(cols + 32, np.float32)  # [stored values of a row] codes as floats + slack
        p = 0
        for r in range(r0, r1):
            end = row_cols(bitmask, r * n_words, n_words, lut, 0, idx, 0, p, starts, (r - r0) * (n_chunks + 1),
                           chunk_words)
            if kind == Kind.SPARSE_F16:
                _row_codes(values, row_offsets[r], kind, end - p, wf[p:])
            else:
                _row_codes(values, row_offsets[r], kind, end - p, cf)
                row_scale(bitmask, r * n_words, n_words, words_per_group, scales, r * n_groups, cf, 0, wf, p)
            p = end  # the slack written past a row's end is overwritten by the next row
        sstride = n_chunks + 1
        for ch in range(n_chunks):
            for tile in range(n_tiles):
                if tile == n_tiles - 1 and last_width == 16:
                    rows16(idx, 0, wf, 0, starts, ch, sstride, r1 - r0, xt, tile * cols * TILE, res, tile * TILE,
                           n_tiles * TILE)
                else:
                    rows32(idx, 0, wf, 0, starts, ch, sstride, r1 - r0, xt, tile * cols * TILE, res, tile * TILE,
                           n_tiles * TILE)
        for r in range(r0, r1):
            for t in range(tokens):
                out[t * rows + r] = res[(r - r0) * n_tiles * TILE + t]

"""tile4-q4 kernels (format/SPEC.md): matvec on the avx512, avx2 and portable paths, matmul on all.

A tile of 4 rows keeps the same K columns of every 128-column group, so activations are gathered
once per tile and group and every row does dense int4 work on K columns (tile4_ir.py: the SIMD
bodies; tile4_generic_ir.py: the portable path's target-independent IR; here the numba drivers).
Weights stay as stored: parts are flat views of `tilemask` (uint64 [tiles * 2 ng]), `qweight` (uint8
[tiles * ng * 2K]) and `scales` (f16 bits, uint16 [tiles * ng * 4]); ng = ceil(cols / 128), K = keep.

The IR text is generated here (via tile4_ir and tile4_generic_ir) and linked into the numba functions
of this file; tests check IR_HASH against tile4_ir and GENERIC_IR_HASH against tile4_generic_ir, so an
IR edit also edits this file and numba recompiles.
"""

from __future__ import annotations

import hashlib

import llvmlite.binding as llvm
import numpy as np
from numba import njit, prange
from numba.core import config

from . import tile4_generic_ir, tile4_ir
from ._llvm import call_intrinsic, f16_to_f32, trailing_zeros
from .simd import AVX2, AVX512, quantize_activations

IR_HASH = "ad2a2bff31f131a5"
GENERIC_IR_HASH = "83bfe4b2b1f61c80"
FAST = {"reassoc", "contract"}
GROUP = 128
TILE_BLOCK = 4  # tiles (16 rows) per parallel block, as the fused step's row blocks


def ir_hash() -> str:
    """sha256 prefix of both IR modules; IR_HASH must equal it (a test checks)."""
    return hashlib.sha256((tile4_ir.module("avx512") + tile4_ir.module("avx2")).encode()).hexdigest()[:16]


def _m512() -> str:
    return tile4_ir.module("avx512")


def _m2() -> str:
    return tile4_ir.module("avx2")


# spec: p = (array, offset) -> pointer, i = int64 (kernels/_llvm.call_intrinsic)
_stage512 = call_intrinsic("zoo_tile4_avx512", _m512, "zoo_t4_stage_avx512", "ppiip")
_stage2 = call_intrinsic("zoo_tile4_avx2", _m2, "zoo_t4_stage_avx2", "ppiip")
_d512_16, _d512_32, _d512_48, _d512_64 = (call_intrinsic("zoo_tile4_avx512", _m512, f"zoo_t4_dot_avx512_{k}", "ppppip")
                                          for k in tile4_ir.KEEPS)
_d2_16, _d2_32, _d2_48, _d2_64 = (call_intrinsic("zoo_tile4_avx2", _m2, f"zoo_t4_dot_avx2_{k}", "ppppip")
                                  for k in tile4_ir.KEEPS)


@njit(cache=True, inline="always")
def scratch_bytes(cols, keep):
    """Staging bytes one tile needs: K per group plus the stores' overrun."""
    return (cols + GROUP - 1) // GROUP * keep + 2 * GROUP


@njit(cache=True, fastmath=FAST, inline="always")
def simd_tile(mask, qweight, scales, t, ng, keep, isa, xq, xd, buf, out, o):
    """out[o .. o+4) = the 4 rows of tile t against int8 activations xq (per-group scales xd)."""
    if isa == AVX512:
        _stage512(mask, t * 2 * ng, xq, 0, ng, keep, buf, 0)
    else:
        _stage2(mask, t * 2 * ng, xq, 0, ng, keep, buf, 0)
    q, s = t * ng * 2 * keep, t * ng * 4
    if isa == AVX512:
        if keep == 16:
            _d512_16(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)
        elif keep == 32:
            _d512_32(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)
        elif keep == 48:
            _d512_48(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)
        else:
            _d512_64(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)
    elif keep == 16:
        _d2_16(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)
    elif keep == 32:
        _d2_32(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)
    elif keep == 48:
        _d2_48(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)
    else:
        _d2_64(qweight, q, scales, s, buf, 0, xd, 0, ng, out, o)


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_simd(mask, qweight, scales, isa, rows, cols, keep, x, out):
    """avx512 / avx2: activations to int8 once per call (one scale per 128 columns), then tiles in parallel."""
    ng = (cols + GROUP - 1) // GROUP
    xq, xd, _ = quantize_activations(x, cols, GROUP)
    tiles = rows // 4
    n_blocks = (tiles + TILE_BLOCK - 1) // TILE_BLOCK
    bufs = np.empty((n_blocks, scratch_bytes(cols, keep)), np.uint8)  # allocated outside the prange
    for blk in prange(n_blocks):
        for t in range(blk * TILE_BLOCK, min(tiles, (blk + 1) * TILE_BLOCK)):
            simd_tile(mask, qweight, scales, t, ng, keep, isa, xq, xd, bufs[blk], out, 4 * t)


@njit(parallel=True, cache=True, fastmath=FAST)
def matmul_simd(mask, qweight, scales, isa, rows, cols, keep, x, tokens, out):
    """Prefill on avx512 / avx2: every token's activations to int8 (as the matvec does), then per tile the
    tokens in turn, so the tile's codes are read from memory once and from cache for the other tokens.
    x float32 [tokens * cols]; out float32 [tokens * rows] (a tile's 4 outputs of a token are contiguous)."""
    ng = (cols + GROUP - 1) // GROUP
    width = (cols + 63) // 64 * 64 + 64  # quantize_activations' padded length
    xqs = np.empty((tokens, width), np.int8)
    xds = np.empty((tokens, ng), np.float32)
    for tok in range(tokens):
        xq, xd, _ = quantize_activations(x[tok * cols:(tok + 1) * cols], cols, GROUP)
        xqs[tok] = xq
        xds[tok] = xd
    tiles = rows // 4
    n_blocks = (tiles + TILE_BLOCK - 1) // TILE_BLOCK
    bufs = np.empty((n_blocks, scratch_bytes(cols, keep)), np.uint8)
    for blk in prange(n_blocks):
        for t in range(blk * TILE_BLOCK, min(tiles, (blk + 1) * TILE_BLOCK)):
            for tok in range(tokens):
                simd_tile(mask, qweight, scales, t, ng, keep, isa, xqs[tok], xds[tok], bufs[blk], out,
                          tok * rows + 4 * t)


def generic_ir_hash() -> str:
    """sha256 prefix of the portable path's IR module; GENERIC_IR_HASH must equal it (a test checks)."""
    return hashlib.sha256(tile4_generic_ir.module().encode()).hexdigest()[:16]


def _host_compresses() -> bool:
    """True when the CPU numba compiles for has a compress instruction (AVX-512F `vcompressps`): there
    `llvm.masked.compressstore` is a few instructions; elsewhere LLVM makes it one branch per lane."""
    features = config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


COMPRESS = _host_compresses()
_stage_c = call_intrinsic("zoo_tile4_generic", tile4_generic_ir.module, "zoo_t4p_stage_compress", "ppiip")
_stage_s = call_intrinsic("zoo_tile4_generic", tile4_generic_ir.module, "zoo_t4p_stage_scalar", "ppiip")
_sb16, _sb32, _sb48 = (call_intrinsic("zoo_tile4_generic", tile4_generic_ir.module, f"zoo_t4p_stage_bits_{k}", "ppiip")
                       for k in (16, 32, 48))
_dp16, _dp32, _dp48, _dp64 = (call_intrinsic("zoo_tile4_generic", tile4_generic_ir.module, f"zoo_t4p_dot_{k}", "pppip")
                              for k in tile4_generic_ir.KEEPS)


@njit(cache=True, inline="always")
def stage_float(mask, t, ng, keep, xp, cf):
    """cf float32 [ng * K + 64]: tile t's kept activations, group g at g*K; xp float32 [128 ng + 64], x zero padded."""
    if COMPRESS:  # AVX-512 vcompressps; elsewhere branch-free scalar code (tile4_generic_ir)
        _stage_c(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    elif keep == 16:
        _sb16(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    elif keep == 32:
        _sb32(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    elif keep == 48:
        _sb48(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    else:
        _stage_s(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)


@njit(cache=True, inline="always")
def portable_tile(mask, qweight, scales, t, ng, keep, xp, cf, out, o):
    """out[o .. o+4) = the 4 rows of tile t against float32 activations xp (generic IR, float32 throughout)."""
    stage_float(mask, t, ng, keep, xp, cf)
    q, s = t * ng * 2 * keep, t * ng * 4
    if keep == 16:
        _dp16(qweight, q, scales, s, cf, 0, ng, out, o)
    elif keep == 32:
        _dp32(qweight, q, scales, s, cf, 0, ng, out, o)
    elif keep == 48:
        _dp48(qweight, q, scales, s, cf, 0, ng, out, o)
    else:
        _dp64(qweight, q, scales, s, cf, 0, ng, out, o)


@njit(parallel=True, cache=True, fastmath=FAST)
def matvec_portable(mask, qweight, scales, rows, cols, keep, x, out):
    """Portable: float32 activations gathered once per tile, then the 4 rows' dots (tile4_generic_ir)."""
    ng = (cols + GROUP - 1) // GROUP
    tiles = rows // 4
    n_blocks = (tiles + TILE_BLOCK - 1) // TILE_BLOCK
    xp = np.zeros(ng * GROUP + 64, np.float32)  # x zero padded to whole groups (padding lanes' codes are 8)
    xp[:cols] = x
    cfs = np.empty((n_blocks, ng * keep + 64), np.float32)  # allocated outside the prange
    for blk in prange(n_blocks):
        for t in range(blk * TILE_BLOCK, min(tiles, (blk + 1) * TILE_BLOCK)):
            portable_tile(mask, qweight, scales, t, ng, keep, xp, cfs[blk], out, 4 * t)


@njit(parallel=True, cache=True, fastmath=FAST)
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


__all__ = ["AVX2", "AVX512", "matmul", "matmul_simd", "matvec_portable", "matvec_simd", "portable_tile", "simd_tile"]

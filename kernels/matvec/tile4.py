"""tile4-q4 matvec (format/SPEC.md) on the avx512, avx2 and portable paths; the tile bodies the matmul reuses.

A tile of 4 rows keeps the same K columns of every 128-column group, so activations are gathered
once per tile and group and every row does dense int4 work on K columns (ir/tile4_x86.py: the SIMD
bodies; ir/tile4_generic.py: the portable path's target-independent IR; here the numba drivers).
Weights stay as stored: parts are flat views of `tilemask` (uint64 [tiles * 2 ng]), `qweight` (uint8
[tiles * ng * 2K]) and `scales` (f16 bits, uint16 [tiles * ng * 4]); ng = ceil(cols / 128), K = keep.

"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import prange
from numba.core import config

from ..intrinsics import call_intrinsic
from ..ir import tile4_x86
from ..jit import FAST, kernel
from ..layout import Path
from .x86 import quantize_activations

GROUP = 128


TILE_BLOCK = 4  # tiles (16 rows) per parallel block, as the fused step's row blocks


# spec: p = (array, offset) -> pointer, i = int64 (intrinsics.call_intrinsic)
_stage512 = call_intrinsic("zoo_tile4_avx512", "zoo_t4_stage_avx512", "ppiip")


_stage2 = call_intrinsic("zoo_tile4_avx2", "zoo_t4_stage_avx2", "ppiip")


_d512_16, _d512_32, _d512_48, _d512_64 = (call_intrinsic("zoo_tile4_avx512", f"zoo_t4_dot_avx512_{k}", "ppppip")
                                          for k in tile4_x86.KEEPS)


_d2_16, _d2_32, _d2_48, _d2_64 = (call_intrinsic("zoo_tile4_avx2", f"zoo_t4_dot_avx2_{k}", "ppppip")
                                  for k in tile4_x86.KEEPS)


@kernel(inline=True)
def scratch_bytes(cols, keep):
    """Staging bytes one tile needs: K per group plus the stores' overrun."""
    return (cols + GROUP - 1) // GROUP * keep + 2 * GROUP


@kernel(fastmath=FAST, inline=True)
def simd_tile(mask, qweight, scales, t, ng, keep, isa, xq, xd, buf, out, o):
    """out[o .. o+4) = the 4 rows of tile t against int8 activations xq (per-group scales xd)."""
    if isa == Path.AVX512:
        _stage512(mask, t * 2 * ng, xq, 0, ng, keep, buf, 0)
    else:
        _stage2(mask, t * 2 * ng, xq, 0, ng, keep, buf, 0)
    q, s = t * ng * 2 * keep, t * ng * 4
    if isa == Path.AVX512:
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


@kernel(parallel=True, fastmath=FAST)
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


def _host_compresses() -> bool:
    """True when the CPU numba compiles for has a compress instruction (AVX-512F `vcompressps`): there
    `llvm.masked.compressstore` is a few instructions; elsewhere LLVM makes it one branch per lane."""
    features = config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


COMPRESS = _host_compresses()


_stage_c = call_intrinsic("zoo_tile4_generic", "zoo_t4p_stage_compress", "ppiip")


_stage_s = call_intrinsic("zoo_tile4_generic", "zoo_t4p_stage_scalar", "ppiip")


_sb16, _sb32, _sb48 = (call_intrinsic("zoo_tile4_generic", f"zoo_t4p_stage_bits_{k}", "ppiip")
                       for k in (16, 32, 48))


_dp16, _dp32, _dp48, _dp64 = (call_intrinsic("zoo_tile4_generic", f"zoo_t4p_dot_{k}", "pppip")
                              for k in tile4_x86.KEEPS)


@kernel(inline=True)
def stage_float(mask, t, ng, keep, xp, cf):
    """cf float32 [ng * K + 64]: tile t's kept activations, group g at g*K; xp float32 [128 ng + 64], x zero padded."""
    if COMPRESS:  # AVX-512 vcompressps; elsewhere branch-free scalar code (ir/tile4_generic.py)
        _stage_c(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    elif keep == 16:
        _sb16(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    elif keep == 32:
        _sb32(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    elif keep == 48:
        _sb48(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)
    else:
        _stage_s(mask, t * 2 * ng, xp, 0, ng, keep, cf, 0)


@kernel(inline=True)
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


@kernel(parallel=True, fastmath=FAST)
def matvec_portable(mask, qweight, scales, rows, cols, keep, x, out):
    """Portable: float32 activations gathered once per tile, then the 4 rows' dots (ir/tile4_generic.py)."""
    ng = (cols + GROUP - 1) // GROUP
    tiles = rows // 4
    n_blocks = (tiles + TILE_BLOCK - 1) // TILE_BLOCK
    xp = np.zeros(ng * GROUP + 64, np.float32)  # x zero padded to whole groups (padding lanes' codes are 8)
    xp[:cols] = x
    cfs = np.empty((n_blocks, ng * keep + 64), np.float32)  # allocated outside the prange
    for blk in prange(n_blocks):
        for t in range(blk * TILE_BLOCK, min(tiles, (blk + 1) * TILE_BLOCK)):
            portable_tile(mask, qweight, scales, t, ng, keep, xp, cfs[blk], out, 4 * t)

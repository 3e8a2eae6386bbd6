"""Portable q4 / sparse-q4 / sparse-q8 matvec (decode): 64 columns a step in generic LLVM IR.

Sparse rows: `llvm.masked.expandload` places the stored codes of a 64-column mask word at their columns (the
missing ones get the zero point), then 4 x 16 lanes are widened to float32 and multiplied with
the float32 activations in 4 independent accumulators; one multiply by the group's scale per
group. Only target-independent IR (expandload, ctpop, fmuladd, fpext half): LLVM lowers it for
the host CPU (AVX-512 `vpexpandb` here; AVX2 / NEON code elsewhere), so it is the portable path,
float32 activations as the other portable kernels (no int8 quantization). sparse-q4 codes are
unpacked one a byte per row first; sparse-q8 values are read in place. q4 rows (group size a
multiple of 64): 32 bytes a step, nibbles interleaved to column order, minus the zero point,
widened and multiplied the same way.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ..intrinsics import data_ptr, declare, link
from ..jit import kernel

ROW_BLOCK = 16


_PTR = ir.PointerType()


_I64 = ir.IntType(64)


_I8 = ir.IntType(8)


_F32 = ir.FloatType()


@intrinsic
def q4_row(typingctx, qw, qoff, rowbytes, ng, spg, x, sc, soff, zs, zoff, hz):
    """float32 dot of one q4 row (see ir/generic_rows._q4_row); (array, offset) pairs become pointers."""
    sig = types.float32(qw, qoff, rowbytes, ng, spg, x, sc, soff, zs, zoff, hz)

    def codegen(context, builder, sig, args):
        link(context, "zoo_psparse")
        fn = declare(builder, "zoo_pq4_row", _F32, [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _I64])

        def ptr(i, off):
            return builder.bitcast(data_ptr(context, builder, sig.args[i], args[i], off), _PTR)

        return builder.call(fn, [ptr(0, args[1]), args[2], args[3], args[4], ptr(5, ir.Constant(_I64, 0)),
                                 ptr(6, args[7]), ptr(8, args[9]), args[10]])

    return sig, codegen


@intrinsic
def sparse_row(typingctx, mask, moff, nwords, gw, codes, coff, x, sc, soff, zc):
    """float32 dot of one sparse row (see ir/generic_rows.module); (array, offset) pairs become pointers."""
    sig = types.float32(mask, moff, nwords, gw, codes, coff, x, sc, soff, zc)

    def codegen(context, builder, sig, args):
        link(context, "zoo_psparse")
        fn = declare(builder, "zoo_psparse_row", _F32, [_PTR, _I64, _I64, _PTR, _PTR, _PTR, _I8])

        def ptr(i, off):
            return builder.bitcast(data_ptr(context, builder, sig.args[i], args[i], off), _PTR)

        return builder.call(fn, [ptr(0, args[1]), args[2], args[3], ptr(4, args[5]), ptr(6, ir.Constant(_I64, 0)),
                                 ptr(7, args[8]), builder.trunc(args[9], _I8)])

    return sig, codegen


@kernel(parallel=True)
def matvec_sparse_q(bitmask, row_offsets, values, scales, is_q4, rows, cols, group_size, x, out):
    """sparse-q4 / sparse-q8: bitmask uint64 [rows * n_words], row_offsets int64 [rows + 1], values
    uint8 nibbles (q4) or int8 as uint8 (q8), scales uint16 [rows * n_groups]; x float32 [cols]."""
    n_words = (cols + 63) // 64
    n_groups = (cols + group_size - 1) // group_size
    gw = group_size // 64
    xp = np.zeros(n_words * 64, np.float32)  # x zero padded to whole mask words
    xp[:cols] = x
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        codes = np.empty(n_words * 64 + 2, np.uint8)  # [stored values of a row] q4 codes one a byte
        for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
            v0 = row_offsets[r]
            if is_q4:
                src = values[v0:row_offsets[r + 1]]
                for k in range(src.size):
                    codes[2 * k] = src[k] & 15
                    codes[2 * k + 1] = src[k] >> 4
                out[r] = sparse_row(bitmask, r * n_words, n_words, gw, codes, 0, xp, scales, r * n_groups, 8)
            else:
                out[r] = sparse_row(bitmask, r * n_words, n_words, gw, values, v0, xp, scales, r * n_groups, 0)


@kernel(parallel=True)
def matvec_q4(qweight, scales, zeros, has_zeros, rows, cols, group_size, x, out):
    """q4 with group_size a multiple of 64: qweight uint8 [rows * ceil(cols/2)], scales uint16
    [rows * n_groups], zeros uint8 [rows * n_groups] when has_zeros; x float32 [cols]."""
    n_groups = (cols + group_size - 1) // group_size
    spg = group_size // 64
    row_bytes = (cols + 1) // 2
    xp = np.zeros(n_groups * group_size, np.float32)  # x zero padded to whole groups
    xp[:cols] = x
    for r in prange(rows):
        out[r] = q4_row(qweight, r * row_bytes, row_bytes, n_groups, spg, xp, scales, r * n_groups, zeros,
                        r * n_groups if has_zeros else 0, 1 if has_zeros else 0)

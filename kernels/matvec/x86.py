"""Fast matrix-vector kernels: int8 activations x int4/int8 weight codes through explicit SIMD.

The row kernels are LLVM IR (ir/x86_rows.py, ir/x86_scaled_rows.py) called through `@numba.extending.intrinsic`: AVX-512
VNNI `vpdpbusd` and VBMI2 `vpexpandb` on the avx512 path, `pmaddubsw` and a pshufb lookup table
on the avx2 path. Activations are quantized to int8 once per call, one scale per weight group
(the error this adds is bounded in tests/kernels/test_kernel_linear.py). Parallel over rows (prange).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ..intrinsics import data_ptr, declare, f16_to_f32, link
from ..jit import FAST, kernel
from ..layout import Path

_PTR = ir.PointerType()
_I64 = ir.IntType(64)
_F32 = ir.FloatType()


def link_x86(context) -> None:
    """Link both x86 IR modules (every x86 kernel's library carries both)."""
    link(context, "zoo_simd_avx512")
    link(context, "zoo_simd_avx2")


def _ptr(context, builder, sig, args, i):
    """Pointer to args[i][args[i+1]] as an opaque pointer."""
    return builder.bitcast(data_ptr(context, builder, sig.args[i], args[i], args[i + 1]), _PTR)


def _dense_intrinsic(fname: str):
    @intrinsic
    def call(typingctx, qw, qoff, cols, gs, xq, sd):
        sig = types.float32(qw, qoff, cols, gs, xq, sd)

        def codegen(context, builder, sig, args):
            link_x86(context)
            fn = declare(builder, fname, _F32, [_PTR, _I64, _I64, _PTR, _PTR])
            xp, sp = (builder.bitcast(data_ptr(context, builder, sig.args[i], args[i], _I64(0)), _PTR) for i in (4, 5))
            return builder.call(fn, [_ptr(context, builder, sig, args, 0), args[2], args[3], xp, sp])

        return sig, codegen

    return call


def _sparse_intrinsic(fname: str):
    @intrinsic
    def call(typingctx, mask, moff, nwords, codes, coff, gw, xq, sd):
        sig = types.float32(mask, moff, nwords, codes, coff, gw, xq, sd)

        def codegen(context, builder, sig, args):
            link_x86(context)
            fn = declare(builder, fname, _F32, [_PTR, _I64, _PTR, _I64, _PTR, _PTR])
            xp, sp = (builder.bitcast(data_ptr(context, builder, sig.args[i], args[i], _I64(0)), _PTR) for i in (6, 7))
            return builder.call(fn, [_ptr(context, builder, sig, args, 0), args[2], _ptr(context, builder, sig, args, 3),
                                     args[5], xp, sp])

        return sig, codegen

    return call


def _unpack_intrinsic(fname: str):
    @intrinsic
    def call(typingctx, src, soff, nbytes, dst):
        sig = types.void(src, soff, nbytes, dst)

        def codegen(context, builder, sig, args):
            link_x86(context)
            fn = declare(builder, fname, ir.VoidType(), [_PTR, _I64, _PTR])
            dp = builder.bitcast(data_ptr(context, builder, sig.args[3], args[3], _I64(0)), _PTR)
            builder.call(fn, [_ptr(context, builder, sig, args, 0), args[2], dp])
            return context.get_dummy_value()

        return sig, codegen

    return call


@intrinsic
def q4x_512(typingctx, qw, qoff, cols, gs, xq, sc, soff, xd, xs, zs, zoff, hz):
    """One q4 row on permuted activations (see ir/x86_scaled_rows.dense_q4x); returns the finished dot."""
    sig = types.float32(qw, qoff, cols, gs, xq, sc, soff, xd, xs, zs, zoff, hz)

    def codegen(context, builder, sig, args):
        link_x86(context)
        fn = declare(builder, "zoo_q4x_avx512", _F32, [_PTR, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _I64])
        xp, dp, sp = (builder.bitcast(data_ptr(context, builder, sig.args[i], args[i], _I64(0)), _PTR) for i in (4, 7, 8))
        return builder.call(fn, [_ptr(context, builder, sig, args, 0), args[2], args[3], xp,
                                 _ptr(context, builder, sig, args, 5), dp, sp, _ptr(context, builder, sig, args, 9),
                                 args[11]])

    return sig, codegen


def _sparsex_intrinsic(fname: str):
    @intrinsic
    def call(typingctx, mask, moff, nwords, codes, coff, gw, xq, sc, soff, xd, xs, zc):
        """One sparse row with fused scales (see ir/x86_scaled_rows.sparse_rowx); returns the finished dot."""
        sig = types.float32(mask, moff, nwords, codes, coff, gw, xq, sc, soff, xd, xs, zc)

        def codegen(context, builder, sig, args):
            link_x86(context)
            fn = declare(builder, fname, _F32, [_PTR, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _F32])
            xp, dp, sp = (builder.bitcast(data_ptr(context, builder, sig.args[i], args[i], _I64(0)), _PTR)
                          for i in (6, 9, 10))
            return builder.call(fn, [_ptr(context, builder, sig, args, 0), args[2], _ptr(context, builder, sig, args, 3),
                                     args[5], xp, _ptr(context, builder, sig, args, 7), dp, sp, args[11]])

        return sig, codegen

    return call


sqx4_512, sqx8_512 = _sparsex_intrinsic("zoo_sparsex_q4_avx512"), _sparsex_intrinsic("zoo_sparsex_q8_avx512")
q4_512_64, q4_512_32, q4_avx2 = (_dense_intrinsic(n) for n in ("zoo_q4_avx512_64", "zoo_q4_avx512_32", "zoo_q4_avx2_32"))
q8_512_64, q8_512_32, q8_avx2 = (_dense_intrinsic(n) for n in ("zoo_q8_avx512_64", "zoo_q8_avx512_32", "zoo_q8_avx2_32"))
sq4_avx2 = _sparse_intrinsic("zoo_sparse_q4_avx2")
unpack_512, unpack_avx2 = _unpack_intrinsic("zoo_unpack_avx512_64"), _unpack_intrinsic("zoo_unpack_avx2_32")


@kernel(fastmath=FAST)
def quantize_activations(x, cols, block):
    """x float32 [cols] -> xq int8 [ceil(cols/64)*64 + 64] (zero padded), per block of `block` columns:
    xd float32 [n_blocks] scale (absmax/127) and xs float32 [n_blocks] = scale * sum(xq).
    Inner loops over slices with range(len), so LLVM vectorizes them (17 -> 10 us at 11008 columns)."""
    n_blocks = (cols + block - 1) // block
    xq = np.zeros((cols + 63) // 64 * 64 + 64, np.int8)
    xd = np.zeros(n_blocks, np.float32)
    xs = np.zeros(n_blocks, np.float32)
    for b in range(n_blocks):
        c0, c1 = b * block, min(cols, (b + 1) * block)
        xb = x[c0:c1]
        qb = xq[c0:c1]
        amax = np.float32(0.0)
        poison = np.float32(0.0)  # NaN if any x is NaN or inf (max() alone may skip a NaN)
        for c in range(xb.size):
            amax = max(amax, abs(xb[c]))
            poison += xb[c] * np.float32(0.0)
        amax += poison
        if not amax > 0.0:  # all zero, or NaN (then NaN scales carry it to the outputs)
            xd[b] = amax
            xs[b] = amax
            continue
        inv = np.float32(127.0) / amax
        total = np.int32(0)
        for c in range(xb.size):
            q = np.int32(np.rint(min(np.float32(127.0), max(np.float32(-127.0), xb[c] * inv))))
            qb[c] = q
            total += q
        xd[b] = amax / np.float32(127.0)
        xs[b] = xd[b] * np.float32(total)
    return xq, xd, xs


@kernel()
def permute_q4(xq, cols):
    """Activations permuted per 128-column block for the q4x kernels: int8 [ceil(cols/128)*128 + 64],
    out[b*128 + k] = xq[b*128 + 2k] and out[b*128 + 64 + k] = xq[b*128 + 2k + 1] (k < 64)."""
    n_blocks = (cols + 127) // 128
    out = np.zeros(n_blocks * 128 + 64, np.int8)
    for b in range(n_blocks):
        src = xq[b * 128:b * 128 + 128]
        dst = out[b * 128:b * 128 + 128]
        for k in range(64):
            dst[k] = src[2 * k]
            dst[64 + k] = src[2 * k + 1]
    return out


@kernel(fastmath=FAST, inline=True)
def row_factors(srow, zrow, has_zeros, zconst, xd, xs, sd):
    """sd[g] = scale_g x activation scale_g for one row; returns the zero-point correction
    sum_g scale_g * z_g * X[g] (X = activation scale x sum of the group's int8 activations)."""
    corr = np.float32(0.0)
    for g in range(srow.size):
        s = f16_to_f32(srow[g])
        sd[g] = s * xd[g]
        z = np.float32(zrow[g]) if has_zeros else zconst
        corr += s * z * xs[g]
    return corr


ROW_BLOCK = 32


@kernel(parallel=True, fastmath=FAST)
def matvec_dense_q(qweight, scales, zeros, has_zeros, is_q4, isa, rows, cols, group_size, x, out):
    """q4 / q8 rows (qweight uint8, q8 int8 codes viewed as uint8; scales uint16 f16 bits)."""
    xq, xd, xs = quantize_activations(x, cols, group_size)
    n_groups = (cols + group_size - 1) // group_size
    row_len = (cols + 1) // 2 if is_q4 else cols
    wide = isa == Path.AVX512 and group_size % 64 == 0
    # the codes' zero point: q4 u - 8 (or the stored zeros); q8 as q + 128 on avx512, signed on avx2
    zconst = np.float32(8.0) if is_q4 else (np.float32(128.0) if isa == Path.AVX512 else np.float32(0.0))
    if is_q4 and isa == Path.AVX512 and group_size % 128 == 0:  # 128 columns a step, scales fused in the IR
        xqp = permute_q4(xq, cols)
        for r in prange(rows):
            g0 = r * n_groups
            out[r] = q4x_512(qweight, r * row_len, cols, group_size, xqp, scales, g0, xd, xs, zeros,
                             g0 if has_zeros else 0, has_zeros)
        return
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        sd = np.empty(n_groups, np.float32)  # [n_groups] per-row scale products
        for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
            g0 = r * n_groups
            zrow = zeros[g0:g0 + n_groups] if has_zeros else zeros[:0]
            corr = row_factors(scales[g0:g0 + n_groups], zrow, has_zeros, zconst, xd, xs, sd)
            q = r * row_len
            if is_q4:
                if isa == Path.AVX2:
                    dot = q4_avx2(qweight, q, cols, group_size, xq, sd)
                elif wide:
                    dot = q4_512_64(qweight, q, cols, group_size, xq, sd)
                else:
                    dot = q4_512_32(qweight, q, cols, group_size, xq, sd)
            else:
                if isa == Path.AVX2:
                    dot = q8_avx2(qweight, q, cols, group_size, xq, sd)
                elif wide:
                    dot = q8_512_64(qweight, q, cols, group_size, xq, sd)
                else:
                    dot = q8_512_32(qweight, q, cols, group_size, xq, sd)
            out[r] = dot - corr


@kernel(inline=True)
def stage_codes(values, row_offsets, r, is_q4, isa, buf):
    """One code a byte for row r into buf: unpacked nibbles (q4) or copied int8 values (q8)."""
    off = row_offsets[r]
    nbytes = row_offsets[r + 1] - off
    if not is_q4:
        buf[:nbytes] = values[off:off + nbytes]
    elif isa == Path.AVX512:
        unpack_512(values, off, nbytes, buf)
    else:
        unpack_avx2(values, off, nbytes, buf)


@kernel(parallel=True, fastmath=FAST)
def matvec_sparse_q(bitmask, row_offsets, values, scales, is_q4, isa, rows, cols, group_size, x, out):
    """sparse-q4 / sparse-q8 rows. Each row's codes are staged one a byte in a scratch buffer one
    row ahead (double buffered): reading codes that were just stored at unaligned offsets stalls
    on failed store-to-load forwarding (measured 1.5x slower at 90% sparsity)."""
    xq, xd, xs = quantize_activations(x, cols, group_size)
    n_words = (cols + 63) // 64
    n_groups = (cols + group_size - 1) // group_size
    gw = group_size // 64
    # missing positions become the zero point: 8 (q4 codes) or 128 (q8 + 128) on avx512; avx2 is signed
    zconst = np.float32(0.0) if isa == Path.AVX2 else (np.float32(8.0) if is_q4 else np.float32(128.0))
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        stride = (cols + 256 + 63) // 64 * 64
        raw = np.zeros(2 * stride + 64, np.uint8)  # 2 rows of codes + SIMD overrun pad, 64-byte aligned:
        base = (64 - raw.ctypes.data % 64) % 64  # unaligned 64-byte stores split cache lines
        scratch = raw[base:base + 2 * stride].reshape(2, stride)
        sd = np.empty(n_groups, np.float32)
        stage_codes(values, row_offsets, r0, is_q4, isa, scratch[r0 & 1])
        for r in range(r0, r1):
            if r + 1 < r1:
                stage_codes(values, row_offsets, r + 1, is_q4, isa, scratch[(r + 1) & 1])
            m, g0 = r * n_words, r * n_groups
            buf = scratch[r & 1]
            if isa == Path.AVX512:  # scales fused in the IR
                if is_q4:
                    out[r] = sqx4_512(bitmask, m, n_words, buf, 0, gw, xq, scales, g0, xd, xs, zconst)
                else:
                    out[r] = sqx8_512(bitmask, m, n_words, buf, 0, gw, xq, scales, g0, xd, xs, zconst)
                continue
            corr = row_factors(scales[g0:g0 + n_groups], values[:0], False, zconst, xd, xs, sd)
            dot = sq4_avx2(bitmask, m, n_words, buf, 0, gw, xq, sd)  # avx2: both kinds are signed codes
            out[r] = dot - corr

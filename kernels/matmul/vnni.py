"""AVX-512 matrix-matrix kernels (prefill): int8 activations x int4 / sparse weight codes, VNNI tiles.

Dense q4 with at least 4 tokens runs avx2.matmul with vnni=1 (its tile with ymm vpdpbusd: 1.2-1.7x the
8-token zmm q4 tiles this module had, which spent more on the per-group scaling and the per-row call than on
the dots); matmul_q4 here takes the fewer-than-4-token rest, one token a call.

Each token's activations are quantized to int8 per group (quantize_tokens, as the matvec does; the
caller quantizes once per input, see kernels/activations.py), then
every weight row meets the tokens TILE at a time (ir/x86_tiles.py): a step of weight codes is
decoded once (q4 nibbles; sparse: one vpexpandb per mask word) and dotted with the tile's tokens,
so decoding costs 1/TILE per token and the int8 dot products run at VNNI speed. Parallel over
blocks of rows; out float32 [tokens, rows].
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ..intrinsics import data_ptr, declare, popcount
from ..ir.x86_tiles import TILE
from ..jit import kernel
from ..layout import Path
from ..matvec import x86
_PTR = ir.PointerType()
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
ROW_BLOCK = 8
CHUNK_BYTES = 24 << 10  # activations of one tile and chunk: with the weights, inside a 48 KiB L1


def _tile_intrinsic(fname: str, spec: str):
    """An intrinsic calling IR function `fname`; spec letters: p = (array, offset) -> pointer,
    i = int64, f = float32, a = whole array -> pointer to its first element."""
    n_args = sum(2 if c == "p" else 1 for c in spec)
    irtypes = [{"p": _PTR, "a": _PTR, "i": _I64, "f": _F32}[c] for c in spec]

    def typer(typingctx, *args):
        if len(args) != n_args:
            return None
        sig = types.void(*args)

        def codegen(context, builder, sig, llargs):
            x86.link_x86(context)
            fn = declare(builder, fname, ir.VoidType(), irtypes)
            vals, i = [], 0
            for c in spec:
                if c in "pa":
                    off = llargs[i + 1] if c == "p" else _I64(0)
                    vals.append(builder.bitcast(data_ptr(context, builder, sig.args[i], llargs[i], off), _PTR))
                    i += 2 if c == "p" else 1
                else:
                    vals.append(llargs[i])
                    i += 1
            builder.call(fn, vals)
            return context.get_dummy_value()

        return sig, codegen

    # numba lowers an @intrinsic only with a fixed arity (no *args): give it n_args named parameters
    names = ", ".join(f"a{i}" for i in range(n_args))
    scope = {"typer": typer}
    exec(f"def {fname}(typingctx, {names}):\n    return typer(typingctx, {names})", scope)  # noqa: S102
    return intrinsic(scope[fname])


# q4: qw, cols, gs, xq, xstride, sc, xd, xs, ngx, zs, hz, zc, res
_Q4 = "pii" + "pi" + "pppi" + "pi" + "f" + "a"
# sparse: mask, nwords, codes, gw, xq, xstride, sc, xd, xs, ngx, zs, hz, zc, res
_SP = "pipi" + "pi" + "pppi" + "pi" + "f" + "a"
mm_q4_1 = _tile_intrinsic("zoo_mm_q4x_1", _Q4)
mm_sq4_t, mm_sq4_1 = (_tile_intrinsic(f"zoo_mm_sparse_q4_{n}", _SP) for n in (TILE, 1))
mm_sq8_t, mm_sq8_1 = (_tile_intrinsic(f"zoo_mm_sparse_q8_{n}", _SP) for n in (TILE, 1))


@kernel(parallel=True)
def quantize_tokens(x, tokens, cols, group_size, permute):
    """x float32 [tokens * cols] -> xq int8 [tokens * stride] (q4: permuted per 128 columns), xd and
    xs float32 [tokens * n_groups] (see x86.quantize_activations); returns (xq, xd, xs, stride)."""
    n_groups = (cols + group_size - 1) // group_size
    stride = (cols + 127) // 128 * 128 + 64
    xq = np.zeros(tokens * stride, np.int8)
    xd = np.empty(tokens * n_groups, np.float32)
    xs = np.empty(tokens * n_groups, np.float32)
    for t in prange(tokens):
        q, d, s = x86.quantize_activations(x[t * cols:(t + 1) * cols], cols, group_size)
        if permute:
            q = x86.permute_q4(q, cols)
        xq[t * stride:t * stride + q.size] = q
        xd[t * n_groups:(t + 1) * n_groups] = d
        xs[t * n_groups:(t + 1) * n_groups] = s
    return xq, xd, xs, stride


@kernel()
def _chunk_cols(cols, group_size):
    """Columns per step of the column loop: whole groups, about CHUNK_BYTES of activations a token."""
    return max(group_size, CHUNK_BYTES // TILE // group_size * group_size)


@kernel(inline=True)
def _store(res, out, rows, r, t0, n, first):
    for t in range(n):
        if first:
            out[(t0 + t) * rows + r] = res[t]
        else:
            out[(t0 + t) * rows + r] += res[t]


@kernel(parallel=True)
def matmul_q4(qweight, scales, zeros, has_zeros, rows, cols, group_size, xq, xd, xs, stride, tokens, out):
    """q4 rows (group_size a multiple of 128) x fewer than SMALL_TILE tokens, one token a call (from 4 tokens on,
    avx2.matmul with vnni=1 runs); xq, xd, xs, stride: quantize_tokens(x, ..., permute=True) of x float32
    [tokens, cols]; out [tokens * rows]. Loops: row blocks (parallel) > column chunks > tokens > rows."""
    n_groups = (cols + group_size - 1) // group_size
    row_len = (cols + 1) // 2
    chunk = _chunk_cols(cols, group_size)
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        res = np.empty(1, np.float32)
        for c0 in range(0, cols, chunk):
            cn = min(cols, c0 + chunk) - c0
            gc = c0 // group_size
            for t in range(tokens):
                for r in range(blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)):
                    g0 = r * n_groups + gc
                    mm_q4_1(qweight, r * row_len + c0 // 2, cn, group_size, xq, t * stride + c0, stride, scales, g0,
                            xd, t * n_groups + gc, xs, t * n_groups + gc, n_groups, zeros, g0 if has_zeros else 0,
                            has_zeros, np.float32(8.0), res)
                    _store(res, out, rows, r, t, 1, c0 == 0)


@kernel(parallel=True)
def matmul_sparse(bitmask, row_offsets, values, scales, is_q4, rows, cols, group_size, xq, xd, xs, stride, tokens,
                  out):
    """sparse-q4 / sparse-q8 rows x tokens (activations: quantize_tokens(x, ..., permute=False)): the block's
    codes are staged one a byte (as the matvec), then each mask word is expanded once per tile of tokens;
    loops as matmul_q4."""
    n_words = (cols + 63) // 64
    n_groups = (cols + group_size - 1) // group_size
    gw = group_size // 64
    zc = np.float32(8.0) if is_q4 else np.float32(128.0)
    chunk = _chunk_cols(cols, group_size)
    pitch = (cols + 256 + 63) // 64 * 64
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        res = np.empty(TILE, np.float32)
        codes = np.zeros(ROW_BLOCK * pitch, np.uint8)  # [ROW_BLOCK, pitch] the block's codes + SIMD pad
        pos = np.zeros(ROW_BLOCK, np.int64)  # each row's first code of the current chunk
        for r in range(r0, r1):
            x86.stage_codes(values, row_offsets, r, is_q4, Path.AVX512, codes[(r - r0) * pitch:(r - r0 + 1) * pitch])
        for c0 in range(0, cols, chunk):
            cn = min(cols, c0 + chunk) - c0
            w0, wn, gc = c0 // 64, (cn + 63) // 64, c0 // group_size
            for t0 in range(0, tokens, TILE):
                n = min(TILE, tokens - t0)
                for r in range(r0, r1):
                    m, g0, co = r * n_words + w0, r * n_groups + gc, (r - r0) * pitch + pos[r - r0]
                    for t1 in range(t0, t0 + n, TILE if n == TILE else 1):
                        if n == TILE and is_q4:
                            mm_sq4_t(bitmask, m, wn, codes, co, gw, xq, t1 * stride + c0, stride, scales, g0, xd,
                                     t1 * n_groups + gc, xs, t1 * n_groups + gc, n_groups, values, 0, 0, zc, res)
                        elif n == TILE:
                            mm_sq8_t(bitmask, m, wn, codes, co, gw, xq, t1 * stride + c0, stride, scales, g0, xd,
                                     t1 * n_groups + gc, xs, t1 * n_groups + gc, n_groups, values, 0, 0, zc, res)
                        elif is_q4:
                            mm_sq4_1(bitmask, m, wn, codes, co, gw, xq, t1 * stride + c0, stride, scales, g0, xd,
                                     t1 * n_groups + gc, xs, t1 * n_groups + gc, n_groups, values, 0, 0, zc, res)
                        else:
                            mm_sq8_1(bitmask, m, wn, codes, co, gw, xq, t1 * stride + c0, stride, scales, g0, xd,
                                     t1 * n_groups + gc, xs, t1 * n_groups + gc, n_groups, values, 0, 0, zc, res)
                        _store(res, out, rows, r, t1, TILE if n == TILE else 1, c0 == 0)
            for r in range(r0, r1):
                for wd in range(w0, w0 + wn):
                    pos[r - r0] += popcount(bitmask[r * n_words + wd])

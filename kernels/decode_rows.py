"""Row dot products of the fused decode step: one weight's rows r0..r1 against one activation vector.

Why a module of its own: every encoding the fused step covers (dense, q4/q8, sparse-q4/q8/f16) has
its row body here, written as the matvec kernels' own row body (matvec/x86.py's IR rows, matvec/portable.py's
sparse-f16 walk), so a fused row equals `linear`'s to float rounding. Weights arrive by address
(one int64 meta row per weight, see META below) and are rebuilt as views with numba.carray.
Every function here is inlined (kernel(inline=True)): it compiles inside decode.py's functions.
"""

from __future__ import annotations

import numpy as np
from numba import carray, types
from numba.extending import intrinsic

from .intrinsics import bf16_to_f32, f16_to_f32, trailing_zeros
from .jit import FAST, kernel
from .layout import Kind, Path
from .matvec import tile4, x86

# meta columns: kind (layout.Kind), rows, cols, group size, then address and element count of the data (codes,
# stored values or dense values), the f16 scales, the q4 zeros, the sparse bitmask (uint64 words)
# and row offsets (int64 [rows + 1]); (0, 0) when a part is absent
(M_KIND, M_ROWS, M_COLS, M_GS, M_DATA, M_NDATA, M_SCALES, M_NSCALES, M_ZEROS, M_NZEROS, M_MASK, M_NMASK, M_OFFS,
 M_NOFFS) = range(14)
META = 14


@kernel(inline=True)
def stage_bytes(cols):
    """Scratch bytes one row block needs to stage sparse codes: 2 rows (double buffer) + SIMD overrun + alignment."""
    return 2 * ((cols + 256 + 63) // 64 * 64) + 128


@intrinsic
def _pointer(typingctx, address, dtype):
    """An int64 address as a numba pointer to `dtype` (a numpy scalar type), for numba.carray."""
    ptr = types.CPointer(dtype.dtype)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(address, dtype), codegen


@kernel(inline=True)
def is_int8_kind(kind):
    """Whether weight rows of this kind take int8 activations (x86.quantize_activations)."""
    return kind <= Kind.SPARSE_Q8 or kind == Kind.TILE4_Q4


@kernel(inline=True)
def is_q4x(m, isa):
    """Whether weight m takes x86's q4x row kernel (avx512, q4, groups of 128k: permuted activations)."""
    return m[M_KIND] == Kind.Q4 and isa == Path.AVX512 and m[M_GS] % 128 == 0


@kernel(inline=True)
def _view(m, addr_col, n_col, dtype, use):
    """The part at meta columns (addr_col, n_col) as a 1-D view, or a 1-element view of the data when unused."""
    if use and m[n_col] > 0:
        return carray(_pointer(m[addr_col], dtype), m[n_col])
    return carray(_pointer(m[M_DATA], dtype), 1)  # any valid address, read by nothing


@kernel(inline=True)
def _arrays(m):
    """Views of weight m's parts; see the META columns."""
    kind = m[M_KIND]
    q = is_int8_kind(kind)
    qw = _view(m, M_DATA, M_NDATA, np.uint8, q)
    sc = _view(m, M_SCALES, M_NSCALES, np.uint16, q)
    zr = _view(m, M_ZEROS, M_NZEROS, np.uint8, q)
    fw = _view(m, M_DATA, M_NDATA, np.float32, kind == Kind.F32)
    hw = _view(m, M_DATA, M_NDATA, np.uint16, kind == Kind.F16 or kind == Kind.BF16 or kind == Kind.SPARSE_F16)
    mk = _view(m, M_MASK, M_NMASK, np.uint64, kind == Kind.SPARSE_Q4 or kind == Kind.SPARSE_Q8 or kind == Kind.SPARSE_F16 or kind == Kind.TILE4_Q4)
    of = _view(m, M_OFFS, M_NOFFS, np.int64, kind == Kind.SPARSE_Q4 or kind == Kind.SPARSE_Q8 or kind == Kind.SPARSE_F16)
    return qw, sc, zr, fw, hw, mk, of


@kernel(fastmath=FAST, inline=True)
def _q_dot(is_q4, isa, qw, q, cols, gs, xq, sd):
    """One row of q4/q8 codes (starting at byte q of qw) against int8 activations: x86.py's row kernels."""
    wide = isa == Path.AVX512 and gs % 64 == 0
    if is_q4:
        if isa == Path.AVX2:
            return x86.q4_avx2(qw, q, cols, gs, xq, sd)
        if wide:
            return x86.q4_512_64(qw, q, cols, gs, xq, sd)
        return x86.q4_512_32(qw, q, cols, gs, xq, sd)
    if isa == Path.AVX2:
        return x86.q8_avx2(qw, q, cols, gs, xq, sd)
    if wide:
        return x86.q8_512_64(qw, q, cols, gs, xq, sd)
    return x86.q8_512_32(qw, q, cols, gs, xq, sd)


@kernel(fastmath=FAST, inline=True)
def _put(out, i, d, residual):
    if residual:
        out[i] += d
    else:
        out[i] = d


@kernel(fastmath=FAST, inline=True)
def _dense_q_rows(m, qw, sc, zr, r0, r1, isa, xq, xd, xs, sd, out, off, residual):
    """q4 / q8 rows: x86.matvec_dense_q's row body."""
    kind, cols, gs = m[M_KIND], m[M_COLS], m[M_GS]
    is_q4 = kind == Kind.Q4
    n_groups = (cols + gs - 1) // gs
    has_z = m[M_NZEROS] > 0
    hz = np.int64(1 if has_z else 0)
    row_len = (cols + 1) // 2 if is_q4 else cols
    if is_q4x(m, isa):
        for r in range(r0, r1):
            g0 = r * n_groups
            _put(out, off + r, x86.q4x_512(qw, r * row_len, cols, gs, xq, sc, g0, xd, xs, zr, g0 * hz, hz), residual)
        return
    zconst = np.float32(8.0) if is_q4 else (np.float32(128.0) if isa == Path.AVX512 else np.float32(0.0))
    for r in range(r0, r1):
        g0 = r * n_groups
        zrow = zr[g0:g0 + n_groups] if has_z else zr[:0]
        corr = x86.row_factors(sc[g0:g0 + n_groups], zrow, has_z, zconst, xd, xs, sd)
        _put(out, off + r, _q_dot(is_q4, isa, qw, r * row_len, cols, gs, xq, sd) - corr, residual)


@kernel(fastmath=FAST, inline=True)
def _sparse_q_rows(m, vals, sc, mk, of, r0, r1, isa, xq, xd, xs, sd, stage, out, off, residual):
    """sparse-q4 / sparse-q8 rows: x86.matvec_sparse_q's row body (codes staged one a byte, one row
    ahead, in a 64-byte aligned double buffer carved from `stage` uint8 [stage_bytes(cols)])."""
    kind, cols, gs = m[M_KIND], m[M_COLS], m[M_GS]
    is_q4 = kind == Kind.SPARSE_Q4
    n_words = (cols + 63) // 64
    n_groups = (cols + gs - 1) // gs
    gw = gs // 64
    zconst = np.float32(0.0) if isa == Path.AVX2 else (np.float32(8.0) if is_q4 else np.float32(128.0))
    stride = (cols + 256 + 63) // 64 * 64
    base = (64 - np.int64(stage.ctypes.data) % 64) % 64
    scratch = stage[base:base + 2 * stride].reshape(2, stride)  # [2 rows, stride] codes one a byte
    x86.stage_codes(vals, of, r0, is_q4, isa, scratch[r0 & 1])
    for r in range(r0, r1):
        if r + 1 < r1:
            x86.stage_codes(vals, of, r + 1, is_q4, isa, scratch[(r + 1) & 1])
        w0, g0 = r * n_words, r * n_groups
        buf = scratch[r & 1]
        if isa == Path.AVX512:  # scales fused in the IR
            if is_q4:
                d = x86.sqx4_512(mk, w0, n_words, buf, 0, gw, xq, sc, g0, xd, xs, zconst)
            else:
                d = x86.sqx8_512(mk, w0, n_words, buf, 0, gw, xq, sc, g0, xd, xs, zconst)
        else:
            corr = x86.row_factors(sc[g0:g0 + n_groups], vals[:0], False, zconst, xd, xs, sd)
            d = x86.sq4_avx2(mk, w0, n_words, buf, 0, gw, xq, sd) - corr
        _put(out, off + r, d, residual)


@kernel(fastmath=FAST, inline=True)
def _tile4_rows(m, qw, sc, mk, r0, r1, isa, xq, xd, stage, out, off, residual):
    """tile4-q4 rows r0..r1 (multiples of 4): tile4.matvec_simd's body, one tile (4 rows) at a time."""
    cols = m[M_COLS]
    ng = (cols + 127) // 128
    keep = m[M_NDATA] // (m[M_ROWS] // 4 * ng * 2)
    for t in range(r0 // 4, r1 // 4):
        o = off + 4 * t
        a0, a1, a2, a3 = out[o], out[o + 1], out[o + 2], out[o + 3]
        tile4.simd_tile(mk, qw, sc, t, ng, keep, isa, xq, xd, stage, out, o)
        if residual:
            out[o] += a0
            out[o + 1] += a1
            out[o + 2] += a2
            out[o + 3] += a3


@kernel(fastmath=FAST, inline=True)
def _float_rows(kind, fw, hw, mk, of, cols, r0, r1, x, out, off, residual):
    """f32 / f16 / bf16 rows (a vectorized dot) and sparse-f16 rows (matvec/portable.matvec_sparse_f16's walk)."""
    n_words = (cols + 63) // 64
    for r in range(r0, r1):
        acc = np.float32(0.0)
        if kind == Kind.F32:
            row = fw[r * cols:(r + 1) * cols]
            for c in range(cols):
                acc += row[c] * x[c]
        elif kind == Kind.F16:
            hrow = hw[r * cols:(r + 1) * cols]
            for c in range(cols):
                acc += f16_to_f32(hrow[c]) * x[c]
        elif kind == Kind.BF16:
            hrow = hw[r * cols:(r + 1) * cols]
            for c in range(cols):
                acc += bf16_to_f32(hrow[c]) * x[c]
        else:
            pos = of[r]
            for wd in range(n_words):
                bits = mk[r * n_words + wd]
                base = wd * 64
                while bits != 0:
                    acc += f16_to_f32(hw[pos]) * x[base + trailing_zeros(bits)]
                    pos += 1
                    bits &= bits - np.uint64(1)
        _put(out, off + r, acc, residual)


@kernel(fastmath=FAST, inline=True)
def block_dots(m, r0, r1, isa, xq, xd, xs, x, sd, stage, out, off, residual):
    """Rows r0..r1-1 of the weight described by meta row m, dotted with x: out[off + r] (+)= dot.

    xq/xd/xs: x as `quantized` prepared it for m (int8 kinds); sd float32 [n_groups] and stage uint8
    [stage_bytes(cols)] scratch. The fields of m are read once per block: numba gives LLVM no
    type-based alias information, so a field read inside the row loop would be reloaded after every
    store to out.
    """
    qw, sc, zr, fw, hw, mk, of = _arrays(m)
    kind = m[M_KIND]
    r0, r1 = np.int64(r0), np.int64(r1)  # a prange's block index may reach here as float64 (uint/int unified)
    if kind <= Kind.Q8:
        _dense_q_rows(m, qw, sc, zr, r0, r1, isa, xq, xd, xs, sd, out, off, residual)
    elif kind == Kind.TILE4_Q4:
        _tile4_rows(m, qw, sc, mk, r0, r1, isa, xq, xd, stage, out, off, residual)
    elif kind <= Kind.SPARSE_Q8:
        _sparse_q_rows(m, qw, sc, mk, of, r0, r1, isa, xq, xd, xs, sd, stage, out, off, residual)
    else:
        _float_rows(kind, fw, hw, mk, of, m[M_COLS], r0, r1, x, out, off, residual)


@kernel(inline=True)
def quantized(m, x, isa):
    """x quantized for weight m as the matvec kernels do (int8 per group; permuted for q4x); dummies
    for float weights."""
    if is_int8_kind(m[M_KIND]):
        xq, xd, xs = x86.quantize_activations(x, x.size, m[M_GS])
        if is_q4x(m, isa):
            xq = x86.permute_q4(xq, x.size)
        return xq, xd, xs
    return np.zeros(1, np.int8), np.zeros(1, np.float32), np.zeros(1, np.float32)


@kernel(inline=True)
def _xform(m, isa):
    """How x must be prepared for m: -1 float, else the group size, negated minus 2 when permuted (q4x)."""
    if not is_int8_kind(m[M_KIND]):
        return np.int64(-1)
    return -2 - m[M_GS] if is_q4x(m, isa) else m[M_GS]


@kernel(inline=True)
def needs_own(m, prev, used, isa):
    """Whether weight m, when used, needs x quantized again (an int8 kind not prepared like `prev`'s)."""
    return used and is_int8_kind(m[M_KIND]) and _xform(m, isa) != _xform(prev, isa)


@kernel(inline=True)
def has_sparse_q(m):
    """Whether weight m needs the staging scratch (sparse-q4/q8 codes, tile4-q4 activations)."""
    return m[M_KIND] == Kind.SPARSE_Q4 or m[M_KIND] == Kind.SPARSE_Q8 or m[M_KIND] == Kind.TILE4_Q4

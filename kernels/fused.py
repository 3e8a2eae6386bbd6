"""A fused decode step: one token through every Llama block and the head in a single numba call.

Why: on a small model (SmolLM2-135M: 30 blocks x ~13 ops) the per-op path spends more time in Python
dispatch and in starting ~400 parallel regions per token than in the matvec kernels. Here a token costs
4 parallel regions per block (q|k|v rows, o rows, gate|up rows with SwiGLU, down rows; a 5th over heads
for attention over long contexts) and no Python. The row dot products are the matvec kernels' own (simd.py: int8 activations x q4/q8
codes through VNNI/AVX2 IR, one activation scale per weight group), so results equal `linear`'s.

Weights arrive as a `DecodePlan` built once by `plan_llama` from PreparedWeights (zero-copy views).
Supported: dense f32/f16/bf16, q8 and q4 (with or without zeros) on the avx512 and avx2 paths; anything
else (sparse encodings, the portable path) raises KernelError, and the caller uses `linear` per op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from zoo.errors import KernelError

from . import simd
from ._llvm import bf16_to_f32, f16_to_f32
from ._paths import active_path
from .fused_attention import attend, silu_mul_into
from .linear import PreparedWeight

# numba invalidates a cached function only when its own file changes, but the decode step inlines
# simd.py, fused_attention.py and _llvm.py: INLINED_HASH must equal inlined_source_hash() (a test
# checks), so editing any of them forces an edit here and a recompile of the fused step.
INLINED_HASH = "f42eff820c941a01"
_INLINED = ("simd.py", "fused_attention.py", "_llvm.py")


def inlined_source_hash() -> str:
    """sha256 prefix over the sources the fused step inlines (see INLINED_HASH)."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for name in _INLINED:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]

FAST = {"reassoc", "contract"}
KIND_Q4, KIND_Q8, KIND_F32, KIND_F16, KIND_BF16 = 0, 1, 2, 3, 4
SLOTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")  # per block, in order
# meta columns: kind, rows, cols, group size, then address and element count of the data (codes or
# dense values), the f16 scales and the q4 zeros (0, 0 when absent)
M_KIND, M_ROWS, M_COLS, M_GS, M_DATA, M_NDATA, M_SCALES, M_NSCALES, M_ZEROS, M_NZEROS = range(10)
ROW_BLOCK = 16
# decode attention runs serially below this many multiply-adds per block (heads x keys x head_dim):
# ~10 us of work, about what starting a parallel region and waiting for it costs on a busy machine
SERIAL_ATTENTION = 1 << 17


@dataclass
class DecodePlan:
    """Every linear weight of a Llama model as one table of addresses (built once, read every token).

    The weights are passed to numba by address, not as a container of arrays: numba's typed List
    compiles its methods in every new process (seconds at start) and a tuple of hundreds of arrays is
    unboxed on every call. `keep` holds the arrays, so the addresses stay valid as long as the plan.
    """

    meta: np.ndarray  # int64 [n_layers * 7 + 1, 10]: slots in SLOTS order per block, then the head
    isa: int  # simd.AVX512 or simd.AVX2
    n_layers: int
    hidden_max: int
    keep: list = field(repr=False, default_factory=list)


def _addr(a: np.ndarray) -> tuple[int, int]:
    return a.__array_interface__["data"][0], a.size


def plan_llama(blocks: list[dict], head: PreparedWeight) -> DecodePlan:
    """blocks[i] maps SLOTS names to PreparedWeights; KernelError if an encoding or the path is unsupported."""
    path = active_path()
    if path not in ("avx512", "avx2"):
        raise KernelError(f"fused decode needs the avx512 or avx2 path, not {path!r}")
    rows, keep = [], []
    for w in [b[s] for b in blocks for s in SLOTS] + [head]:
        p = w.parts
        keep.append(p)
        if w.encoding in ("q4", "q8"):
            kind = KIND_Q4 if w.encoding == "q4" else KIND_Q8
            zeros = _addr(p["zeros"]) if "zeros" in p else (0, 0)
            rows.append((kind, w.rows, w.cols, w.group_size, *_addr(p["qweight"]), *_addr(p["scales"]), *zeros))
        elif w.encoding == "dense":
            kind = (KIND_F32, KIND_F16, KIND_BF16)[w.kind]
            rows.append((kind, w.rows, w.cols, 64, *_addr(p[""]), 0, 0, 0, 0))
        else:
            raise KernelError(f"fused decode does not support the {w.encoding} encoding")
    meta = np.array(rows, dtype=np.int64).reshape(-1, 10)
    hidden = max(b["ffn_up"].rows for b in blocks) if blocks else 1
    return DecodePlan(meta, simd.AVX512 if path == "avx512" else simd.AVX2, len(blocks), hidden, keep)


@intrinsic
def _pointer(typingctx, address, dtype):
    """An int64 address as a numba pointer to `dtype` (a numpy scalar type), for numba.carray."""
    ptr = types.CPointer(dtype.dtype)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(address, dtype), codegen


@njit(cache=True, inline="always")
def _arrays(m):
    """Views of weight m's parts (1-element views of a dummy for the parts it lacks); see DecodePlan."""
    kind = m[M_KIND]
    q_kind = kind <= KIND_Q8
    dummy = m[M_DATA]  # any valid address: read as 1 element only, and never by the kernels
    qw = carray(_pointer(m[M_DATA] if q_kind else dummy, np.uint8), m[M_NDATA] if q_kind else 1)
    sc = carray(_pointer(m[M_SCALES] if q_kind else dummy, np.uint16), m[M_NSCALES] if q_kind else 1)
    has_z = m[M_NZEROS] > 0
    zr = carray(_pointer(m[M_ZEROS] if has_z else dummy, np.uint8), m[M_NZEROS] if has_z else 1)
    fw = carray(_pointer(dummy, np.float32), m[M_NDATA] if kind == KIND_F32 else 1)
    hw = carray(_pointer(dummy, np.uint16), m[M_NDATA] if kind >= KIND_F16 else 1)
    return qw, sc, zr, fw, hw


@njit(cache=True, fastmath=FAST, inline="always")
def _q_dot(is_q4, isa, qw, q, cols, gs, xq, sd):
    """One row of q4/q8 codes (starting at byte q of qw) against int8 activations: simd.py's row kernels."""
    wide = isa == simd.AVX512 and gs % 64 == 0
    if is_q4:
        if isa == simd.AVX2:
            return simd.q4_avx2(qw, q, cols, gs, xq, sd)
        if wide:
            return simd.q4_512_64(qw, q, cols, gs, xq, sd)
        return simd.q4_512_32(qw, q, cols, gs, xq, sd)
    if isa == simd.AVX2:
        return simd.q8_avx2(qw, q, cols, gs, xq, sd)
    if wide:
        return simd.q8_512_64(qw, q, cols, gs, xq, sd)
    return simd.q8_512_32(qw, q, cols, gs, xq, sd)


@njit(cache=True, inline="always")
def _q4x(m, isa):
    """Whether weight m takes simd's q4x row kernel (avx512, q4, groups of 128k: permuted activations)."""
    return m[M_KIND] == KIND_Q4 and isa == simd.AVX512 and m[M_GS] % 128 == 0


@njit(cache=True, fastmath=FAST, inline="always")
def _put(out, i, d, residual):
    if residual:
        out[i] += d
    else:
        out[i] = d


@njit(cache=True, fastmath=FAST, inline="always")
def _block_dots(m, r0, r1, isa, xq, xd, xs, x, sd, out, off, residual):
    """Rows r0..r1-1 of the weight described by meta row m, dotted with x: out[off + r] (+)= dot.

    xq/xd/xs: x as `_quantized` prepared it for m (q kinds); sd float32 [n_groups] scratch. The
    fields of m are read once per block: numba gives LLVM no type-based alias information, so a
    field read inside the row loop would be reloaded after every store to out. The q4/q8 loops
    are simd.matvec_dense_q's row body, so a fused row equals linear's.
    """
    qw, sc, zr, fw, hw = _arrays(m)
    kind, cols, gs = m[M_KIND], m[M_COLS], m[M_GS]
    if kind <= KIND_Q8:
        is_q4 = kind == KIND_Q4
        n_groups = (cols + gs - 1) // gs
        has_z = m[M_NZEROS] > 0
        hz = np.int64(1 if has_z else 0)
        row_len = (cols + 1) // 2 if is_q4 else cols
        if _q4x(m, isa):
            for r in range(r0, r1):
                g0 = r * n_groups
                _put(out, off + r, simd.q4x_512(qw, r * row_len, cols, gs, xq, sc, g0, xd, xs, zr, g0 * hz, hz),
                     residual)
            return
        zconst = np.float32(8.0) if is_q4 else (np.float32(128.0) if isa == simd.AVX512 else np.float32(0.0))
        for r in range(r0, r1):
            g0 = r * n_groups
            zrow = zr[g0:g0 + n_groups] if has_z else zr[:0]
            corr = simd._row_factors(sc[g0:g0 + n_groups], zrow, has_z, zconst, xd, xs, sd)
            _put(out, off + r, _q_dot(is_q4, isa, qw, r * row_len, cols, gs, xq, sd) - corr, residual)
        return
    for r in range(r0, r1):
        acc = np.float32(0.0)
        if kind == KIND_F32:
            row = fw[r * cols:(r + 1) * cols]
            for c in range(cols):
                acc += row[c] * x[c]
        elif kind == KIND_F16:
            hrow = hw[r * cols:(r + 1) * cols]
            for c in range(cols):
                acc += f16_to_f32(hrow[c]) * x[c]
        else:
            hrow = hw[r * cols:(r + 1) * cols]
            for c in range(cols):
                acc += bf16_to_f32(hrow[c]) * x[c]
        _put(out, off + r, acc, residual)


@njit(cache=True, fastmath=FAST)
def _rmsnorm(x, w, eps, out):
    ss = np.float32(0.0)
    for i in range(x.size):
        ss += x[i] * x[i]
    inv = np.float32(1.0) / np.sqrt(ss / np.float32(x.size) + np.float32(eps))
    for i in range(x.size):
        out[i] = x[i] * inv * w[i]


@njit(cache=True)
def _quantized(m, x, isa):
    """x quantized for weight m as simd.matvec_dense_q does (int8 per group; permuted for q4x); dummies
    for dense weights."""
    if m[M_KIND] <= KIND_Q8:
        xq, xd, xs = simd.quantize_activations(x, x.size, m[M_GS])
        if _q4x(m, isa):
            xq = simd.permute_q4(xq, x.size)
        return xq, xd, xs
    return np.zeros(1, np.int8), np.zeros(1, np.float32), np.zeros(1, np.float32)


@njit(cache=True, inline="always")
def _needs_own(m, prev, used):
    """Whether weight m, when used, needs x quantized again (a q kind not prepared like `prev`'s)."""
    return used and m[M_KIND] <= KIND_Q8 and (m[M_KIND] != prev[M_KIND] or m[M_GS] != prev[M_GS])


@njit(cache=True)
def _rope(v, n_heads, head_dim, pos, cos, sin, interleaved):
    """Rotate v float32 [n_heads * head_dim] (one token at pos) in place."""
    half = head_dim // 2
    for h in range(n_heads):
        b = h * head_dim
        for i in range(half):
            c, s = cos[pos, i], sin[pos, i]
            i0 = b + 2 * i if interleaved else b + i
            i1 = i0 + 1 if interleaved else i0 + half
            x0, x1 = v[i0], v[i1]
            v[i0] = x0 * c - x1 * s
            v[i1] = x0 * s + x1 * c


@njit(parallel=True, cache=True, fastmath=FAST)
def _linear_rows(meta, s0, n_w, x, isa, out, residual):
    """Weights meta[s0 .. s0+n_w) (n_w <= 3) stacked by rows, all reading x float32 [cols]:
    out[offset_j + r] = row r of weight j . x, or += with residual=True (o and down add into x).

    Scratch is allocated before the prange: an allocation inside it costs each block ~0.1 us,
    measurable against the ~0.5 us a 576-column q4 row takes (views of the weights cost nothing)."""
    m0, m1, m2 = meta[s0], meta[s0 + min(1, n_w - 1)], meta[s0 + min(2, n_w - 1)]
    xq0, xd0, xs0 = _quantized(m0, x, isa)
    xq1, xd1, xs1 = _quantized(m1, x, isa) if _needs_own(m1, m0, n_w > 1) else (xq0, xd0, xs0)
    xq2, xd2, xs2 = _quantized(m2, x, isa) if _needs_own(m2, m1, n_w > 2) else (xq1, xd1, xs1)
    r0, r1 = m0[M_ROWS], m1[M_ROWS] if n_w > 1 else 0
    r2 = m2[M_ROWS] if n_w > 2 else 0
    nb0, nb1 = (r0 + ROW_BLOCK - 1) // ROW_BLOCK, (r1 + ROW_BLOCK - 1) // ROW_BLOCK
    nb2 = (r2 + ROW_BLOCK - 1) // ROW_BLOCK
    sds = np.empty((nb0 + nb1 + nb2, (x.size + 31) // 32), np.float32)  # [blocks, n_groups] scale products
    for blk in prange(nb0 + nb1 + nb2):
        if blk < nb0:
            b, off, m, xq, xd, xs = blk, 0, m0, xq0, xd0, xs0
        elif blk < nb0 + nb1:
            b, off, m, xq, xd, xs = blk - nb0, r0, m1, xq1, xd1, xs1
        else:
            b, off, m, xq, xd, xs = blk - nb0 - nb1, r0 + r1, m2, xq2, xd2, xs2
        _block_dots(m, b * ROW_BLOCK, min(m[M_ROWS], (b + 1) * ROW_BLOCK), isa, xq, xd, xs, x, sds[blk], out, off,
                    residual)


@njit(parallel=True, cache=True, fastmath=FAST)
def _swiglu_rows(mg, mu, x, isa, out, up):
    """out[r] = silu(gate_r . x) * (up_r . x), gate and up rows in the same block; up float32 [>= rows] scratch."""
    xqg, xdg, xsg = _quantized(mg, x, isa)
    xqu, xdu, xsu = _quantized(mu, x, isa) if _needs_own(mu, mg, True) else (xqg, xdg, xsg)
    rows = mg[M_ROWS]
    n_blocks = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    sds = np.empty((n_blocks, (x.size + 31) // 32), np.float32)  # [blocks, n_groups] (groups >= 32 columns)
    for blk in prange(n_blocks):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        _block_dots(mg, r0, r1, isa, xqg, xdg, xsg, x, sds[blk], out, 0, False)
        _block_dots(mu, r0, r1, isa, xqu, xdu, xsu, x, sds[blk], up, 0, False)
        silu_mul_into(out[r0:r1], up[r0:r1], out[r0:r1])


@njit(parallel=True, cache=True, fastmath=FAST)
def _attention_heads(q, k_cache, v_cache, n_keys, scale, n_heads, head_dim, out):
    """Decode attention for one block: q, out float32 [n_heads * head_dim]; caches [n_kv, ctx, head_dim]."""
    group = n_heads // k_cache.shape[0]
    for h in prange(n_heads):
        scores = np.empty(n_keys, np.float32)
        kvh = h // group
        attend(q[h * head_dim:(h + 1) * head_dim], k_cache[kvh], v_cache[kvh], n_keys, scale, np.float32(0.0),
               n_keys - 1, out[h * head_dim:(h + 1) * head_dim], scores)


@njit(cache=True, fastmath=FAST)
def decode_llama(meta, isa, norms, eps, x, h, qkv, att, hid, k_cache, v_cache, pos, n_heads,
                 head_dim, cos, sin, interleaved, logits, serial_attention=SERIAL_ATTENTION):
    """One token at position pos through every block and the head.

    x float32 [dim]: the token's embedding in, the final residual stream out. norms float32
    [2 * n_layers + 1, dim]: attn_norm, ffn_norm of each block, then output_norm. Scratch: h [dim],
    qkv [(n_heads + 2 n_kv) * head_dim], att [n_heads * head_dim], hid [>= 2 * hidden] (SwiGLU | up). Caches float32
    [n_layers, n_kv, ctx, head_dim] (position pos is written here). logits float32 [vocab] out.
    Attention runs serially up to `serial_attention` multiply-adds per block, else parallel over heads.
    """
    n_layers = k_cache.shape[0]
    n_kv = k_cache.shape[1]
    q_dim, kv_dim = n_heads * head_dim, n_kv * head_dim
    scale = np.float32(1.0) / np.sqrt(np.float32(head_dim))
    q, k, v = qkv[:q_dim], qkv[q_dim:q_dim + kv_dim], qkv[q_dim + kv_dim:q_dim + 2 * kv_dim]
    scores = np.empty(pos + 1, np.float32)  # [keys] scratch of the serial attention
    for i in range(n_layers):
        s = i * 7
        _rmsnorm(x, norms[2 * i], eps, h)
        _linear_rows(meta, s, 3, h, isa, qkv, False)
        _rope(q, n_heads, head_dim, pos, cos, sin, interleaved)
        _rope(k, n_kv, head_dim, pos, cos, sin, interleaved)
        for kvh in range(n_kv):
            k_cache[i, kvh, pos, :] = k[kvh * head_dim:(kvh + 1) * head_dim]
            v_cache[i, kvh, pos, :] = v[kvh * head_dim:(kvh + 1) * head_dim]
        if n_heads * (pos + 1) * head_dim <= serial_attention:  # short context: not worth a parallel region
            for hh in range(n_heads):
                kvh = hh // (n_heads // n_kv)
                attend(q[hh * head_dim:(hh + 1) * head_dim], k_cache[i, kvh], v_cache[i, kvh], pos + 1, scale,
                       np.float32(0.0), pos, att[hh * head_dim:(hh + 1) * head_dim], scores)
        else:
            _attention_heads(q, k_cache[i], v_cache[i], pos + 1, scale, n_heads, head_dim, att)
        _linear_rows(meta, s + 3, 1, att, isa, x, True)
        _rmsnorm(x, norms[2 * i + 1], eps, h)
        hidden = meta[s + 5, M_ROWS]
        _swiglu_rows(meta[s + 4], meta[s + 5], h, isa, hid[:hidden], hid[hidden:2 * hidden])
        _linear_rows(meta, s + 6, 1, hid[:hidden], isa, x, True)
    _rmsnorm(x, norms[2 * n_layers], eps, h)
    _linear_rows(meta, 7 * n_layers, 1, h, isa, logits, False)

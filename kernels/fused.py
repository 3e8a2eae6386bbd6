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
def _row_dot(m, r, isa, qw, sc, zr, fw, hw, xq, xd, xs, x, sd):
    """Row r of the weight described by meta row m (kind, rows, cols, gs, ...) dotted with x.

    qw/sc/zr: codes, f16 scales, zeros (q4/q8); fw: f32 data; hw: f16/bf16 data; xq/xd/xs: x as
    `_quantized` prepared it for m (q kinds); sd float32 [n_groups] scratch. The q4/q8 branches are
    simd.matvec_dense_q's row body, so a fused row equals linear's.
    """
    kind, cols, gs = m[M_KIND], m[M_COLS], m[M_GS]
    if kind <= KIND_Q8:
        is_q4 = kind == KIND_Q4
        n_groups = (cols + gs - 1) // gs
        g0 = r * n_groups
        has_z = m[M_NZEROS] > 0
        row_len = (cols + 1) // 2 if is_q4 else cols
        if _q4x(m, isa):
            return simd.q4x_512(qw, r * row_len, cols, gs, xq, sc, g0, xd, xs, zr, g0 if has_z else 0,
                                np.int64(1 if has_z else 0))
        zconst = np.float32(8.0) if is_q4 else (np.float32(128.0) if isa == simd.AVX512 else np.float32(0.0))
        zrow = zr[g0:g0 + n_groups] if has_z else zr[:0]
        corr = simd._row_factors(sc[g0:g0 + n_groups], zrow, has_z, zconst, xd, xs, sd)
        return _q_dot(is_q4, isa, qw, r * row_len, cols, gs, xq, sd) - corr
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
    return acc


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
    out[offset_j + r] = row r of weight j . x, or += with residual=True (o and down add into x)."""
    xq0, xd0, xs0 = _quantized(meta[s0], x, isa)
    xq1, xd1, xs1 = _quantized(meta[s0 + min(1, n_w - 1)], x, isa)
    xq2, xd2, xs2 = _quantized(meta[s0 + min(2, n_w - 1)], x, isa)
    r0, r1 = meta[s0, M_ROWS], meta[s0 + min(1, n_w - 1), M_ROWS] if n_w > 1 else 0
    r2 = meta[s0 + 2, M_ROWS] if n_w > 2 else 0
    nb0, nb1 = (r0 + ROW_BLOCK - 1) // ROW_BLOCK, (r1 + ROW_BLOCK - 1) // ROW_BLOCK
    nb2 = (r2 + ROW_BLOCK - 1) // ROW_BLOCK
    for blk in prange(nb0 + nb1 + nb2):
        if blk < nb0:
            j, b, off, xq, xd, xs = 0, blk, 0, xq0, xd0, xs0
        elif blk < nb0 + nb1:
            j, b, off, xq, xd, xs = 1, blk - nb0, r0, xq1, xd1, xs1
        else:
            j, b, off, xq, xd, xs = 2, blk - nb0 - nb1, r0 + r1, xq2, xd2, xs2
        m = meta[s0 + j]
        qw, sc, zr, fw, hw = _arrays(m)
        sd = np.empty((m[M_COLS] + m[M_GS] - 1) // m[M_GS], np.float32)  # [n_groups] row scale products
        for r in range(b * ROW_BLOCK, min(m[M_ROWS], (b + 1) * ROW_BLOCK)):
            d = _row_dot(m, r, isa, qw, sc, zr, fw, hw, xq, xd, xs, x, sd)
            if residual:
                out[off + r] += d
            else:
                out[off + r] = d


@njit(parallel=True, cache=True, fastmath=FAST)
def _swiglu_rows(mg, mu, x, isa, out):
    """out[r] = silu(gate_r . x) * (up_r . x): gate and up rows in the same block, no [hidden] gate/up buffers."""
    xqg, xdg, xsg = _quantized(mg, x, isa)
    xqu, xdu, xsu = _quantized(mu, x, isa)
    qg, sg, zg, fg, hg = _arrays(mg)
    qu, su, zu, fu, hu = _arrays(mu)
    rows = mg[M_ROWS]
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        sd = np.empty((max(mg[M_COLS], mu[M_COLS]) + 31) // 32, np.float32)  # [n_groups] (groups >= 32 columns)
        up = np.empty(ROW_BLOCK, np.float32)  # [ROW_BLOCK] up projections of the block's rows
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        for r in range(r0, r1):
            out[r] = _row_dot(mg, r, isa, qg, sg, zg, fg, hg, xqg, xdg, xsg, x, sd)
            up[r - r0] = _row_dot(mu, r, isa, qu, su, zu, fu, hu, xqu, xdu, xsu, x, sd)
        silu_mul_into(out[r0:r1], up[:r1 - r0], out[r0:r1])


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
    qkv [(n_heads + 2 n_kv) * head_dim], att [n_heads * head_dim], hid [>= hidden]. Caches float32
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
        _swiglu_rows(meta[s + 4], meta[s + 5], h, isa, hid[:hidden])
        _linear_rows(meta, s + 6, 1, hid[:hidden], isa, x, True)
    _rmsnorm(x, norms[2 * n_layers], eps, h)
    _linear_rows(meta, 7 * n_layers, 1, h, isa, logits, False)

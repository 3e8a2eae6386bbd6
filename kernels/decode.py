"""A fused decode step: one token through every Llama block and the head in a single numba call.

Why: on a small model (SmolLM2-135M: 30 blocks x ~13 ops) the per-op path spends more time in Python
dispatch and in starting ~400 parallel regions per token than in the matvec kernels. Here a token costs
4 parallel regions per block (q|k|v rows, o rows, gate|up rows with SwiGLU, down rows; a 5th over heads
for attention over long contexts) and no Python. The row dot products are the matvec kernels' own (matvec/x86.py: int8 activations x q4/q8
codes through VNNI/AVX2 IR, one activation scale per weight group), so results equal `linear`'s.

Weights arrive as a `DecodePlan` built once by `plan_llama` from PreparedWeights (zero-copy views).
Supported: dense f32/f16/bf16, q8, q4 (with or without zeros), sparse-q4, sparse-q8, sparse-f16 and tile4-q4 on
the avx512 and avx2 paths (row bodies in decode_rows.py); the portable path raises KernelError, and the
caller uses `linear` per op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import prange

from zoo.errors import KernelError

from .cpu import active_path
from .decode_rows import M_ROWS, META, block_dots, has_sparse_q, needs_own, quantized, stage_bytes
from .jit import FAST, kernel
from .layout import Path, PreparedWeight
from .ops import attend, silu_mul_into

SLOTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")  # per block, in order
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

    meta: np.ndarray  # int64 [n_layers * 7 + 1, META] (decode_rows.M_*): slots in SLOTS order per block, then the head
    isa: int  # Path.AVX512 or Path.AVX2, as the kernels' isa argument
    n_layers: int
    hidden_max: int
    keep: list = field(repr=False, default_factory=list)


def _addr(a: np.ndarray) -> tuple[int, int]:
    return a.__array_interface__["data"][0], a.size


def plan_llama(blocks: list[dict], head: PreparedWeight) -> DecodePlan:
    """blocks[i] maps SLOTS names to PreparedWeights; KernelError if an encoding or the path is unsupported."""
    path = active_path()
    if path not in (Path.AVX512, Path.AVX2):
        raise KernelError(f"fused decode needs the avx512 or avx2 path, not {path.label!r}")
    rows, keep = [], []
    for w in [b[s] for b in blocks for s in SLOTS] + [head]:
        p = w.parts
        keep.append(p)
        none = (0, 0)
        if w.encoding in ("q4", "q8"):
            zeros = _addr(p["zeros"]) if "zeros" in p else none
            rows.append((w.kind, w.rows, w.cols, w.group_size, *_addr(p["qweight"]), *_addr(p["scales"]), *zeros,
                         *none, *none))
        elif w.encoding == "dense":
            rows.append((w.kind, w.rows, w.cols, 64, *_addr(p[""]), *none, *none, *none, *none))
        elif w.encoding in ("sparse-q4", "sparse-q8", "sparse-f16"):
            scales = _addr(p["scales"]) if "scales" in p else none
            rows.append((w.kind, w.rows, w.cols, w.group_size, *_addr(p["values"]), *scales, *none,
                         *_addr(p["bitmask"]), *_addr(p["row_offsets"])))
        elif w.encoding == "tile4-q4":
            rows.append((w.kind, w.rows, w.cols, 128, *_addr(p["qweight"]), *_addr(p["scales"]), *none,
                         *_addr(p["tilemask"]), *none))
        else:
            raise KernelError(f"fused decode does not support the {w.encoding} encoding")
    meta = np.array(rows, dtype=np.int64).reshape(-1, META)
    hidden = max(b["ffn_up"].rows for b in blocks) if blocks else 1
    return DecodePlan(meta, int(path), len(blocks), hidden, keep)


@kernel(fastmath=FAST)
def _rmsnorm(x, w, eps, out):
    ss = np.float32(0.0)
    for i in range(x.size):
        ss += x[i] * x[i]
    inv = np.float32(1.0) / np.sqrt(ss / np.float32(x.size) + np.float32(eps))
    for i in range(x.size):
        out[i] = x[i] * inv * w[i]


@kernel()
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


@kernel()
def _stage(m0, m1, m2, n_blocks, cols):
    """uint8 [n_blocks, stage_bytes(cols)] scratch for staging sparse codes ([n_blocks, 1] when no weight is sparse)."""
    sparse = has_sparse_q(m0) or has_sparse_q(m1) or has_sparse_q(m2)
    return np.empty((n_blocks, stage_bytes(cols) if sparse else 1), np.uint8)


@kernel(parallel=True, fastmath=FAST)
def _linear_rows(meta, s0, n_w, x, isa, out, residual):
    """Weights meta[s0 .. s0+n_w) (n_w <= 3) stacked by rows, all reading x float32 [cols]:
    out[offset_j + r] = row r of weight j . x, or += with residual=True (o and down add into x).

    Scratch is allocated before the prange: an allocation inside it costs each block ~0.1 us,
    measurable against the ~0.5 us a 576-column q4 row takes (views of the weights cost nothing)."""
    m0, m1, m2 = meta[s0], meta[s0 + min(1, n_w - 1)], meta[s0 + min(2, n_w - 1)]
    xq0, xd0, xs0 = quantized(m0, x, isa)
    xq1, xd1, xs1 = quantized(m1, x, isa) if needs_own(m1, m0, n_w > 1, isa) else (xq0, xd0, xs0)
    xq2, xd2, xs2 = quantized(m2, x, isa) if needs_own(m2, m1, n_w > 2, isa) else (xq1, xd1, xs1)
    r0, r1 = m0[M_ROWS], m1[M_ROWS] if n_w > 1 else 0
    r2 = m2[M_ROWS] if n_w > 2 else 0
    nb0, nb1 = (r0 + ROW_BLOCK - 1) // ROW_BLOCK, (r1 + ROW_BLOCK - 1) // ROW_BLOCK
    nb2 = (r2 + ROW_BLOCK - 1) // ROW_BLOCK
    sds = np.empty((nb0 + nb1 + nb2, (x.size + 31) // 32), np.float32)  # [blocks, n_groups] scale products
    stage = _stage(m0, m1, m2, nb0 + nb1 + nb2, x.size)
    for blk in prange(nb0 + nb1 + nb2):
        if blk < nb0:
            b, off, m, xq, xd, xs = blk, 0, m0, xq0, xd0, xs0
        elif blk < nb0 + nb1:
            b, off, m, xq, xd, xs = blk - nb0, r0, m1, xq1, xd1, xs1
        else:
            b, off, m, xq, xd, xs = blk - nb0 - nb1, r0 + r1, m2, xq2, xd2, xs2
        block_dots(m, b * ROW_BLOCK, min(m[M_ROWS], (b + 1) * ROW_BLOCK), isa, xq, xd, xs, x, sds[blk], stage[blk],
                   out, off, residual)


@kernel(parallel=True, fastmath=FAST)
def _swiglu_rows(mg, mu, x, isa, out, up):
    """out[r] = silu(gate_r . x) * (up_r . x), gate and up rows in the same block; up float32 [>= rows] scratch."""
    xqg, xdg, xsg = quantized(mg, x, isa)
    xqu, xdu, xsu = quantized(mu, x, isa) if needs_own(mu, mg, True, isa) else (xqg, xdg, xsg)
    rows = mg[M_ROWS]
    n_blocks = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    sds = np.empty((n_blocks, (x.size + 31) // 32), np.float32)  # [blocks, n_groups] (groups >= 32 columns)
    stage = _stage(mg, mu, mu, n_blocks, x.size)
    for blk in prange(n_blocks):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        block_dots(mg, r0, r1, isa, xqg, xdg, xsg, x, sds[blk], stage[blk], out, 0, False)
        block_dots(mu, r0, r1, isa, xqu, xdu, xsu, x, sds[blk], stage[blk], up, 0, False)
        silu_mul_into(out[r0:r1], up[r0:r1], out[r0:r1])


@kernel(parallel=True, fastmath=FAST)
def _attention_heads(q, k_cache, v_cache, n_keys, scale, n_heads, head_dim, out):
    """Decode attention for one block: q, out float32 [n_heads * head_dim]; caches [n_kv, ctx, head_dim]."""
    group = n_heads // k_cache.shape[0]
    for h in prange(n_heads):
        scores = np.empty(n_keys, np.float32)
        kvh = h // group
        attend(q[h * head_dim:(h + 1) * head_dim], k_cache[kvh], v_cache[kvh], n_keys, scale, np.float32(0.0),
               n_keys - 1, out[h * head_dim:(h + 1) * head_dim], scores)


@kernel(parallel=True, fastmath=FAST)
def batch_attention(q, k, v, positions, slots, layer, k_all, v_all, cos, sin, interleaved, out):
    """A batched decode step's attention in one Llama block: sequence b's token sits at positions[b] and its KV
    cache is k_all[slots[b]], v_all[slots[b]]. RoPE on q[b] and k[b], k[b] and v[b] stored at that position, then
    each head attends over positions 0..positions[b] into out[b] (one parallel region over every sequence's heads).

    q, out float32 [B, n_heads * head_dim]; k, v [B, n_kv * head_dim]; k_all, v_all float32 [n_slots, n_layers,
    n_kv, ctx, head_dim]; positions, slots int64 [B]. The same arithmetic as decode_llama's per-token attention.
    """
    B = q.shape[0]
    n_kv, head_dim = k_all.shape[2], k_all.shape[4]
    n_heads = q.shape[1] // head_dim
    group = n_heads // n_kv
    scale = np.float32(1.0) / np.sqrt(np.float32(head_dim))
    for b in range(B):
        pos, s = positions[b], slots[b]
        _rope(q[b], n_heads, head_dim, pos, cos, sin, interleaved)
        _rope(k[b], n_kv, head_dim, pos, cos, sin, interleaved)
        for kvh in range(n_kv):
            k_all[s, layer, kvh, pos, :] = k[b, kvh * head_dim:(kvh + 1) * head_dim]
            v_all[s, layer, kvh, pos, :] = v[b, kvh * head_dim:(kvh + 1) * head_dim]
    for i in prange(B * n_heads):
        b, h = i // n_heads, i % n_heads
        pos, s, kvh = positions[b], slots[b], h // group
        scores = np.empty(pos + 1, np.float32)
        attend(q[b, h * head_dim:(h + 1) * head_dim], k_all[s, layer, kvh], v_all[s, layer, kvh], pos + 1, scale,
               np.float32(0.0), pos, out[b, h * head_dim:(h + 1) * head_dim], scores)


@kernel(fastmath=FAST)
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

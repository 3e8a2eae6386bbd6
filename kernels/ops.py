"""Small ops the runtime needs: norms, rope, activations, softmax, and one attention; jitted kernels
and the public wrappers that check dtype, shape and contiguity (KernelError).

Layouts: a "row" op works on the last axis of a C-contiguous [n] or [tokens, n] array (1-D inputs are
viewed as one row). Norm weights are float32 (the runtime converts F16/BF16 norm weights once at load:
they are tiny). Every wrapper takes an optional preallocated `out` (returned).

numba lowers np.exp to a libm call per element (no SVML here), which keeps LLVM from vectorizing the
SiLU and attention loops: measured 19x slower than `fast_exp` over 100k floats. `fast_exp` is the
classic range reduction exp(x) = 2^n exp(r), |r| <= ln2/2, with a degree-7 polynomial (relative error
~1.2e-7, as np.exp to float32 rounding); 2^n is built from the exponent bits. Attention (causal, GQA,
optional ALiBi; caches [n_kv, ctx, head_dim]) separates the score pass and the value pass so each
vectorizes (2.2x faster per head than one fused loop); the decode step inlines the same `attend`.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from zoo.errors import KernelError

from .jit import FAST, kernel

@kernel(parallel=True, fastmath=FAST)
def rmsnorm_rows(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight; x, out float32 [tokens, n]."""
    tokens, n = x.shape
    for t in prange(tokens):
        ss = np.float32(0.0)
        for i in range(n):
            ss += x[t, i] * x[t, i]
        inv = np.float32(1.0) / np.sqrt(ss / np.float32(n) + np.float32(eps))
        for i in range(n):
            out[t, i] = x[t, i] * inv * weight[i]


@kernel(parallel=True, fastmath=FAST)
def layernorm_rows(x, weight, eps, out):
    """out[t] = (x[t] - mean) / sqrt(var + eps) * weight (no bias, as MPT); float32 [tokens, n]."""
    tokens, n = x.shape
    for t in prange(tokens):
        mean = np.float32(0.0)
        for i in range(n):
            mean += x[t, i]
        mean /= np.float32(n)
        var = np.float32(0.0)
        for i in range(n):
            d = x[t, i] - mean
            var += d * d
        inv = np.float32(1.0) / np.sqrt(var / np.float32(n) + np.float32(eps))
        for i in range(n):
            out[t, i] = (x[t, i] - mean) * inv * weight[i]


@kernel(fastmath=FAST)
def softmax_rows(x, out):
    """Numerically stable softmax over the last axis; x, out float32 [rows, n] (may alias)."""
    rows, n = x.shape
    for r in range(rows):
        m = x[r, 0]
        for i in range(1, n):
            m = max(m, x[r, i])
        total = np.float32(0.0)
        for i in range(n):
            e = np.exp(x[r, i] - m)
            out[r, i] = e
            total += e
        inv = np.float32(1.0) / total
        for i in range(n):
            out[r, i] *= inv


@kernel(parallel=True)
def gelu_flat(x, out):
    """Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as MPT's nn.GELU(approximate='none')."""
    for i in prange(x.size):
        v = np.float64(x[i])
        out[i] = np.float32(0.5 * v * (1.0 + math.erf(v * 0.7071067811865476)))


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> np.ndarray:
    """Inverse frequencies float64 [head_dim // 2], with Llama-3 or linear scaling (SPEC.md 5)."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if not scaling:
        return inv
    kind = scaling.get("type")
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":  # as transformers' _compute_llama3_parameters
        factor, low, high = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old = float(scaling["original_max_seq_len"])
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        mid = (wavelen <= old / low) & (wavelen >= old / high)
        return np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    raise ValueError(f"unknown rope scaling type {kind!r}")


def rope_tables(head_dim: int, max_positions: int, theta: float, scaling: dict | None = None):
    """Precomputed cos, sin float32 [max_positions, head_dim // 2] (computed in float64)."""
    angles = np.outer(np.arange(max_positions, dtype=np.float64), rope_frequencies(head_dim, theta, scaling))
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@kernel(parallel=True)
def rope_inplace(x, pos0, cos, sin, interleaved):
    """Rotate x float32 [tokens, n_heads, head_dim] in place; token t is at position pos0 + t.

    half layout (Hugging Face): pairs (i, i + head_dim/2); interleaved (GGUF/Meta): pairs (2i, 2i+1).
    """
    tokens, n_heads, head_dim = x.shape
    half = head_dim // 2
    for t in prange(tokens):
        p = pos0 + t
        for h in range(n_heads):
            for i in range(half):
                c, s = cos[p, i], sin[p, i]
                a = 2 * i if interleaved else i
                b = 2 * i + 1 if interleaved else i + half
                x0, x1 = x[t, h, a], x[t, h, b]
                x[t, h, a] = x0 * c - x1 * s
                x[t, h, b] = x0 * s + x1 * c


@intrinsic
def _int_bits_as_f32(typingctx, bits):
    """The float32 whose IEEE bits are the int32 `bits` (a bitcast; LLVM vectorizes it)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen


@kernel(fastmath=FAST, inline=True)
def fast_exp(x):
    """exp(x) for float32 x, clamped to [-87, 88] (so exp(-inf) gives 1.6e-38, not 0)."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))  # round(x / ln 2)
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)  # x - n ln2 in two parts
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _int_bits_as_f32(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))


@kernel(fastmath=FAST)
def exp_into(x, out):
    """out = fast_exp(x) elementwise; float32 [n] (tests compare it with np.exp)."""
    for i in range(x.size):
        out[i] = fast_exp(x[i])


@kernel(fastmath=FAST, inline=True)
def silu_mul_into(gate, up, out):
    """out = silu(gate) * up over float32 [n] slices (out may be gate)."""
    for i in range(gate.size):
        g = gate[i]
        out[i] = g / (np.float32(1.0) + fast_exp(-g)) * up[i]


@kernel(parallel=True, fastmath=FAST)
def _silu_mul_flat(gate, up, out):
    n = gate.size
    step = 4096
    for b in prange((n + step - 1) // step):
        lo, hi = b * step, min(n, (b + 1) * step)
        silu_mul_into(gate[lo:hi], up[lo:hi], out[lo:hi])


@kernel(fastmath=FAST, inline=True)
def attend(q, kc, vc, n_keys, scale, slope, qpos, out, scores):
    """One query head over keys 0..n_keys-1: q, out float32 [head_dim]; kc, vc [>= n_keys, head_dim];
    scores float32 [>= n_keys] scratch. slope != 0 adds ALiBi's slope * (j - qpos)."""
    head_dim = q.size
    sc = scores[:n_keys]
    for j in range(n_keys):  # one dot per key: independent, so they overlap
        kr = kc[j]
        s = np.float32(0.0)
        for d in range(head_dim):
            s += q[d] * kr[d]
        sc[j] = s * scale
    if slope != 0.0:
        for j in range(n_keys):
            sc[j] += slope * np.float32(j - qpos)
    best = np.float32(-np.inf)
    for j in range(n_keys):
        best = max(best, sc[j])
    total = np.float32(0.0)
    for j in range(n_keys):  # vectorized exp
        e = fast_exp(sc[j] - best)
        sc[j] = e
        total += e
    inv = np.float32(1.0) / total
    for d in range(head_dim):
        out[d] = 0.0
    j = 0
    while j + 4 <= n_keys:  # four keys per pass over out: a quarter of the out loads and stores
        p0, p1, p2, p3 = sc[j] * inv, sc[j + 1] * inv, sc[j + 2] * inv, sc[j + 3] * inv
        v0, v1, v2, v3 = vc[j], vc[j + 1], vc[j + 2], vc[j + 3]
        for d in range(head_dim):
            out[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d]
        j += 4
    while j < n_keys:
        p = sc[j] * inv
        vr = vc[j]
        for d in range(head_dim):
            out[d] += p * vr[d]
        j += 1


@kernel(parallel=True, fastmath=FAST)
def attention_rows(q, k_cache, v_cache, n_tokens, scale, slopes, out):
    """q, out float32 [T, n_heads, head_dim] at positions n_tokens-T..; caches [n_kv, ctx, head_dim];
    slopes float32 [n_heads] (zeros: no ALiBi)."""
    T, n_heads, _ = q.shape
    group = n_heads // k_cache.shape[0]
    pos0 = n_tokens - T
    for job in prange(T * n_heads):
        t, h = job // n_heads, job % n_heads
        scores = np.empty(pos0 + t + 1, np.float32)
        kvh = h // group
        attend(q[t, h], k_cache[kvh], v_cache[kvh], pos0 + t + 1, scale, slopes[h], pos0 + t, out[t, h], scores)


def alibi_slopes(n_heads: int, alibi_bias_max: float = 8.0) -> np.ndarray:
    """MPT's ALiBi slopes float32 [n_heads] (as MPT's gen_slopes, including non-power-of-2 heads)."""
    padded = 2 ** math.ceil(math.log2(n_heads))
    m = np.arange(1, padded + 1, dtype=np.float64) * (alibi_bias_max / padded)
    slopes = 1.0 / np.power(2.0, m)
    if padded != n_heads:
        slopes = np.concatenate([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes.astype(np.float32)


def _f32(name: str, a: object, ndims: tuple[int, ...] = (1, 2)) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise KernelError(f"{name} must be a float32 array, got {getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim not in ndims:
        raise KernelError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise KernelError(f"{name} is not C-contiguous")
    return a


def _out(out: object, like: np.ndarray) -> np.ndarray:
    if out is None:
        return np.empty_like(like)
    out = _f32("out", out, (like.ndim,))
    if out.shape != like.shape:
        raise KernelError(f"out has shape {out.shape}, expected {like.shape}")
    if not out.flags.writeable:
        raise KernelError("out is not writeable")
    return out


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(1, -1) if a.ndim == 1 else a


def _norm(fn, x, weight, eps, out):
    x = _f32("x", x)
    weight = _f32("weight", weight, (1,))
    if weight.shape[0] != x.shape[-1]:
        raise KernelError(f"weight has {weight.shape[0]} entries, x rows have {x.shape[-1]}")
    out = _out(out, x)
    fn(_rows(x), weight, float(eps), _rows(out))
    return out


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """RMSNorm over the last axis of x [n] or [tokens, n]; weight float32 [n]. out may be x."""
    return _norm(rmsnorm_rows, x, weight, eps, out)


def layernorm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm without bias (MPT) over the last axis; weight float32 [n]. out may be x."""
    return _norm(layernorm_rows, x, weight, eps, out)


def softmax(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis of x [n] or [rows, n]. out may be x."""
    x = _f32("x", x)
    out = _out(out, x)
    softmax_rows(_rows(x), _rows(out))
    return out


def silu_mul(gate: np.ndarray, up: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """silu(gate) * up (SwiGLU); gate, up, out float32 of one shape [n] or [tokens, n]. out may be gate, but
    LLVM vectorizes the loop only when out overlaps neither input (measured 4x slower in place)."""
    gate, up = _f32("gate", gate), _f32("up", up)
    if gate.shape != up.shape:
        raise KernelError(f"gate {gate.shape} and up {up.shape} differ in shape")
    out = _out(out, gate)
    _silu_mul_flat(gate.reshape(-1), up.reshape(-1), out.reshape(-1))
    return out


def gelu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Exact (erf) GELU, as MPT's nn.GELU(approximate='none'). out may be x."""
    x = _f32("x", x)
    out = _out(out, x)
    gelu_flat(x.reshape(-1), out.reshape(-1))
    return out


def rope(x: np.ndarray, pos: int, cos: np.ndarray, sin: np.ndarray, layout: str = "half") -> np.ndarray:
    """Rotate x in place: [n_heads, head_dim] (one token at `pos`) or [tokens, n_heads, head_dim]
    (token t at pos + t). cos, sin float32 [max_positions, head_dim // 2] from rope_tables."""
    x = _f32("x", x, (2, 3))
    cos, sin = _f32("cos", cos, (2,)), _f32("sin", sin, (2,))
    x3 = x.reshape(1, *x.shape) if x.ndim == 2 else x
    if layout not in ("half", "interleaved"):
        raise KernelError(f"rope layout must be 'half' or 'interleaved', got {layout!r}")
    head_dim = x3.shape[2]
    if head_dim % 2 or cos.shape != sin.shape or cos.shape[1] != head_dim // 2:
        raise KernelError(f"rope tables {cos.shape} do not fit head_dim {head_dim}")
    if pos < 0 or pos + x3.shape[0] > cos.shape[0]:
        raise KernelError(f"rope positions {pos}..{pos + x3.shape[0] - 1} exceed the table ({cos.shape[0]})")
    if not x.flags.writeable:
        raise KernelError("rope rotates x in place; x is not writeable")
    rope_inplace(x3, int(pos), cos, sin, layout == "interleaved")
    return x


def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_tokens: int,
              out: np.ndarray | None = None, scale: float | None = None,
              alibi_slopes: np.ndarray | None = None) -> np.ndarray:
    """Causal GQA attention. q [n_heads, head_dim] (decode) or [T, n_heads, head_dim] (prefill),
    k_cache, v_cache [n_kv_heads, max_seq, head_dim] holding n_tokens positions (the last T are the
    queries' own). scale defaults to 1/sqrt(head_dim); alibi_slopes float32 [n_heads] adds MPT's bias."""
    q = _f32("q", q, (2, 3))
    k_cache, v_cache = _f32("k_cache", k_cache, (3,)), _f32("v_cache", v_cache, (3,))
    q3 = q.reshape(1, *q.shape) if q.ndim == 2 else q
    T, n_heads, head_dim = q3.shape
    n_kv, max_seq, kd = k_cache.shape
    if v_cache.shape != k_cache.shape or kd != head_dim:
        raise KernelError(f"caches {k_cache.shape}, {v_cache.shape} do not fit q {q.shape}")
    if n_kv == 0 or n_heads % n_kv:
        raise KernelError(f"{n_heads} query heads are not a multiple of {n_kv} kv heads")
    if not T <= n_tokens <= max_seq:
        raise KernelError(f"n_tokens {n_tokens} must be in [{T}, {max_seq}] (queries {T}, cache {max_seq})")
    slopes = np.zeros(n_heads, np.float32) if alibi_slopes is None else _f32("alibi_slopes", alibi_slopes, (1,))
    if slopes.shape[0] != n_heads:
        raise KernelError(f"alibi_slopes has {slopes.shape[0]} entries for {n_heads} heads")
    out = _out(out, q)
    attention_rows(q3, k_cache, v_cache, int(n_tokens), np.float32(scale or head_dim ** -0.5), slopes,
                   out.reshape(q3.shape))
    return out

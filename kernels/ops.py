"""Small elementwise and row ops the runtime needs, on plain float32 arrays with preallocated outputs.

Layouts: a "row" op works on the last axis of a C-contiguous [n] or [tokens, n] array. Norm
weights are float32 (the runtime converts F16/BF16 norm weights once at load: they are tiny).
The jitted functions take 2-D arrays; wrappers in __init__ reshape 1-D inputs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

FAST = {"reassoc", "contract"}


@njit(parallel=True, cache=True, fastmath=FAST)
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


@njit(parallel=True, cache=True, fastmath=FAST)
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


@njit(cache=True, fastmath=FAST)
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


@njit(parallel=True, cache=True, fastmath=FAST)
def silu_mul_flat(gate, up, out):
    """out = silu(gate) * up = gate * sigmoid(gate) * up; all float32 [n] (flat views)."""
    for i in prange(gate.size):
        g = gate[i]
        out[i] = g / (np.float32(1.0) + np.exp(-g)) * up[i]


@njit(parallel=True, cache=True)
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


@njit(parallel=True, cache=True)
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

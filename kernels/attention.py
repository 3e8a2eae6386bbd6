"""Causal multi-head attention over a preallocated KV cache, grouped-query heads, optional ALiBi.

Cache layout, head-major so one head's keys are contiguous: k_cache, v_cache float32
[n_kv_heads, max_seq, head_dim]. The runtime writes the new tokens' keys and values at positions
n_tokens - T .. n_tokens - 1 before calling. Queries q float32 [T, n_heads, head_dim]; query t sits
at position n_tokens - T + t and attends keys 0 .. that position. Query head h reads kv head
h // (n_heads // n_kv_heads). Works for decode (T = 1) and prefill (a block of T).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

FAST = {"reassoc", "contract"}


@njit(parallel=True, cache=True, fastmath=FAST)
def attention_kernel(q, k_cache, v_cache, n_tokens, scale, slopes, use_alibi, out):
    """out float32 [T, n_heads, head_dim]; slopes float32 [n_heads] (read when use_alibi)."""
    T, n_heads, head_dim = q.shape
    n_kv = k_cache.shape[0]
    group = n_heads // n_kv
    pos0 = n_tokens - T
    for job in prange(T * n_heads):
        t = job // n_heads
        h = job % n_heads
        kvh = h // group
        n_keys = pos0 + t + 1
        scores = np.empty(n_keys, np.float32)
        best = -np.inf
        for j in range(n_keys):
            s = np.float32(0.0)
            for d in range(head_dim):
                s += q[t, h, d] * k_cache[kvh, j, d]
            s *= scale
            if use_alibi:
                s += slopes[h] * np.float32(j - (pos0 + t))
            scores[j] = s
            best = max(best, s)
        total = np.float32(0.0)
        for j in range(n_keys):
            e = np.exp(scores[j] - best)
            scores[j] = e
            total += e
        inv = np.float32(1.0) / total
        for d in range(head_dim):
            out[t, h, d] = 0.0
        for j in range(n_keys):
            p = scores[j] * inv
            for d in range(head_dim):
                out[t, h, d] += p * v_cache[kvh, j, d]


def alibi_slopes(n_heads: int, alibi_bias_max: float = 8.0) -> np.ndarray:
    """MPT's ALiBi slopes float32 [n_heads] (as MPT's gen_slopes, including non-power-of-2 heads)."""
    padded = 2 ** math.ceil(math.log2(n_heads))
    m = np.arange(1, padded + 1, dtype=np.float64) * (alibi_bias_max / padded)
    slopes = 1.0 / np.power(2.0, m)
    if padded != n_heads:
        slopes = np.concatenate([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes.astype(np.float32)

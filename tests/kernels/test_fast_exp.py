"""kernels/fused_attention.py: the vectorizable exp, SwiGLU and attention against numpy and zoo.kernels."""

from __future__ import annotations

import numpy as np
import pytest

import zoo.kernels as K
from zoo.errors import KernelError
from zoo.kernels import fused_attention as FA


def test_fast_exp_matches_numpy_to_float32_rounding():
    x = np.concatenate([np.linspace(-87, 88, 200_001, dtype=np.float32), np.float32([0.0, -0.0, 1e-30, -1e-30])])
    got, want = np.empty_like(x), np.exp(x.astype(np.float64))
    FA.exp_into(x, got)
    assert np.max(np.abs(got - want) / want) < 3e-7


def test_fast_exp_clamps_out_of_range():
    x = np.float32([-np.inf, -1000.0, 1000.0])
    got = np.empty_like(x)
    FA.exp_into(x, got)
    assert got[0] == got[1] and 0.0 < got[0] < 1e-37 and np.isfinite(got[2]) and got[2] > 1e38


def test_silu_mul_matches_numpy():
    rng = np.random.default_rng(0)
    gate, up = (rng.standard_normal((3, 5000)).astype(np.float32) * 8 for _ in range(2))
    want = gate.astype(np.float64) / (1 + np.exp(-gate.astype(np.float64))) * up
    got = FA.silu_mul(gate, up, np.empty_like(gate))
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    with pytest.raises(KernelError, match="shapes differ"):
        FA.silu_mul(gate, up[:2], gate)


@pytest.mark.parametrize("alibi", [False, True])
@pytest.mark.parametrize("T, n_tokens", [(1, 1), (1, 37), (5, 5), (6, 23)])
def test_attention_matches_kernels_attention(alibi, T, n_tokens):
    rng = np.random.default_rng(T * 100 + n_tokens)
    n_heads, n_kv, head_dim, ctx = 6, 2 if not alibi else 6, 16, 40
    q = rng.standard_normal((T, n_heads, head_dim)).astype(np.float32)
    kc, vc = (rng.standard_normal((n_kv, ctx, head_dim)).astype(np.float32) for _ in range(2))
    slopes = K.alibi_slopes(n_heads) if alibi else None
    want = K.attention(q, kc, vc, n_tokens, alibi_slopes=slopes)
    got = FA.attention(q, kc, vc, n_tokens, np.empty_like(q), alibi_slopes=slopes)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_attention_refuses_bad_shapes():
    q = np.zeros((2, 4, 8), np.float32)
    cache = np.zeros((3, 10, 8), np.float32)
    with pytest.raises(KernelError, match="do not fit"):
        FA.attention(q, cache, cache, 5, np.empty_like(q))
    cache = np.zeros((2, 10, 8), np.float32)
    with pytest.raises(KernelError, match="n_tokens"):
        FA.attention(q, cache, cache, 11, np.empty_like(q))

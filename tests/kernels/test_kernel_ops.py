"""Small ops and attention against float64 numpy references (and transformers where it defines the op)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import zoo.kernels as K
from zoo.errors import KernelError

rng = np.random.default_rng(5)


def _x(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(7,), (3, 576), (33, 130)])
def test_norms(shape):
    x, w = _x(*shape), _x(shape[-1])
    x64 = x.astype(np.float64)
    rms = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(K.rmsnorm(x, w, 1e-5), rms, rtol=1e-5, atol=1e-5)
    mu = x64.mean(-1, keepdims=True)
    ln = (x64 - mu) / np.sqrt(((x64 - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(K.layernorm(x, w, 1e-5), ln, rtol=1e-5, atol=1e-5)
    out = x.copy()  # in place
    K.rmsnorm(out, w, 1e-5, out)
    np.testing.assert_allclose(out, rms, rtol=1e-5, atol=1e-5)


def test_softmax_silu_gelu():
    x = _x(4, 50) * 30
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    np.testing.assert_allclose(K.softmax(x), e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
    g, u = _x(2, 77), _x(2, 77)
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(K.silu_mul(g, u), g64 / (1 + np.exp(-g64)) * u, rtol=1e-5, atol=1e-6)
    x = _x(1000) * 4
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    np.testing.assert_allclose(K.gelu(x), ref, rtol=1e-6, atol=1e-7)


def test_gelu_matches_torch_exact_gelu():
    torch = pytest.importorskip("torch")
    x = _x(500) * 5
    ref = torch.nn.GELU(approximate="none")(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(K.gelu(x), ref, rtol=1e-6, atol=1e-7)


def _rope_ref(x, pos, theta, layout):
    t, h, d = x.shape
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = np.outer(np.arange(pos, pos + t), inv)[:, None, :]  # [t, 1, d/2]
    c, s = np.cos(ang), np.sin(ang)
    x = x.astype(np.float64)
    a, b = (x[..., 0::2], x[..., 1::2]) if layout == "interleaved" else (x[..., : d // 2], x[..., d // 2:])
    ra, rb = a * c - b * s, a * s + b * c
    out = np.empty_like(x)
    if layout == "interleaved":
        out[..., 0::2], out[..., 1::2] = ra, rb
    else:
        out[..., : d // 2], out[..., d // 2:] = ra, rb
    return out


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_layouts(layout):
    cos, sin = K.rope_tables(64, 100, 100000.0)
    x = _x(5, 3, 64)
    ref = _rope_ref(x, 17, 100000.0, layout)
    np.testing.assert_allclose(K.rope(x.copy(), 17, cos, sin, layout), ref, rtol=1e-5, atol=1e-5)
    one = x[0].copy()  # decode: [n_heads, head_dim]
    np.testing.assert_allclose(K.rope(one, 17, cos, sin, layout), ref[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(KernelError):
        K.rope(x.copy(), 96, cos, sin, layout)


def test_rope_llama3_scaling_matches_transformers():
    pytest.importorskip("torch")
    rope_utils = pytest.importorskip("transformers.modeling_rope_utils")
    from transformers import LlamaConfig

    scaling = {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_seq_len": 8192}
    hf = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_theta=500000.0, max_position_embeddings=131072,
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    inv_hf, _ = rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    from zoo.kernels.ops import rope_frequencies

    ours = rope_frequencies(128, 500000.0, scaling)
    np.testing.assert_allclose(ours, inv_hf.double().numpy(), rtol=1e-6)


def test_alibi_slopes_match_transformers_mpt():
    torch = pytest.importorskip("torch")
    mpt = pytest.importorskip("transformers.models.mpt.modeling_mpt")
    for n_heads in (4, 6, 32):
        bias = mpt.build_mpt_alibi_tensor(n_heads, 5, alibi_bias_max=8)  # [n_heads, 1, 5] = slope * (j - 4)
        ref = (bias[:, 0, 0] / -4.0).to(torch.float64).numpy()
        np.testing.assert_allclose(K.alibi_slopes(n_heads, 8.0), ref, rtol=1e-6)


def _attention_ref(q, k, v, n_tokens, slopes=None):
    t_q, n_heads, d = q.shape
    group = n_heads // k.shape[0]
    out = np.zeros(q.shape)
    for t in range(t_q):
        p = n_tokens - t_q + t
        for h in range(n_heads):
            kk, vv = k[h // group, : p + 1].astype(np.float64), v[h // group, : p + 1].astype(np.float64)
            s = kk @ q[t, h] / math.sqrt(d)
            if slopes is not None:
                s = s + slopes[h] * (np.arange(p + 1) - p)
            e = np.exp(s - s.max())
            out[t, h] = (e / e.sum()) @ vv
    return out


@pytest.mark.parametrize("alibi", [False, True])
def test_attention_prefill_decode_gqa(alibi):
    n_heads, n_kv, d, max_seq = 6, 2, 16, 40
    k, v = _x(n_kv, max_seq, d), _x(n_kv, max_seq, d)
    slopes = K.alibi_slopes(n_heads) if alibi else None
    q = _x(9, n_heads, d)
    for n_tokens, t_q in ((9, 9), (30, 9), (12, 1)):
        got = K.attention(q[:t_q], k, v, n_tokens, alibi_slopes=slopes)
        np.testing.assert_allclose(got, _attention_ref(q[:t_q], k, v, n_tokens, slopes), rtol=1e-4, atol=1e-5)
    # decode layout [n_heads, head_dim] equals the last row of a prefill block
    block = K.attention(q[:4], k, v, 20, alibi_slopes=slopes)
    one = K.attention(q[3].copy(), k, v, 20, alibi_slopes=slopes)
    np.testing.assert_allclose(one, block[3], rtol=1e-6, atol=1e-6)


def test_op_errors_are_kernel_errors():
    x = _x(4, 8)
    with pytest.raises(KernelError, match="float32"):
        K.rmsnorm(x.astype(np.float64), _x(8), 1e-5)
    with pytest.raises(KernelError, match="weight"):
        K.layernorm(x, _x(7), 1e-5)
    with pytest.raises(KernelError, match="contiguous"):
        K.softmax(np.asfortranarray(x))
    with pytest.raises(KernelError, match="differ"):
        K.silu_mul(x, _x(4, 9))
    with pytest.raises(KernelError, match="kv heads"):
        K.attention(_x(1, 3, 8), _x(2, 10, 8), _x(2, 10, 8), 5)
    with pytest.raises(KernelError, match="n_tokens"):
        K.attention(_x(1, 4, 8), _x(2, 10, 8), _x(2, 10, 8), 11)

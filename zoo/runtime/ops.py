"""The runtime's small ops between the linear layers, on preallocated float32 buffers.

Linear layers always go through `zoo.kernels.linear` (weights stay encoded). The ops here are
O(tokens·dim) or attention over the KV cache: vectorised numpy writing into `out` buffers.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import RuntimeModelError


def linear_kernel():
    """(`zoo.kernels.linear`, `zoo.kernels.prepare`); a clear error if the kernels package lacks them."""
    try:
        from zoo.kernels import linear, prepare
    except ImportError:
        raise RuntimeModelError("zoo.kernels.linear is not available in this installation") from None
    return linear, prepare


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, out: np.ndarray) -> np.ndarray:
    """out [T, dim] = x * rsqrt(mean(x^2) + eps) * w."""
    ss = np.einsum("td,td->t", x, x)[:, None] / np.float32(x.shape[1])
    np.multiply(x, 1.0 / np.sqrt(ss + np.float32(eps)), out=out)
    out *= w
    return out


def layer_norm(x: np.ndarray, w: np.ndarray, eps: float, out: np.ndarray) -> np.ndarray:
    """out [T, dim] = (x - mean) / sqrt(var + eps) * w (no bias)."""
    np.subtract(x, x.mean(axis=1, keepdims=True), out=out)
    var = np.einsum("td,td->t", out, out)[:, None] / np.float32(x.shape[1])
    out *= 1.0 / np.sqrt(var + np.float32(eps))
    out *= w
    return out


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, half_layout: bool) -> None:
    """Rotate x [T, heads, head_dim] in place; cos/sin [T, head_dim/2] for the tokens' positions."""
    c, s = cos[:, None, :], sin[:, None, :]
    if half_layout:
        h = x.shape[2] // 2
        a, b = x[:, :, :h].copy(), x[:, :, h:]
        x[:, :, :h] = a * c - b * s
        x[:, :, h:] = b * c + a * s
    else:
        a, b = x[:, :, 0::2].copy(), x[:, :, 1::2]
        x[:, :, 0::2] = a * c - b * s
        x[:, :, 1::2] = b * c + a * s


def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos: int,
              slopes: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """Causal attention of T new queries at positions pos..pos+T-1 over the cache.

    q [T, n_heads, head_dim]; k_cache/v_cache [n_kv, ctx, head_dim] holding positions 0..pos+T-1;
    slopes [n_heads] adds ALiBi; out [T, n_heads*head_dim].
    """
    tokens, n_heads, head_dim = q.shape
    n_kv = k_cache.shape[0]
    group, n = n_heads // n_kv, pos + tokens
    qg = q.reshape(tokens, n_kv, group, head_dim).transpose(1, 2, 0, 3)  # [n_kv, group, T, hd]
    scores = qg @ k_cache[:, None, :n, :].swapaxes(-1, -2)  # [n_kv, group, T, n]
    scores *= np.float32(1.0 / np.sqrt(head_dim))
    key_pos = np.arange(n)
    query_pos = np.arange(pos, n)
    if slopes is not None:
        rel = (key_pos[None, :] - query_pos[:, None]).astype(np.float32)  # [T, n]
        scores += slopes.reshape(n_kv, group, 1, 1) * rel
    if tokens > 1:
        scores[..., key_pos[None, :] > query_pos[:, None]] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    ctx = scores @ v_cache[:, None, :n, :]  # [n_kv, group, T, hd]
    out[:] = ctx.transpose(2, 0, 1, 3).reshape(tokens, n_heads * head_dim)
    return out


def silu_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """gate = silu(gate) * up, in place."""
    sig = np.exp(-gate)
    sig += 1.0
    gate /= sig
    gate *= up
    return gate


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU in place (erf via Abramowitz-Stegun 7.1.26, |error| < 1.5e-7)."""
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = 1.0 / (1.0 + np.float32(0.3275911) * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    x *= 0.5 * (1.0 + erf)
    return x

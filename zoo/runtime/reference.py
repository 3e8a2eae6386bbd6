"""The team's one dense reference forward for Llama and MPT, in plain numpy (float32 or float64).

Readable top to bottom like llama2.c / nanoGPT: no KV cache, no kernels, no encodings. It defines
what the numba runtime must compute, and compression runs it layer by layer: `on_linear_input`
sees the input of every linear layer (Wanda norms, Hessians), and a layer recomputed with
compressed weights gives the next layer's calibration inputs. Weights are dense arrays keyed by
their GGUF-style names (SPEC.md section 5); rows are outputs, cols are inputs.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

LinearHook = Callable[[str, np.ndarray], None]  # (tensor name, input activations [tokens, cols])


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x [tokens, dim] * rsqrt(mean(x^2) + eps) * w [dim]."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layer_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm without bias (MPT): (x - mean) / sqrt(var + eps) * w."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU; erf from Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7), no scipy needed."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(x.dtype)


def rope_inv_freq(config: dict) -> np.ndarray:
    """Inverse frequencies [head_dim/2] (float64) with the model's theta and scaling (Llama 2, 3, 3.1)."""
    head_dim = config["head_dim"]
    inv = 1.0 / config["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = config.get("rope_scaling")
    if not scaling:
        return inv
    if scaling["type"] == "linear":
        return inv / scaling["factor"]
    # llama3: keep high frequencies, divide low ones by factor, blend in between
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_seq_len"]
    wavelen = 2 * math.pi / inv
    smooth = (old_len / wavelen - lo) / (hi - lo)
    blended = (1 - smooth) * inv / factor + smooth * inv
    out = np.where(wavelen > old_len / lo, inv / factor, inv)
    middle = (wavelen <= old_len / lo) & (wavelen >= old_len / hi)
    return np.where(middle, blended, out)


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, layout: str) -> np.ndarray:
    """Rotate x [tokens, heads, head_dim] at positions [tokens]; "half" pairs (i, i+d/2), "interleaved" (2i, 2i+1)."""
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [tokens, head_dim/2]
    cos, sin = np.cos(angles)[:, None, :].astype(x.dtype), np.sin(angles)[:, None, :].astype(x.dtype)
    if layout == "half":
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, b * cos + a * sin
    return out


def alibi_slopes(n_heads: int, alibi_bias_max: float) -> np.ndarray:
    """MPT's ALiBi slopes [n_heads] (as mosaicml's attention.py, including non-power-of-2 head counts)."""
    n2 = 2 ** math.ceil(math.log2(n_heads))
    slopes = 1.0 / 2.0 ** (np.arange(1, n2 + 1, dtype=np.float64) * (alibi_bias_max / n2))
    if n2 != n_heads:
        slopes = np.concatenate([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Causal softmax attention. q [T, H, d], k/v [T, Hkv, d] (GQA: H multiple of Hkv), bias [H, T, T]."""
    tokens, n_heads, head_dim = q.shape
    group = n_heads // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    qh, kh, vh = q.transpose(1, 0, 2), k.transpose(1, 0, 2), v.transpose(1, 0, 2)  # [H, T, d]
    scores = (qh @ kh.transpose(0, 2, 1)) / np.sqrt(head_dim).astype(q.dtype)  # [H, T, T], batched BLAS
    if bias is not None:
        scores = scores + bias
    scores = np.where(np.tril(np.ones((tokens, tokens), bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    return (probs @ vh).transpose(1, 0, 2).reshape(tokens, n_heads * head_dim)  # [T, H*d]


def _linear(name: str, x: np.ndarray, w: np.ndarray, hook: LinearHook | None) -> np.ndarray:
    if hook is not None:
        hook(name, x)
    return x @ w.T.astype(x.dtype)


def block_forward(config: dict, layer_weights: dict[str, np.ndarray], x: np.ndarray, layer_index: int,
                  on_linear_input: LinearHook | None = None) -> np.ndarray:
    """One decoder block: x [tokens, dim] at positions 0..tokens-1 -> [tokens, dim], same dtype.

    `layer_weights` maps full names ("blk.{i}.attn_q.weight", ...) to dense arrays.
    """
    b = f"blk.{layer_index}."
    w = lambda n: layer_weights[b + n]  # noqa: E731
    lin = lambda n, inp: _linear(b + n, inp, w(n), on_linear_input)  # noqa: E731
    tokens = x.shape[0]
    eps = config["norm_eps"]
    if config["arch"] == "llama":
        n_heads, n_kv, head_dim = config["n_heads"], config["n_kv_heads"], config["head_dim"]
        h = rms_norm(x, w("attn_norm.weight"), eps)
        q = lin("attn_q.weight", h).reshape(tokens, n_heads, head_dim)
        k = lin("attn_k.weight", h).reshape(tokens, n_kv, head_dim)
        v = lin("attn_v.weight", h).reshape(tokens, n_kv, head_dim)
        inv_freq, pos = rope_inv_freq(config), np.arange(tokens)
        q = apply_rope(q, pos, inv_freq, config["rope_layout"])
        k = apply_rope(k, pos, inv_freq, config["rope_layout"])
        x = x + lin("attn_output.weight", attention(q, k, v))
        h = rms_norm(x, w("ffn_norm.weight"), eps)
        gate = silu(lin("ffn_gate.weight", h)) * lin("ffn_up.weight", h)
        return x + lin("ffn_down.weight", gate)
    if config["arch"] == "mpt":
        n_heads, dim = config["n_heads"], config["dim"]
        head_dim = dim // n_heads
        h = layer_norm(x, w("attn_norm.weight"), eps)
        qkv = lin("attn_qkv.weight", h)  # [tokens, 3*dim]: all q, then all k, then all v
        if config.get("clip_qkv"):
            qkv = np.clip(qkv, -config["clip_qkv"], config["clip_qkv"])
        q, k, v = (qkv[:, i * dim:(i + 1) * dim].reshape(tokens, n_heads, head_dim) for i in range(3))
        pos = np.arange(tokens)
        bias = alibi_slopes(n_heads, config["alibi_bias_max"])[:, None, None] * (pos[None, None, :] - pos[None, :, None])
        x = x + lin("attn_output.weight", attention(q, k, v, bias.astype(x.dtype)))
        h = layer_norm(x, w("ffn_norm.weight"), eps)
        return x + lin("ffn_down.weight", gelu(lin("ffn_up.weight", h)))
    raise ValueError(f"unknown arch {config['arch']!r}")


def embed(token_embd: np.ndarray, tokens, dtype=np.float32) -> np.ndarray:
    """Embedding rows for token ids -> [tokens, dim]."""
    return np.asarray(token_embd)[np.asarray(tokens, dtype=np.intp)].astype(dtype)


def final_logits(config: dict, x: np.ndarray, output_norm: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Final norm + head: x [tokens, dim] -> logits [tokens, vocab]. `output` is token_embd when tied."""
    norm = rms_norm if config["arch"] == "llama" else layer_norm
    return norm(x, output_norm, config["norm_eps"]) @ np.asarray(output).T.astype(x.dtype)


def layer_names(config: dict, layer_index: int) -> list[str]:
    """The tensor names of block `layer_index`."""
    from zoo.format import expected_tensors

    prefix = f"blk.{layer_index}."
    return [n for n in expected_tensors(config) if n.startswith(prefix)]


def logits(config: dict, weights_getter: Callable[[str], np.ndarray], tokens, dtype=np.float32) -> np.ndarray:
    """Full forward: token ids [T] -> logits [T, vocab]; weights fetched by name one layer at a time."""
    x = embed(weights_getter("token_embd.weight"), tokens, dtype)
    for i in range(config["n_layers"]):
        x = block_forward(config, {n: weights_getter(n) for n in layer_names(config, i)}, x, i)
    head = "token_embd.weight" if config["tied_embeddings"] else "output.weight"
    return final_logits(config, x, weights_getter("output_norm.weight"), weights_getter(head))

"""One decoder block in PyTorch, for recovery training: the same computation as zoo.runtime.reference.block_forward.

Batched over calibration windows (x [batch, tokens, dim], every window at positions 0..tokens-1) and
differentiable in the linear weights. Imported only by the recovery code: torch is the optional
`train` extra. tests/compress/test_recover.py checks it against the numpy reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from zoo.runtime.reference import alibi_slopes, rope_inv_freq


def _rope_tables(config: dict, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin float32 [tokens, 1, head_dim/2] at positions 0..tokens-1 (angles in float64, as the reference)."""
    angles = np.arange(tokens, dtype=np.float64)[:, None] * rope_inv_freq(config)[None, :]
    return (torch.from_numpy(np.cos(angles)[:, None, :].astype(np.float32)),
            torch.from_numpy(np.sin(angles)[:, None, :].astype(np.float32)))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str) -> torch.Tensor:
    """Rotate x [batch, tokens, heads, head_dim]; "half" pairs (i, i+d/2), "interleaved" (2i, 2i+1)."""
    if layout == "half":
        a, b = x.chunk(2, dim=-1)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _layer_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w, None, eps)


class BlockForward:
    """block(weights, x) for one decoder block of `config`; position tables built once per window length."""

    def __init__(self, config: dict, layer_index: int, tokens: int):
        self.config, self.prefix = config, f"blk.{layer_index}."
        if config["arch"] == "llama":
            self.cos, self.sin = _rope_tables(config, tokens)
            self.bias = None
        elif config["arch"] == "mpt":
            pos = np.arange(tokens)
            bias = alibi_slopes(config["n_heads"], config["alibi_bias_max"])[:, None, None] * (pos[None, None, :] - pos[None, :, None])
            self.bias = torch.from_numpy(bias.astype(np.float32))  # [heads, T, T]
        else:
            raise ValueError(f"unknown arch {config['arch']!r}")

    def __call__(self, w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """x [batch, tokens, dim] -> the block's output, same shape; `w` maps full tensor names to tensors."""
        c, b = self.config, self.prefix
        batch, tokens, dim = x.shape
        lin = lambda n, inp: inp @ w[b + n].T  # noqa: E731
        if c["arch"] == "llama":
            n_heads, n_kv, head_dim = c["n_heads"], c["n_kv_heads"], c["head_dim"]
            h = _rms_norm(x, w[b + "attn_norm.weight"], c["norm_eps"])
            q = _rope(lin("attn_q.weight", h).view(batch, tokens, n_heads, head_dim), self.cos, self.sin, c["rope_layout"])
            k = _rope(lin("attn_k.weight", h).view(batch, tokens, n_kv, head_dim), self.cos, self.sin, c["rope_layout"])
            v = lin("attn_v.weight", h).view(batch, tokens, n_kv, head_dim)
            att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True, enable_gqa=n_heads != n_kv)
            x = x + lin("attn_output.weight", att.transpose(1, 2).reshape(batch, tokens, n_heads * head_dim))
            h = _rms_norm(x, w[b + "ffn_norm.weight"], c["norm_eps"])
            return x + lin("ffn_down.weight", F.silu(lin("ffn_gate.weight", h)) * lin("ffn_up.weight", h))
        n_heads = c["n_heads"]
        head_dim = dim // n_heads
        h = _layer_norm(x, w[b + "attn_norm.weight"], c["norm_eps"])
        qkv = lin("attn_qkv.weight", h)
        if c.get("clip_qkv"):
            qkv = qkv.clamp(-c["clip_qkv"], c["clip_qkv"])
        q, k, v = (t.view(batch, tokens, n_heads, head_dim).transpose(1, 2) for t in qkv.split(dim, dim=-1))
        causal = torch.full((tokens, tokens), -math.inf).triu(1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias + causal)
        x = x + lin("attn_output.weight", att.transpose(1, 2).reshape(batch, tokens, dim))
        h = _layer_norm(x, w[b + "ffn_norm.weight"], c["norm_eps"])
        return x + lin("ffn_down.weight", F.gelu(lin("ffn_up.weight", h)))

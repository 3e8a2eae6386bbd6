"""One decoder block in PyTorch, for recovery training: the same computation as zoo.runtime.reference.block_forward.

Batched over calibration windows (x [batch, tokens, dim], every window at positions 0..tokens-1) and
differentiable in the linear weights. A linear may instead be a function of the input (FakeQuantLinear:
recovery's masked, fake-quantized weight, rebuilt on the fly so that no weight-sized tensor waits between
the forward and the backward pass; a 7B block's float32 weights are 0.8 GB). Imported only by the
recovery code: torch is the optional `train` extra. tests/compress/test_recover.py checks it against the
numpy reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from zoo.format import Q4_TOP_CODE
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


ROWS_AT_ONCE = 1024  # rows of a weight fake-quantized at a time: bounds the intermediates (a 7B FFN weight is 180 MB)


def _group_sum(t: torch.Tensor, group: int, groups: int) -> torch.Tensor:
    """t [rows, cols] summed over each group of `group` columns -> [rows, groups] (the last group may be short)."""
    return F.pad(t, (0, groups * group - t.shape[1])).view(t.shape[0], groups, group).sum(-1)


def _codes(weight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, mask: torch.Tensor | None,
           group: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes, s, through) of a masked weight on its group grid: s the scales per column; codes float32
    clamp(round(weight / s), lowest, highest) — ±qmax, or [-z, 15 - z] for zero points z — 0 where the weight is
    pruned or its scale is not positive; through (bool) where the straight-through estimator passes the weight's
    gradient (live and its code not clipped)."""
    cols = weight.shape[1]
    s = torch.repeat_interleave(scales, group, dim=1)[:, :cols]
    live = s > 0
    if mask is not None:
        live.logical_and_(mask)
    codes = (weight / torch.where(live, s, 1.0)).round_()
    if zeros is None:
        through = live & (codes.abs() <= qmax)
        codes.clamp_(-qmax, qmax)
    else:
        low = -torch.repeat_interleave(zeros, group, dim=1)[:, :cols]
        high = low + Q4_TOP_CODE
        through = live & (codes >= low) & (codes <= high)
        codes = torch.maximum(torch.minimum(codes, high, out=high), low, out=low)
    codes.masked_fill_(~live, 0.0)
    return codes, s, through


def _fake_quant(weight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, mask: torch.Tensor | None,
                group: int, qmax: int, grad_w: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W = codes * s, the scales' gradient or None), built ROWS_AT_ONCE rows at a time; given dL/dW `grad_w`,
    the scales' gradient is taken from it and it becomes the weight's (zeroed where the STE stops) in place."""
    w = torch.empty_like(weight)
    grad_scales = None if grad_w is None else torch.empty_like(scales)
    for r in range(0, weight.shape[0], ROWS_AT_ONCE):
        rows = slice(r, r + ROWS_AT_ONCE)
        codes, s, through = _codes(weight[rows], scales[rows], None if zeros is None else zeros[rows],
                                   None if mask is None else mask[rows], group, qmax)
        if grad_w is not None:
            grad_scales[rows] = _group_sum(codes * grad_w[rows], group, scales.shape[1])
            grad_w[rows].mul_(through)
        torch.mul(codes, s, out=w[rows])
    return w, grad_scales


class FakeQuantLinear(torch.autograd.Function):
    """x @ W.T for W = mask * clamp(round(weight / s), lowest, highest) * s, s the `scales` repeated over their
    groups of columns and the bounds ±qmax or, given fixed `zeros`, [-z, 15 - z] (W = mask * weight when `scales`
    is None), differentiable by the straight-through estimator.

    W is rebuilt in backward rather than saved: autograd on the plain expression keeps about five
    weight-sized tensors per linear until backward (scales per column, quotient, clamped codes, product,
    masked product); here W is the only one, and only while its product runs. Gradients: the weight's is W's
    where `_codes` lets it through; a scale's is its group's sum of W's gradient times the codes (the codes see
    the scale as a constant); the zero points do not train."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None, zeros: torch.Tensor | None,
                mask: torch.Tensor | None, group: int, qmax: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight, scales, zeros, mask)
        ctx.group, ctx.qmax = group, qmax
        if scales is None:
            return x @ (weight if mask is None else weight * mask).T
        return x @ _fake_quant(weight, scales, zeros, mask, group, qmax)[0].T

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight, scales, zeros, mask = ctx.saved_tensors
        grad_w = g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])  # dL/dW [out, in]
        grad_x = grad_scales = None
        if scales is None:
            w = weight if mask is None else weight * mask
            if mask is not None:
                grad_w.mul_(mask)
        else:
            w, grad_scales = _fake_quant(weight, scales, zeros, mask, ctx.group, ctx.qmax, grad_w)
        if ctx.needs_input_grad[0]:
            grad_x = g @ w
        return grad_x, grad_w, grad_scales, None, None, None, None


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
        """x [batch, tokens, dim] -> the block's output, same shape; `w` maps full tensor names to tensors, or a
        linear's name to a function inp -> inp @ W.T (a FakeQuantLinear)."""
        c, b = self.config, self.prefix
        batch, tokens, dim = x.shape
        lin = lambda n, inp: w[b + n](inp) if callable(w[b + n]) else inp @ w[b + n].T  # noqa: E731
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

"""Block-wise recovery after one-shot pruning and quantization: train each compressed block to match the dense one.

For decoder block i the input is the compressed model's calibration activations and the target is the
dense model's output of the same block on the dense model's activations, so the block also learns to
undo the error of the blocks before it (EBFT's block-wise reconstruction). Only the kept weights and
the group scales train: every mask stays fixed (a pruned weight is multiplied by 0 in the forward, so
it stays exactly 0), and a quantized weight trains through fake quantization with a straight-through
estimator on its own group grid, so the stored codes are the trained ones. The block is re-encoded in
the encoding it had; if the stored result does not beat the one-shot block on the held-out
calibration windows, the one-shot block is kept. PyTorch (the `train` extra) is imported here only.

Memory, for streaming a 7B: the block's float32 weights are held once (trained in place), their gradients
and Adam's two moments during the steps, each fake-quantized weight and its intermediates only briefly
(torch_block.FakeQuantLinear); a Llama-2-7B block peaks at 5.25 GiB of RSS (bench/compress_7b.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from zoo.errors import CompressError
from zoo.format import EncodedTensor, decode, stored_scales, stored_zeros

from .quant import QMAX, codes_for, group_scales, pack, per_column
from .windows import compress_threads

RECOVER_MODES = ("none", "blockwise", "distill", "both")  # both: block-wise, then distillation
BATCH_WINDOWS = 4  # calibration windows per optimizer step
# Adam's learning rate, in units of each tensor's mean quantization step (its mean group scale; for float weights the
# int4 step their group absmax would give), cosine-decayed to 0: 0.04 is 3e-3 on SmolLM2's int4 weights (mean scale
# ~0.07), the best of 1e-4..3e-2 measured there (docs/compress.md, "recovery"), and keeps q8's 16x finer grid stable.
# A weight whose one-shot codes are already close (GPTQ q4 with zero points, block error ~0.002) wants less: at 0.04
# no SmolLM2 block beat its one-shot codes, at 0.003 every one tried did (Recipe.recover_lr, docs/compress.md)
STEP_LR = 0.04
HELD_OUT = 8  # one calibration window in 8 judges the training (reconstruction error before/after) instead of feeding it


def require_torch():
    """The torch module (with zoo.blas's reproducibility pins set before its first import), or a one-line
    CompressError naming the extra to install."""
    from zoo.blas import pin_torch

    pin_torch()
    try:
        import torch
    except ImportError:
        raise CompressError("--recover needs PyTorch: pip install 'zoo-llm[train]' (or pip install torch)") from None
    return torch


@dataclass
class BlockRecovery:
    """One block's reconstruction error (`token_error` on the held-out calibration windows) before and after."""

    loss_before: float
    loss_after: float
    steps: int
    seconds: float
    replaced: bool  # False: the trained block was no better, the one-shot block was kept


class Trainable:
    """One linear's trainable state: float weights (masked) and, when quantized, f32 group scales (q4's zero
    points, when stored, stay fixed).

    The weights are `weight`'s memory (float32, C order, writable: else a copy), trained in place, and the
    bool mask is `mask`'s: a 7B block's float32 copy is 0.8 GB, a float32 mask as much again."""

    def __init__(self, torch, enc: EncodedTensor, mask: np.ndarray | None, weight: np.ndarray, bits: int):
        self.enc, self.bits = enc, bits
        self.np_mask = mask
        self.mask = None if mask is None else torch.from_numpy(np.require(mask, np.bool_, "C"))
        self.weight = torch.nn.Parameter(torch.from_numpy(np.require(weight, np.float32, ["C", "W"])))
        self.quantized = bits < 16
        self.scales, self.zeros, self.group, self.qmax = None, None, 0, 0
        if self.quantized:
            self.qmax = QMAX[bits]
            self.group = enc.group_size
            self.scales = torch.nn.Parameter(torch.from_numpy(stored_scales(enc).astype(np.float32)))
            zeros = stored_zeros(enc)  # q4 with zero points: fixed, the scales and weights train around them
            self.np_zeros = zeros
            self.zeros = None if zeros is None else torch.from_numpy(zeros.astype(np.float32))
            self.step = float(self.scales.detach().abs().mean())
        else:  # float weights: the step an int4 grid of group 128 would have
            self.step = float(group_scales(weight, mask, 128, QMAX[4]).astype(np.float32).mean())

    def linear(self, x):
        """x @ W.T for the weight the block computes with: masked, and fake-quantized on the group grid (STE).

        The codes see the scale as a constant: a scale's gradient is then its codes' (scaling the group), not
        LSQ's round(q) - q, which is 0 on the grid the one-shot weights start on (Adam turned that into noise)."""
        from .torch_block import FakeQuantLinear

        return FakeQuantLinear.apply(x, self.weight, self.scales, self.zeros, self.mask, self.group, self.qmax)

    def encoded(self) -> EncodedTensor:
        """The trained weight stored in the encoding it came in (codes from the f16 scales actually stored)."""
        w = self.weight.detach().numpy()
        mask = self.np_mask
        if not self.quantized:
            return pack(w if mask is None else np.where(mask, w, np.float32(0)), mask, 16, self.enc.group_size or 128)
        scales = np.maximum(self.scales.detach().numpy(), 0).astype(np.float16)
        zeros = self.np_zeros
        cols = w.shape[1]
        codes = codes_for(w, per_column(scales, self.group, cols), self.qmax,
                          None if zeros is None else per_column(zeros, self.group, cols))
        if mask is not None:
            codes[~mask] = 0
        return pack(w, mask, self.bits, self.group, codes, scales, keep=self.enc.keep, zeros=zeros)


def token_error(y, t):
    """Mean over tokens of ‖y_t - target_t‖² / ‖target_t‖²: each token's error as the next RMSNorm sees it.

    The residual stream of a few tokens (the first, and other "attention sinks") is orders of magnitude
    larger than the rest; an unweighted MSE would spend the training on them, while the norm that
    follows divides every token by its own scale."""
    return ((y - t).pow(2).sum(-1) / t.pow(2).sum(-1).clamp_min(1e-30)).mean()


def _loss(torch, block, weights: dict, x: np.ndarray, target: np.ndarray) -> float:
    """`token_error` over all windows, without gradients."""
    total = 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], BATCH_WINDOWS):
            t = torch.from_numpy(target[s:s + BATCH_WINDOWS]).double()
            y = block(weights, torch.from_numpy(x[s:s + BATCH_WINDOWS])).double()
            total += float(token_error(y, t)) * t.shape[0]
    return total / x.shape[0]


def held_out(windows: int, seed: int, layer: int) -> np.ndarray:
    """The calibration windows kept out of training to judge it: one in HELD_OUT (at least one; all if only one)."""
    count = max(1, windows // HELD_OUT)
    return np.sort(np.random.default_rng([seed, layer, 1]).permutation(windows)[:count]) if windows > 1 else np.arange(1)


def training_windows(windows: int, held: np.ndarray) -> np.ndarray:
    """The calibration windows that feed the optimizer: all but the held-out ones (all of them if every one is held)."""
    return np.setdiff1d(np.arange(windows), held) if held.size < windows else held


def optimizer(torch, train: dict, lr: float, steps: int):
    """(Adam, its cosine schedule to 0 over `steps`) for every Trainable's weights and scales, at `lr` x its mean
    quantization step."""
    params = [{"params": [t.weight] + ([t.scales] if t.scales is not None else []), "lr": lr * max(t.step, 1e-12)}
              for t in train.values()]
    opt = torch.optim.Adam(params)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)


def batches(fit: np.ndarray, steps: int, rng: np.random.Generator):
    """`steps` sorted picks of BATCH_WINDOWS windows from `fit`, drawn in seeded epochs (a new permutation when the
    current one runs out)."""
    order = np.empty(0, np.int64)
    for _ in range(steps):
        if order.size < BATCH_WINDOWS:
            order = np.concatenate([order, rng.permutation(fit)])
        pick, order = np.sort(order[:BATCH_WINDOWS]), order[BATCH_WINDOWS:]
        yield pick


def recover_block(config: dict, layer: int, encoded: dict[str, EncodedTensor], masks: dict[str, np.ndarray | None],
                  decoded: dict[str, np.ndarray], x: np.ndarray, target: np.ndarray, bits: int, tokens: int,
                  seed: int, lr: float = STEP_LR) -> tuple[dict[str, EncodedTensor], dict[str, np.ndarray], BlockRecovery]:
    """Train block `layer`'s linears so block(x) ≈ target; returns (encoded, decoded, report) for the stored result.

    x, target: float32 [windows, seq_len, dim]; `tokens` is the budget of calibration tokens the optimizer
    sees (repeats counted); `bits` the recipe's code bits (16: float weights, no fake quantization); `lr` Adam's
    rate in units of each tensor's mean quantization step.
    The 2-D arrays of `decoded` are trained in place (use the returned dict): one block's float32 weights are
    held once, the one-shot ones come back from `encoded` if the block is kept.
    """
    torch = require_torch()
    from .torch_block import BlockForward

    start = time.monotonic()
    torch.set_num_threads(compress_threads())
    torch.manual_seed(seed * 1_000_003 + layer)
    windows, seq_len, _ = x.shape
    block = BlockForward(config, layer, seq_len)
    fixed = {n: torch.from_numpy(np.array(v)) for n, v in decoded.items() if v.ndim == 1}
    train = {n: Trainable(torch, encoded[n], masks.get(n), decoded[n], bits) for n, v in decoded.items() if v.ndim == 2}
    held = held_out(windows, seed, layer)
    fit = training_windows(windows, held)
    x_held, target_held = x[held], target[held]
    before = _loss(torch, block, {**fixed, **{n: torch.from_numpy(decoded[n]) for n in train}}, x_held, target_held)
    steps = max(1, tokens // (BATCH_WINDOWS * seq_len))
    opt, sched = optimizer(torch, train, lr, steps)
    linears = {n: tr.linear for n, tr in train.items()}
    for pick in batches(fit, steps, np.random.default_rng([seed, layer])):
        loss = token_error(block({**fixed, **linears}, torch.from_numpy(x[pick])), torch.from_numpy(target[pick]))
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)  # a gradient per weight is 0.8 GB on a 7B block: not kept through the forward
    del opt, sched, linears  # Adam's moments: twice the weights
    new_enc = {n: tr.encoded() for n, tr in train.items()}
    new_dec = {n: decode(e) for n, e in new_enc.items()}
    after = _loss(torch, block, {**fixed, **{n: torch.from_numpy(v) for n, v in new_dec.items()}}, x_held, target_held)
    replaced = after < before
    if not replaced:  # `decoded`'s 2-D arrays hold the trained weights now: the one-shot ones again, from their codes
        new_enc, new_dec = {}, {n: decode(encoded[n]) for n in train}
    return ({**encoded, **new_enc}, {**decoded, **new_dec},
            BlockRecovery(before, min(after, before), steps, time.monotonic() - start, replaced))

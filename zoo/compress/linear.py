"""Compress one linear weight given its input statistics: the method × pattern × quantizer switch.

Statistics come from the calibration inputs x [tokens, cols] of the layer: the sum of squares per
column (for Wanda's ‖x_c‖) and XᵀX (the Hessian, for SparseGPT and GPTQ).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoo.errors import CompressError
from zoo.format import EncodedTensor

from .masks import magnitude_scores, select, tile4_keep, wanda_scores
from .obs import hessian, inverse_hessian_factor, obs_compress
from .quant import pack, rtn_zero_points

METHODS = ("magnitude", "wanda", "sparsegpt")
QUANTIZERS = ("rtn", "gptq")


@dataclass
class InputStats:
    """Running statistics of one linear layer's input: Σx² per column and XᵀX (if needed)."""

    cols: int
    need_hessian: bool
    tokens: int = 0
    sq_sum: np.ndarray = field(init=False)  # float64 [cols]
    xtx: np.ndarray | None = field(init=False)  # float64 [cols, cols]
    _factors: dict = field(init=False, repr=False)  # percdamp -> (U, dead) of the finished XᵀX

    def __post_init__(self) -> None:
        self.sq_sum = np.zeros(self.cols)
        self.xtx = np.zeros((self.cols, self.cols)) if self.need_hessian else None
        self._factors = {}

    def inverse_factor(self, percdamp: float) -> tuple[np.ndarray, np.ndarray]:
        """`inverse_hessian_factor(XᵀX, percdamp)`, computed once: q/k/v (and gate/up) share one input."""
        if percdamp not in self._factors:
            self._factors[percdamp] = inverse_hessian_factor(self.xtx, percdamp)
        return self._factors[percdamp]

    def add(self, x: np.ndarray) -> None:
        """Accumulate a batch x [tokens, cols]."""
        x = x.reshape(-1, self.cols)
        self.add_parts(x.shape[0], np.einsum("tc,tc->c", x, x, dtype=np.float64),
                       hessian(x) if self.xtx is not None else None)

    def add_parts(self, tokens: int, sq_sum: np.ndarray, xtx: np.ndarray | None) -> None:
        """Accumulate one batch's own Σx² (float64 [cols]) and XᵀX (float32 [cols, cols], computed elsewhere)."""
        self._factors.clear()
        self.tokens += tokens
        self.sq_sum += sq_sum
        if self.xtx is not None:
            np.add(self.xtx, xtx, out=self.xtx)  # float32 product, float64 sum (no temporary)

    @property
    def col_norms(self) -> np.ndarray:
        """‖x_c‖₂ over all calibration tokens, float64 [cols]."""
        return np.sqrt(self.sq_sum)


@dataclass(frozen=True)
class LinearRecipe:
    """What to do with each linear weight (the CLI's options, per layer sparsity resolved)."""

    method: str = "sparsegpt"
    sparsity: float = 0.0
    pattern: str = "unstructured"
    scope: str = "row"  # magnitude only: compare within a row or across the whole matrix
    bits: int = 16
    group_size: int = 128
    quantizer: str = "rtn"
    blocksize: int = 128
    percdamp: float = 0.01
    act_order: bool = True  # GPTQ: columns by decreasing Hessian diagonal, static groups (after SparseGPT's sweep)
    zero_points: bool = False  # q4: each group's grid spans its own [min, max] (stored zero points)

    @property
    def prunes(self) -> bool:
        return self.sparsity > 0 and self.pattern != "neurons"

    @property
    def needs_hessian(self) -> bool:
        return (self.prunes and self.method == "sparsegpt") or (self.bits < 16 and self.quantizer == "gptq")


def compress_linear(w: np.ndarray, stats: InputStats | None, recipe: LinearRecipe) -> tuple[EncodedTensor, np.ndarray | None]:
    """(the encoded weight, its keep-mask or None when nothing was pruned) for w float32 [rows, cols]."""
    r = recipe
    if r.method not in METHODS:
        raise CompressError(f"unknown method {r.method!r} (known: {', '.join(METHODS)})")
    if r.quantizer not in QUANTIZERS:
        raise CompressError(f"unknown quantizer {r.quantizer!r} (known: {', '.join(QUANTIZERS)})")
    quant = r.bits < 16
    if (r.needs_hessian or r.method == "wanda" and r.prunes) and stats is None:
        raise CompressError(f"{r.method}/{r.quantizer} needs calibration statistics")
    mask = None
    keep = tile4_keep(r.sparsity) if r.prunes and r.pattern == "tile4" else None  # tile4-q4's K
    gptq = quant and r.quantizer == "gptq"
    if r.prunes and r.method == "sparsegpt":
        joint = gptq and not r.act_order  # one sweep: SparseGPT's masks and GPTQ's codes column by column
        res = obs_compress(w, stats.xtx, sparsity=r.sparsity, pattern=r.pattern, bits=r.bits if joint else None,
                           group_size=r.group_size, blocksize=r.blocksize, percdamp=r.percdamp,
                           zero_points=joint and r.zero_points, factor=stats.inverse_factor(r.percdamp))
        if joint:
            return pack(res.weight, res.mask, r.bits, r.group_size, res.codes, res.scales, keep=keep,
                        zeros=res.zeros), res.mask
        w, mask = res.weight, res.mask  # the float sweep's; with GPTQ, act-order quantizes under this mask below
    elif r.prunes:
        scores = magnitude_scores(w) if r.method == "magnitude" else wanda_scores(w, stats.col_norms)
        mask = select(scores, r.sparsity, r.pattern, r.scope if r.method == "magnitude" else "row")
        w = np.where(mask, w, np.float32(0))
    if gptq:
        res = obs_compress(w, stats.xtx, fixed_mask=mask, bits=r.bits, group_size=r.group_size,
                           blocksize=r.blocksize, percdamp=r.percdamp, act_order=r.act_order,
                           zero_points=r.zero_points, factor=None if r.act_order else stats.inverse_factor(r.percdamp))
        return pack(res.weight, mask, r.bits, r.group_size, res.codes, res.scales, keep=keep, zeros=res.zeros), mask
    if quant and r.zero_points:
        codes, scales, zeros = rtn_zero_points(w, mask, r.group_size)
        return pack(w, mask, r.bits, r.group_size, codes, scales, keep=keep, zeros=zeros), mask
    return pack(w, mask, r.bits, r.group_size, keep=keep), mask

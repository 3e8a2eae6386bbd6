"""The compression recipe: every option of `zoo compress`, validated once, recorded in the card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from zoo.errors import CompressError

from .linear import METHODS, QUANTIZERS, LinearRecipe
from .masks import PATTERNS, TILE4_KEEP, parse_nm, pattern_sparsity
from .profile import PROFILES
from .quant import SPARSE_Q4_MIN_SPARSITY
from .distill import DISTILL_AFTER_BLOCKWISE_LR, DISTILL_LR
from .recover import BATCH_WINDOWS, HELD_OUT, RECOVER_MODES, STEP_LR

BITS = (16, 8, 4, 3)


@dataclass(frozen=True)
class Recipe:
    """What `zoo compress` does; `sparsity` is the model-wide target (per layer after the profile)."""

    method: str = "sparsegpt"
    sparsity: float | None = 0.0
    pattern: str = "unstructured"
    profile: str = "uniform"
    bits: int = 16
    group_size: int = 128
    quantizer: str = "rtn"
    samples: int = 128
    seq_len: int = 512
    seed: int = 0
    calib_generated: int = 0  # of the `samples` windows, how many the model writes itself (zoo.compress.selfgen)
    scope: str = "row"  # magnitude: compare weights within a row or across the layer
    owl_lambda: float = 0.08  # the paper's LLaMA settings; SmolLM2 + Wanda: M 7, λ 0.12 (docs/compress.md)
    owl_m: float = 5.0
    sensitivity_lambda: float = 0.1  # the sensitivity profile's half-width (docs/compress.md, "sensitivity")
    percdamp: float = 0.01
    blocksize: int = 128
    act_order: bool = True  # GPTQ: columns by decreasing Hessian diagonal, static groups (SparseGPT: a second sweep)
    zero_points: bool = False  # int4 stored as plain q4 with a zero point per group: the grid spans [min, max]
    recover: str = "none"  # blockwise | distill | both: train the kept weights back towards the dense model (masks fixed)
    recover_tokens: int = 131072  # calibration tokens each block's recovery, and distillation, trains on (repeats counted)
    recover_lr: float = STEP_LR  # block-wise recovery's Adam rate, x each tensor's mean quantization step

    def validated(self) -> "Recipe":
        """A copy with the sparsity implied by the pattern filled in; CompressError on bad options."""
        if self.method not in METHODS:
            raise CompressError(f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        if self.pattern not in PATTERNS:
            parse_nm(self.pattern)  # accepts other N:M patterns such as 1:4
        if self.profile not in PROFILES:
            raise CompressError(f"unknown profile {self.profile!r} (known: {', '.join(PROFILES)})")
        if self.bits not in BITS:
            raise CompressError(f"bits must be one of {', '.join(map(str, BITS))}, got {self.bits}")
        if self.quantizer not in QUANTIZERS:
            raise CompressError(f"unknown quantizer {self.quantizer!r} (known: {', '.join(QUANTIZERS)})")
        if self.scope not in ("row", "layer"):
            raise CompressError(f"scope must be row or layer, got {self.scope!r}")
        if self.group_size <= 0 or self.group_size % 32:
            raise CompressError(f"group size must be a positive multiple of 32, got {self.group_size}")
        sparsity = pattern_sparsity(self.pattern, self.sparsity)
        if not 0.0 <= sparsity < 1.0:
            raise CompressError(f"sparsity must be in [0, 1), got {sparsity}")
        if sparsity > 0 and self.bits < 16 and self.pattern != "neurons" and self.group_size % 64:
            raise CompressError(f"sparse quantized weights need a group size that is a multiple of 64, got {self.group_size}")
        if self.pattern == "tile4":
            if self.profile != "uniform":
                levels = ", ".join(f"{s:g}" for s in TILE4_KEEP)
                raise CompressError(f"the {self.profile} profile varies sparsity per layer; pattern tile4 allows only "
                                    f"{levels} in every layer: use --profile uniform")
            if self.bits <= 4 and self.group_size != 128:
                raise CompressError(f"pattern tile4 at {self.bits} bits is stored as tile4-q4, group size 128; "
                                    f"got {self.group_size}")
            if self.method == "sparsegpt" and self.blocksize != 128:
                raise CompressError(f"SparseGPT with pattern tile4 needs blocksize 128 (one column group), got {self.blocksize}")
        if self.profile == "owl" and parse_nm(self.pattern) is not None:
            raise CompressError("the OWL profile varies sparsity per layer; it does not apply to N:M patterns")
        if self.profile == "sensitivity" and (parse_nm(self.pattern) is not None or self.pattern == "neurons"):
            raise CompressError("the sensitivity profile varies unstructured sparsity per layer; "
                                "it does not apply to N:M or neuron patterns")
        if self.profile == "sensitivity" and not 0 < self.sensitivity_lambda < 0.5:
            raise CompressError(f"the sensitivity profile needs 0 < lambda < 0.5, got {self.sensitivity_lambda}")
        if self.profile == "owl" and not (0 < self.owl_lambda < 0.5 and self.owl_m > 0):
            raise CompressError(f"OWL needs 0 < lambda < 0.5 and M > 0, got {self.owl_lambda} and {self.owl_m}")
        if self.samples < 1 or self.seq_len < 2:
            raise CompressError("need --samples >= 1 and --seq-len >= 2")
        if not 0 <= self.calib_generated <= self.samples:
            raise CompressError(f"--calib-generated must be between 0 and --samples ({self.samples}), "
                                f"got {self.calib_generated}")
        if not 0 < self.percdamp < 1:
            raise CompressError("dampening must be in (0, 1)")
        if self.zero_points and not _stored_as_plain_q4(self.pattern, sparsity, self.bits):
            raise CompressError("zero points are stored by plain q4 only: they need --bits 4, no tile4 pattern and "
                                f"sparsity below {SPARSE_Q4_MIN_SPARSITY:g} (sparser weights are stored as sparse-q4)")
        if self.recover not in RECOVER_MODES:
            raise CompressError(f"unknown recovery {self.recover!r} (known: {', '.join(RECOVER_MODES)})")
        if self.recover != "none" and self.recover_tokens < 1:
            raise CompressError(f"--recover-tokens must be a positive number of tokens, got {self.recover_tokens}")
        if not 0 < self.recover_lr < 1:
            raise CompressError(f"--recover-lr must be in (0, 1) quantization steps, got {self.recover_lr}")
        return Recipe(**{**asdict(self), "sparsity": sparsity})

    def at_point(self, pattern: str, sparsity: float, bits: int) -> "Recipe":
        """This recipe at another (pattern, sparsity, bits) point of a sweep or tune; zero points only where the point
        is stored as plain q4 (a sparse or 8-bit point of a `--zero-points` search is stored as it always is)."""
        zero_points = self.zero_points and _stored_as_plain_q4(pattern, pattern_sparsity(pattern, sparsity), bits)
        return replace(self, pattern=pattern, sparsity=sparsity, bits=bits, zero_points=zero_points)

    @property
    def uses_calibration(self) -> bool:
        """Whether any statistic of the calibration activations is needed."""
        prunes = self.sparsity and self.sparsity > 0
        return self.recover != "none" or bool(prunes and (self.method != "magnitude" or self.profile in ("owl", "sensitivity"))) or \
            (self.bits < 16 and self.quantizer == "gptq")

    @property
    def distill_lr(self) -> float:
        """Distillation's Adam rate (x each tensor's mean quantization step): lower after block-wise recovery."""
        return DISTILL_AFTER_BLOCKWISE_LR if self.recover == "both" else DISTILL_LR

    @property
    def uses_act_order(self) -> bool:
        """act-order in effect: GPTQ quantizes (after SparseGPT's own sweep chose the mask, when it prunes)."""
        return self.act_order and self.bits < 16 and self.quantizer == "gptq"

    def for_layer(self, sparsity: float) -> LinearRecipe:
        """The per-linear recipe of a layer whose sparsity the profile fixed."""
        return LinearRecipe(method=self.method, sparsity=sparsity, pattern=self.pattern, scope=self.scope,
                            bits=self.bits, group_size=self.group_size, quantizer=self.quantizer,
                            blocksize=self.blocksize, percdamp=self.percdamp, act_order=self.uses_act_order,
                            zero_points=self.zero_points)

    def card(self) -> dict:
        """The recipe as the card's `compression` mapping (calibration added by the pipeline)."""
        quantized = self.bits < 16
        out = {"method": self.method if self.sparsity else "none", "sparsity": self.sparsity,
               "pattern": self.pattern, "profile": self.profile, "bits": self.bits,
               "group_size": self.group_size if quantized else None,
               "quantizer": self.quantizer if quantized else None, "seed": self.seed,
               "dampening": self.percdamp, "blocksize": self.blocksize}
        if quantized and self.quantizer == "gptq":
            out["act_order"] = self.uses_act_order
        if self.zero_points:
            out["zero_points"] = True
        if self.bits == 3:  # 3-bit codes live in the 4-bit containers: the card states the storage bits
            out["bits"], out["code_bits"] = 4, 3
        if self.method == "magnitude":
            out["scope"] = self.scope
        if self.profile == "owl":
            out["owl"] = {"lambda": self.owl_lambda, "m": self.owl_m}
        if self.profile == "sensitivity":
            out["sensitivity"] = {"lambda": self.sensitivity_lambda}
        if self.recover != "none":
            out["recovery"] = {"mode": self.recover, "tokens": self.recover_tokens, "batch_windows": BATCH_WINDOWS,
                               "held_out": f"1 window in {HELD_OUT}",
                               "trains": "kept weights and group scales; masks fixed; codes by fake quantization "
                                         "(straight-through rounding)"}
            if self.recover in ("blockwise", "both"):
                out["recovery"]["learning_rate"] = (f"{self.recover_lr:g} x the tensor's mean quantization step (weights and "
                                                    "scales), Adam, cosine decay to 0")
            if self.recover in ("distill", "both"):
                out["recovery"]["distill"] = {
                    "objective": "KL(dense || compressed) of the next-token distributions at every calibration position",
                    "learning_rate": f"{self.distill_lr:g} x the tensor's mean quantization step, Adam, cosine decay to 0"}
        return out


def _stored_as_plain_q4(pattern: str, sparsity: float, bits: int) -> bool:
    """Whether weights pruned to `sparsity` in `pattern` at `bits` are stored as plain q4 (the encoding with zero points)."""
    return bits == 4 and pattern != "tile4" and sparsity < SPARSE_Q4_MIN_SPARSITY

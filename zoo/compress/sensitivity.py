"""The sensitivity profile: per-layer sparsities from each layer's measured pruning error on the calibration text.

One dense pass over the calibration windows, as OWL's: for layer i, the dense layer's outputs y_i
(the residual stream entering layer i+1) are computed, the layer's linears are pruned alone at the
target sparsity with the recipe's own method (Wanda or SparseGPT, from the dense inputs'
statistics; no quantization), and the pruned layer's outputs ŷ_i on the same inputs give

    error_i = ‖ŷ_i − y_i‖_F / ‖y_i‖_F

the relative error the layer alone would inject into the residual stream. A layer with a larger
error is more sensitive and gets a lower sparsity: density_i ∝ log error_i, rescaled to a range of
width 2λ and shifted so the mean density is 1 − S (profile.owl_sparsities' rule, so the bounds and
their errors are OWL's). Logarithms because the errors are ratios spanning orders of magnitude
across depth (the residual stream grows); a linear map would relieve only the single worst layer.
The pass costs one extra dense forward plus one pruning of every linear (for SparseGPT about the
time of the compression itself), and is deterministic: every window is reduced in a fixed order.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from zoo.errors import CompressError
from zoo.format import decode

from .calibration import Calibration
from .linear import compress_linear
from .profile import owl_sparsities
from .windows import collect, forward, short_name

Progress = Callable[[str], None]


def layer_errors(source, calib: Calibration, recipe, progress: Progress | None = None) -> list[float]:
    """Per-layer relative output error of the layer pruned alone at recipe.sparsity (dense inputs)."""
    from zoo.runtime.reference import embed, layer_names

    config = source.config
    n_layers = config["n_layers"]
    lin = dataclasses.replace(recipe.for_layer(recipe.sparsity), bits=16)  # the pruning only
    token_embd = source.tensor("token_embd.weight")
    x = np.stack([embed(token_embd, t) for t in calib.tokens])  # f32 [samples, seq_len, dim]
    del token_embd
    errors: list[float] = []
    start = time.monotonic()
    for i in range(n_layers):
        weights = {n: source.tensor(n) for n in layer_names(config, i)}
        x_in = x.copy()
        stats = collect(config, weights, x, i, lambda _: lin.needs_hessian, advance=True)  # x <- dense outputs
        pruned = {}
        for name, w in weights.items():
            pruned[name] = w if w.ndim == 1 else decode(compress_linear(w, stats.get(short_name(name)), lin)[0])
        del weights, stats
        forward(config, pruned, x_in, i)  # x_in <- the pruned layer's outputs
        del pruned
        num = float(np.sqrt(np.sum(np.square(x_in - x, dtype=np.float64))))
        den = float(np.sqrt(np.sum(np.square(x, dtype=np.float64))))
        if not np.isfinite(num) or den == 0.0:
            raise CompressError(f"sensitivity: layer {i} has a non-finite or zero output on the calibration windows")
        errors.append(num / den)
        if progress:
            left = (time.monotonic() - start) / (i + 1) * (n_layers - i - 1)
            progress(f"sensitivity: layer {i + 1}/{n_layers} relative error {errors[-1]:.4f} "
                     f"(eta {int(left // 60)}m{int(left % 60):02d}s)")
    return errors


def sensitivity_sparsities(errors: list[float], sparsity: float, lam: float) -> list[float]:
    """Per-layer sparsities: more error, less sparsity; mean sparsity = `sparsity`, spread 2·lam at most."""
    e = np.asarray(errors, np.float64)
    if e.size == 0 or np.any(~np.isfinite(e)) or np.any(e < 0):
        raise CompressError("sensitivity errors must be finite and non-negative, one per layer")
    return owl_sparsities(list(np.log(np.maximum(e, 1e-12))), sparsity, lam)


def sensitivity_profile(source, calib: Calibration, recipe, progress: Progress | None = None,
                        errors: list[float] | None = None) -> tuple[list[float], list[float]]:
    """(per-layer sparsities, per-layer errors); `errors` given (same recipe and calibration) skips the pass."""
    if errors is None:
        errors = layer_errors(source, calib, recipe, progress)
    if len(errors) != source.config["n_layers"]:
        raise CompressError(f"sensitivity errors have {len(errors)} entries for {source.config['n_layers']} layers")
    return sensitivity_sparsities(errors, recipe.sparsity, recipe.sensitivity_lambda), list(errors)

"""Per-layer sparsity profiles: uniform, or OWL (outlier-weighted layerwise sparsity, Yin et al. 2023);
the sensitivity profile (sensitivity.py) reuses OWL's rescaling, owl_sparsities.

OWL gives layers with more outliers — weights whose Wanda score |W|·‖x‖ exceeds M times the layer's
mean score — a lower sparsity: density_i ∝ outlier ratio, rescaled to [1-S-λ, 1-S+λ] and shifted so
the mean density is 1-S (so the model-wide mean sparsity stays S when the layers are equal sized).
"""

from __future__ import annotations

import numpy as np

from zoo.errors import CompressError

PROFILES = ("uniform", "owl", "sensitivity")  # sensitivity: zoo.compress.sensitivity


def outlier_ratio(scores: list[np.ndarray], m: float) -> float:
    """Fraction of all scores of a layer's linear weights above m × their mean."""
    flat = np.concatenate([s.ravel() for s in scores])
    return float(np.mean(flat > m * flat.mean()))


def owl_sparsities(ratios: list[float], sparsity: float, lam: float) -> list[float]:
    """Per-layer sparsities from the layers' outlier ratios (OWL's rescaling)."""
    r = np.asarray(ratios, np.float64)
    span = r.max() - r.min()
    density = np.zeros_like(r) if span == 0 else (r - r.min()) / span * (2 * lam)
    density = density - density.mean() + (1.0 - sparsity)
    out = 1.0 - density
    if np.any(out < 0) or np.any(out >= 1):
        raise CompressError(f"OWL with lambda {lam} moves a layer's sparsity outside [0, 1) around {sparsity}; "
                            "lower --owl-lambda")
    return [float(s) for s in out]


def uniform(n_layers: int, sparsity: float) -> list[float]:
    return [float(sparsity)] * n_layers

"""float64 numpy references and error bounds for the kernel tests."""

from __future__ import annotations

import numpy as np

from zoo.format import decode, encode


def random_weight(rng: np.random.Generator, rows: int, cols: int, sparsity: float) -> np.ndarray:
    """float32 [rows, cols] N(0, 1) with `sparsity` of the entries zeroed at random."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[rng.random((rows, cols)) < sparsity] = 0.0
    return w


def encoded(rng, encoding: str, rows: int, cols: int, sparsity: float, group_size: int, **kw):
    """(EncodedTensor, its dequantized weights as float64 [rows, cols])."""
    t = encode(random_weight(rng, rows, cols, sparsity), encoding, group_size=group_size, **kw)
    return t, decode(t).astype(np.float64)


def float_bound(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Tolerance of a float32-accumulated product: 1e-5 of sum |w||x| per output, [tokens?, rows]."""
    return 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w).T) + 1e-6


def int8_activation_bound(w: np.ndarray, x: np.ndarray, group_size: int) -> np.ndarray:
    """Worst-case error of quantizing x to int8 per group (scale absmax/127, round to nearest):
    sum over groups of sum |w| over the group times half a step, plus the float bound."""
    rows, cols = w.shape
    x2 = np.atleast_2d(x).astype(np.float64)
    bound = np.zeros((x2.shape[0], rows))
    for c0 in range(0, cols, group_size):
        step = np.abs(x2[:, c0:c0 + group_size]).max(axis=1) / 127.0  # [tokens]
        bound += np.outer(step / 2, np.abs(w[:, c0:c0 + group_size]).sum(axis=1))
    bound = bound * 1.001 + float_bound(w, x2)
    return bound.reshape(np.shape(x)[:-1] + (rows,))

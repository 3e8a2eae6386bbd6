"""kernels/ops.py: the vectorizable exp and SwiGLU (the runtime's, the decode step's and zoo.kernels.silu_mul)
against numpy. The one attention is checked in test_kernel_ops.py."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import KernelError
from zoo.kernels import ops as FA


def test_fast_exp_matches_numpy_to_float32_rounding():
    x = np.concatenate([np.linspace(-87, 88, 200_001, dtype=np.float32), np.float32([0.0, -0.0, 1e-30, -1e-30])])
    got, want = np.empty_like(x), np.exp(x.astype(np.float64))
    FA.exp_into(x, got)
    assert np.max(np.abs(got - want) / want) < 3e-7


def test_fast_exp_clamps_out_of_range():
    x = np.float32([-np.inf, -1000.0, 1000.0])
    got = np.empty_like(x)
    FA.exp_into(x, got)
    assert got[0] == got[1] and 0.0 < got[0] < 1e-37 and np.isfinite(got[2]) and got[2] > 1e38


def test_silu_mul_matches_numpy():
    rng = np.random.default_rng(0)
    gate, up = (rng.standard_normal((3, 5000)).astype(np.float32) * 8 for _ in range(2))
    want = gate.astype(np.float64) / (1 + np.exp(-gate.astype(np.float64))) * up
    got = FA.silu_mul(gate, up, np.empty_like(gate))
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    with pytest.raises(KernelError, match="differ in shape"):
        FA.silu_mul(gate, up[:2], gate)

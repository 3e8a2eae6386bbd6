"""quantize_input(): linears sharing an input quantize it once, with results bit-identical to one call each."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_reference import encoded

import zoo.kernels as K
from zoo.errors import KernelError
from zoo.synthetic import random_codes

# (encoding, sparsity, group size): every matmul kernel, the int8 ones (VNNI tiles, VNNI CSR, tile4, AVX2 q4
# tiles) and the float ones, with two group sizes so one input carries two int8 forms
CASES = [("q4", 0.0, 128), ("q4", 0.0, 64), ("q8", 0.0, 128), ("sparse-q4", 0.3, 128), ("sparse-q4", 0.7, 128),
         ("sparse-q8", 0.7, 64), ("sparse-f16", 0.5, 128), ("dense", 0.0, 128)]


@pytest.mark.parametrize("tokens", [1, 5, 33])
def test_shared_input_equals_one_call_each(path, tokens):
    """Every weight against one quantize_input(x): outputs equal (np.array_equal) the per-call linear(x, w)."""
    rng = np.random.default_rng(tokens)
    cols = 384
    weights = [encoded(rng, enc, 24, cols, sp, gs)[0] for enc, sp, gs in CASES]
    weights.append(random_codes(rng, (24, cols), "tile4-q4", 0.5, 128))
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    acts = K.quantize_input(x)
    for t in weights + weights[::-1]:  # a second pass reuses every form built in the first
        assert np.array_equal(K.linear(acts, t), K.linear(x, t)), (path, t.encoding)


def test_forms_are_built_once():
    """A form is computed on first use and the same arrays are returned afterwards."""
    x = np.random.default_rng(0).standard_normal((9, 256)).astype(np.float32)
    acts = K.quantize_input(x)
    first = acts.int8(128, True)
    assert all(a is b for a, b in zip(first, acts.int8(128, True)))
    assert acts.int8(128, False)[0] is not first[0]
    xt, xdt = acts.tiles(128)
    assert acts.tiles(128)[0] is xt and xt.size == 32 * 256


def test_bad_input_is_refused():
    with pytest.raises(KernelError, match="quantize_input"):
        K.quantize_input(np.zeros((3, 8), np.float64))
    with pytest.raises(KernelError, match="quantize_input"):
        K.quantize_input(np.zeros((8, 3), np.float32).T)

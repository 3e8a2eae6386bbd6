"""linear() against a float64 numpy reference on the dequantized weights, on every kernel path."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_reference import encoded, float_bound, int8_activation_bound

import zoo.kernels as K
from zoo.kernels.dispatch import matmul_kernel

PATHS = K.available_paths()
SPARSE = ("sparse-q4", "sparse-q8", "sparse-f16")
# (rows, cols): a single row, columns not a multiple of 64 or 128, odd columns, several groups
SHAPES = [(1, 70), (13, 200), (37, 129), (64, 384), (5, 1000)]
SPARSITIES = (0.0, 0.5, 0.9, 0.99, 1.0)


def _quantizes_activations(t, x, path) -> bool:
    """Fast-path matvecs of q4/q8/sparse-q4/sparse-q8, and the matmuls of the VNNI and AVX2 int8 kernels, use int8
    activations."""
    if x.ndim == 1 or x.shape[0] == 1:
        return path != "portable" and t.encoding in ("q4", "q8", "sparse-q4", "sparse-q8")
    return matmul_kernel(K.prepare(t), path, x.shape[0]) in ("vnni", "vcsr", "avx2")


def _check(t, w, x, path, group_size):
    y = K.linear(x, t)
    ref = x.astype(np.float64) @ w.T
    quantized_acts = _quantizes_activations(t, x, path)
    bound = int8_activation_bound(w, x, group_size) if quantized_acts else float_bound(w, x)
    err = np.abs(y - ref)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert np.all(err <= bound), f"max excess {(err - bound).max():.3g}, max err {err.max():.3g}"


@pytest.mark.parametrize("encoding", ["dense", "q8", "q4", "sparse-q4", "sparse-q8", "sparse-f16"])
def test_matvec_and_matmul(path, encoding):
    rng = np.random.default_rng(hash(encoding) % 1000)
    for rows, cols in SHAPES:
        for sparsity in SPARSITIES if encoding in SPARSE else (0.0, 0.5):
            gs = 64 if cols < 300 else 128
            kw = {"dtype": "F16"} if encoding == "dense" else {}
            t, w = encoded(rng, encoding, rows, cols, sparsity, gs, **kw)
            for tokens in (None, 1, 33):
                shape = (cols,) if tokens is None else (tokens, cols)
                x = rng.standard_normal(shape).astype(np.float32)
                _check(t, w, x, path, gs)


@pytest.mark.parametrize("variant", ["q4-g32-zeros", "q4-g128-zeros", "q4-g96", "q4-g256", "q8-g32", "dense-f32", "dense-bf16",
                                     "sparse-q4-g192", "sparse-q8-g256"])
def test_group_sizes_zero_points_dtypes(path, variant):
    rng = np.random.default_rng(7)
    encoding, kw, gs = {
        "q4-g32-zeros": ("q4", {"zeros": True}, 32), "q4-g96": ("q4", {}, 96), "q8-g32": ("q8", {}, 32),
        "dense-f32": ("dense", {"dtype": "F32"}, 32), "dense-bf16": ("dense", {"dtype": "BF16"}, 32),
        "sparse-q4-g192": ("sparse-q4", {}, 192), "q4-g128-zeros": ("q4", {"zeros": True}, 128),
        "q4-g256": ("q4", {}, 256), "sparse-q8-g256": ("sparse-q8", {}, 256)}[variant]
    for rows, cols in ((3, 31), (17, 333), (8, 640), (5, 1001)):
        t, w = encoded(rng, encoding, rows, cols, 0.3 if encoding.startswith("sparse") else 0.0, gs, **kw)
        for shape in ((cols,), (4, cols)):
            _check(t, w, rng.standard_normal(shape).astype(np.float32), path, gs)


def test_readonly_views_and_out_buffer(path):
    """Parts as read-only views (as from an mmapped artifact) and a caller-provided out."""
    rng = np.random.default_rng(3)
    t, w = encoded(rng, "sparse-q4", 24, 256, 0.7, 128)
    for part in t.parts.values():
        part.flags.writeable = False
    x = rng.standard_normal(256).astype(np.float32)
    out = np.full(24, np.nan, np.float32)
    assert K.linear(x, K.prepare(t), out) is out
    bound = int8_activation_bound(w, x, 128) if path != "portable" else float_bound(w, x)
    assert np.all(np.abs(out - w @ x) <= bound)


def test_fast_path_error_is_small_relative_to_output():
    """The int8 activation error is bounded (above); here: it is also small in practice (< 2%)."""
    rng = np.random.default_rng(11)
    t, w = encoded(rng, "sparse-q4", 256, 1024, 0.5, 128)
    x = rng.standard_normal(1024).astype(np.float32)
    ref = w @ x
    for path in PATHS:
        K.set_path(path)
        rel = np.linalg.norm(K.linear(x, t) - ref) / np.linalg.norm(ref)
        assert rel < (1e-6 if path == "portable" else 2e-2), (path, rel)
    K.set_path(PATHS[-1])


@pytest.mark.parametrize("encoding", ["q4", "sparse-q4", "sparse-q8"])
def test_matmul_over_several_column_chunks(path, encoding):
    """Rows long enough for the VNNI matmul's column chunks (partial results summed), with a partial
    token tile and a partial last group."""
    rng = np.random.default_rng(5)
    for rows, cols, gs, tokens in ((6, 7001, 128, 11), (3, 6500, 256, 9)):
        t, w = encoded(rng, encoding, rows, cols, 0.0 if encoding == "q4" else 0.8, gs)
        _check(t, w, rng.standard_normal((tokens, cols)).astype(np.float32), path, gs)


def test_fast_matmul_error_is_small_relative_to_output():
    """int8 activations in the VNNI and AVX2 matmuls: < 2% relative error on random data (bounded above)."""
    rng = np.random.default_rng(12)
    for encoding in ("q4", "sparse-q4"):
        t, w = encoded(rng, encoding, 128, 1024, 0.5 if encoding == "sparse-q4" else 0.0, 128)
        x = rng.standard_normal((20, 1024)).astype(np.float32)
        ref = x.astype(np.float64) @ w.T
        for path in PATHS:
            K.set_path(path)
            rel = np.linalg.norm(K.linear(x, t) - ref) / np.linalg.norm(ref)
            assert rel < (2e-2 if matmul_kernel(K.prepare(t), path, 20) in ("vnni", "vcsr", "avx2") else 1e-6), (path, encoding, rel)
    K.set_path(PATHS[-1])


def test_nan_activations_propagate(path):
    """A NaN activation reaches every output whose row stores that column (dense rows: all), on
    every path: the int8 quantization must not hide it."""
    rng = np.random.default_rng(13)
    for encoding in ("q4", "q8", "sparse-q4"):
        t, w = encoded(rng, encoding, 9, 384, 0.5 if encoding == "sparse-q4" else 0.0, 128)
        stores = (w[:, 5] != 0) if encoding == "sparse-q4" else np.ones(9, bool)
        assert stores.any()
        for shape in ((384,), (10, 384)):
            x = rng.standard_normal(shape).astype(np.float32)
            x[..., 5] = np.nan
            assert np.isnan(K.linear(x, t)[..., stores]).all(), (encoding, shape)

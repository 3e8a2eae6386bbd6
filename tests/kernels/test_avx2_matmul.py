"""The q4 matmul tiles of matmul/avx2.py (avx2: vpmaddubsw; avx512: the same tiles with ymm vpdpbusd): int8
activations, so the int8 bound, on every tail and token count."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_reference import encoded, int8_activation_bound

import zoo.kernels as K
from zoo.kernels.dispatch import matmul_kernel
from zoo.kernels.ir.x86_tiles import AVX2_TILE, SMALL_TILE

pytestmark = pytest.mark.skipif("avx2" not in K.available_paths(), reason="needs an AVX2 CPU")


@pytest.fixture(params=["avx2", "avx512"])
def tile_path(request):
    if request.param not in K.available_paths():
        pytest.skip(f"needs an {request.param} CPU")
    previous = K.selected_path()
    K.set_path(request.param)
    yield request.param
    K.set_path(previous)


# columns: whole 128-column blocks, a 64-column tail (dword-masked load), odd tails (byte-masked load), several chunks
@pytest.mark.parametrize("rows,cols,group_size", [(9, 256, 128), (17, 576, 128), (13, 200, 128), (37, 129, 128),
                                                  (5, 1000, 256), (3, 5000, 128)])
@pytest.mark.parametrize("zeros", [False, True])
def test_q4_tile_matmul_within_int8_bound(tile_path, rows, cols, group_size, zeros):
    rng = np.random.default_rng(rows * cols + zeros)
    t, w = encoded(rng, "q4", rows, cols, 0.0, group_size, **({"zeros": True} if zeros else {}))
    # 4-token tiles (4..7 tokens, the last overlapping) and 8-token ones (the last tile overlaps the one before)
    for tokens in (SMALL_TILE, SMALL_TILE + 1, AVX2_TILE - 1, AVX2_TILE, AVX2_TILE + 1, 2 * AVX2_TILE - 1, 33, 128):
        assert matmul_kernel(K.prepare(t), tile_path, tokens) == {"avx2": "avx2", "avx512": "vnni"}[tile_path]
        x = rng.standard_normal((tokens, cols)).astype(np.float32)
        x[tokens // 2] *= 100.0  # one token on another scale: each token keeps its own activation scales
        out = np.full((tokens, rows), np.nan, np.float32)
        K.linear(x, t, out)
        err = np.abs(out - x.astype(np.float64) @ w.T)
        assert np.all(err <= int8_activation_bound(w, x, group_size)), (tokens, float(err.max()))


def test_avx2_dispatch():
    """The tiles take q4 with groups of a multiple of 128 and at least SMALL_TILE tokens; the rest stays float."""
    rng = np.random.default_rng(1)
    q4, _ = encoded(rng, "q4", 8, 256, 0.0, 128)
    q4_64, _ = encoded(rng, "q4", 8, 256, 0.0, 64)
    q8, _ = encoded(rng, "q8", 8, 256, 0.0, 128)
    assert matmul_kernel(K.prepare(q4), "avx2", SMALL_TILE) == "avx2"
    assert matmul_kernel(K.prepare(q4), "avx2", SMALL_TILE - 1) == "float"
    assert matmul_kernel(K.prepare(q4_64), "avx2", 32) == "float"
    assert matmul_kernel(K.prepare(q8), "avx2", 32) == "float"
    assert matmul_kernel(K.prepare(q4), "portable", 32) == "float"


@pytest.mark.skipif("avx512" not in K.available_paths(), reason="needs an AVX-512 VNNI CPU")
@pytest.mark.parametrize("zeros", [False, True])
def test_avx512_q4_matmul_under_a_tile_within_int8_bound(zeros):
    """Fewer than SMALL_TILE tokens on avx512: vnni.matmul_q4's 1-token tiles, the same int8 bound."""
    rng = np.random.default_rng(7 + zeros)
    t, w = encoded(rng, "q4", 19, 576, 0.0, 128, **({"zeros": True} if zeros else {}))
    previous = K.selected_path()
    K.set_path("avx512")
    try:
        for tokens in (2, SMALL_TILE - 1):
            assert matmul_kernel(K.prepare(t), "avx512", tokens) == "vnni"
            x = rng.standard_normal((tokens, 576)).astype(np.float32)
            out = np.full((tokens, 19), np.nan, np.float32)
            K.linear(x, t, out)
            err = np.abs(out - x.astype(np.float64) @ w.T)
            assert np.all(err <= int8_activation_bound(w, x, 128)), (tokens, float(err.max()))
    finally:
        K.set_path(previous)


@pytest.mark.skipif("avx512" not in K.available_paths(), reason="needs an AVX-512 VNNI CPU")
@pytest.mark.parametrize("rows,cols", [(9, 256), (17, 576), (13, 200), (37, 129), (3, 5000)])
def test_avx512_q8_tile_matmul_within_int8_bound(rows, cols):
    """Dense q8 from SMALL_TILE tokens on avx512: avx2.matmul's VNNI q8 tiles (signed codes offset by 128, tail bytes
    loaded as code 0), within the int8 bound; fewer tokens stay float."""
    rng = np.random.default_rng(rows * cols)
    t, w = encoded(rng, "q8", rows, cols, 0.0, 128)
    previous = K.selected_path()
    K.set_path("avx512")
    try:
        assert matmul_kernel(K.prepare(t), "avx512", SMALL_TILE - 1) == "float"
        for tokens in (SMALL_TILE, SMALL_TILE + 1, AVX2_TILE - 1, AVX2_TILE, AVX2_TILE + 3, 33):
            assert matmul_kernel(K.prepare(t), "avx512", tokens) == "vnni"
            x = rng.standard_normal((tokens, cols)).astype(np.float32)
            x[tokens // 2] *= 100.0
            out = np.full((tokens, rows), np.nan, np.float32)
            K.linear(x, t, out)
            err = np.abs(out - x.astype(np.float64) @ w.T)
            assert np.all(err <= int8_activation_bound(w, x, 128)), (tokens, float(err.max()))
    finally:
        K.set_path(previous)

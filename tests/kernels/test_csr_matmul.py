"""The CSR matmuls (kernels/matmul/csr.py, kernels/matmul/vnni_csr.py) against a float64 reference, called
directly so that every kind runs here whatever path linear() would choose: token tiles of 32 and
16, several column chunks and row blocks, sparsity up to 100%."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_reference import encoded, float_bound, int8_activation_bound

import zoo.kernels as K
from zoo.kernels.dispatch import matmul_kernel
from zoo.kernels.layout import Kind
from zoo.kernels.matmul import csr as C

KINDS = {"sparse-q4": Kind.SPARSE_Q4, "sparse-q8": Kind.SPARSE_Q8, "sparse-f16": Kind.SPARSE_F16}


def _run(t, kind, rows, cols, gs, x):
    p = t.parts
    values = p["values"].reshape(-1)
    values = values.view(np.uint16) if kind == Kind.SPARSE_F16 else values.view(np.uint8)
    scales = p["scales"].reshape(-1).view(np.uint16) if kind != Kind.SPARSE_F16 else np.zeros(1, np.uint16)
    out = np.full((x.shape[0], rows), np.nan, np.float32)
    C.matmul_csr(p["bitmask"].reshape(-1), p["row_offsets"], values, scales, int(kind), rows, cols, gs, x.reshape(-1),
                 x.shape[0], out.reshape(-1))
    return out


@pytest.mark.parametrize("encoding", list(KINDS))
def test_csr_matmul_matches_reference(encoding):
    rng = np.random.default_rng(KINDS[encoding])
    # one row; columns not a multiple of 64; more rows than a block; more columns than a chunk
    for rows, cols, gs in ((1, 70, 64), (13, 200, 64), (70, 129, 64), (5, C.CHUNK_COLS * 2 + 77, 128),
                           (9, 333, 192)):
        for sparsity in (0.0, 0.5, 0.9, 0.99, 1.0):
            t, w = encoded(rng, encoding, rows, cols, sparsity, gs)
            for tokens in (2, 17, 33):  # last tile 16 wide (2, 33) or 32 wide (17)
                x = rng.standard_normal((tokens, cols)).astype(np.float32)
                out = _run(t, KINDS[encoding], rows, cols, gs, x)
                err = np.abs(out - x.astype(np.float64) @ w.T)
                assert np.all(err <= float_bound(w, x)), (encoding, rows, cols, sparsity, tokens, err.max())


def test_csr_matmul_nan_reaches_only_rows_storing_it():
    rng = np.random.default_rng(9)
    t, w = encoded(rng, "sparse-q4", 40, 300, 0.7, 64)
    x = rng.standard_normal((20, 300)).astype(np.float32)
    x[:, 7] = np.nan
    out = _run(t, Kind.SPARSE_Q4, 40, 300, 64, x)
    stores = w[:, 7] != 0
    assert stores.any() and not stores.all()
    assert np.isnan(out[:, stores]).all() and not np.isnan(out[:, ~stores]).any()


def test_bit_table_lists_set_bits():
    lut = C.BIT_TABLE.reshape(256, 8)
    for b in (0, 1, 0x80, 0xA5, 0xFF):
        bits = [j for j in range(8) if b >> j & 1]
        assert list(lut[b, :len(bits)]) == bits


needs_avx512 = pytest.mark.skipif("avx512" not in K.available_paths(), reason="the VNNI CSR kernel is AVX-512 only")


@needs_avx512
@pytest.mark.parametrize("encoding", ["sparse-q4", "sparse-q8"])
def test_vnni_csr_matmul_within_int8_bound(encoding):
    """The avx512 VNNI CSR kernel: int8 activations, so the int8 bound; groups padded to kq quads
    with kq below, at and above what the groups hold (1 = most groups take the longer loop)."""
    from zoo.kernels.matmul import vnni_csr as V

    rng = np.random.default_rng(20 + KINDS[encoding])
    for rows, cols, gs in ((1, 70, 64), (13, 200, 64), (40, 129, 64), (5, 1111, 128), (9, 333, 192)):
        for sparsity in (0.0, 0.5, 0.9, 0.99, 1.0):
            t, w = encoded(rng, encoding, rows, cols, sparsity, gs)
            p = t.parts
            for kq in (1, V.quads_per_group(1.0 - sparsity, gs), 9):
                for tokens in (2, 33):
                    x = rng.standard_normal((tokens, cols)).astype(np.float32)
                    out = np.full((tokens, rows), np.nan, np.float32)
                    xt, xdt = K.quantize_input(x).tiles(gs)
                    V.matmul_vcsr(p["bitmask"].reshape(-1), p["row_offsets"], p["values"].reshape(-1).view(np.uint8),
                                  p["scales"].reshape(-1).view(np.uint16), encoding == "sparse-q4", rows, cols, gs, kq,
                                  xt, xdt, tokens, out.reshape(-1))
                    err = np.abs(out - x.astype(np.float64) @ w.T)
                    assert np.all(err <= int8_activation_bound(w, x, gs)), (encoding, rows, cols, sparsity, kq, tokens)


@needs_avx512
def test_avx512_dispatch_by_density():
    """The density is measured once in prepare() from the stored count: VNNI CSR at and below VCSR_DENSITY
    with enough tokens (fewer at higher sparsity), tiles otherwise."""
    rng = np.random.default_rng(4)
    for sparsity, tokens, want in ((0.3, 32, "vnni"), (0.7, 32, "vcsr"), (0.7, 8, "vnni"), (0.95, 12, "vcsr"),
                                   (0.95, 4, "vnni")):
        t, _ = encoded(rng, "sparse-q4", 64, 512, sparsity, 128)
        assert matmul_kernel(K.prepare(t), "avx512", tokens) == want, (sparsity, tokens)
        assert matmul_kernel(K.prepare(t), "portable", tokens) == "csr"

"""tile4-q4 kernels (kernels/matvec/tile4.py, kernels/matmul/tile4.py) against a float64 reference of the decoded weight, on every path,
and inside the fused decode step."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from kernel_reference import float_bound, int8_activation_bound

import zoo.kernels as K
from zoo.errors import KernelError
from zoo.format import ArtifactWriter, decode, encode, expected_tensors
from zoo.kernels.ir import tile4_generic as tile4_generic_ir
from zoo.kernels.ir import tile4_x86 as tile4_ir
from zoo.kernels.matvec import tile4
from zoo.synthetic import tile_weight

PATHS = K.available_paths()
KEEPS = (16, 32, 48, 64)
# rows x cols: one tile, a narrow last group (70, 200, 129, 1000, 576), a group narrower than K (70 -> 6 wide)
SHAPES = [(4, 70), (16, 200), (36, 129), (64, 384), (8, 1000), (12, 576)]


def tile_tensor(rng, rows, cols, keep):
    t = encode(tile_weight(rng, rows, cols, keep), "tile4-q4", group_size=128, keep=keep)
    return t, decode(t).astype(np.float64)


@pytest.mark.parametrize("keep", KEEPS)
def test_matvec_and_matmul_every_path(path, keep):
    """The SIMD paths quantize activations to int8 per 128 columns (bounded error), matvec and matmul;
    the portable path is float32."""
    rng = np.random.default_rng(keep)
    for rows, cols in SHAPES:
        t, w = tile_tensor(rng, rows, cols, keep)
        for tokens in (None, 1, 7):
            x = rng.standard_normal((cols,) if tokens is None else (tokens, cols)).astype(np.float32)
            y = K.linear(x, t)
            ref = x.astype(np.float64) @ w.T
            int8 = path != "portable"  # the SIMD matmul runs the matvec's int8 tiles token by token
            bound = int8_activation_bound(w, x, 128) if int8 else float_bound(w, x)
            assert y.shape == ref.shape
            assert np.all(np.abs(y - ref) <= bound), (rows, cols, tokens, float(np.abs(y - ref).max()))


def test_simd_paths_agree_and_error_is_small():
    """avx512 and avx2 run the same integer arithmetic: equal results; the int8 error stays ~1% of the output."""
    rng = np.random.default_rng(5)
    t, w = tile_tensor(rng, 256, 1536, 32)
    x = rng.standard_normal(1536).astype(np.float32)
    ref = w @ x
    got = {}
    for p in [p for p in PATHS if p != "portable"]:
        K.set_path(p)
        got[p] = K.linear(x, t)
    K.set_path(PATHS[-1])
    for y in got.values():
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.02
    if len(got) == 2:
        assert np.array_equal(got["avx512"], got["avx2"])


def test_nan_activation_reaches_the_outputs(path):
    rng = np.random.default_rng(6)
    t, _ = tile_tensor(rng, 8, 256, 64)
    x = np.ones(256, np.float32)
    x[3] = np.nan
    assert np.isnan(K.linear(x, t)).any()


def test_prepare_refuses_inconsistent_parts():
    rng = np.random.default_rng(7)
    t, _ = tile_tensor(rng, 8, 256, 32)
    bad_rows = type(t)("tile4-q4", (6, 256), t.parts, 128)
    with pytest.raises(KernelError, match="multiple of 4"):
        K.prepare(bad_rows)
    with pytest.raises(KernelError, match="group_size 128"):
        K.prepare(type(t)("tile4-q4", t.shape, t.parts, 64))
    short = dict(t.parts, qweight=t.parts["qweight"][:, :40].copy())
    with pytest.raises(KernelError, match="qweight"):
        K.prepare(type(t)("tile4-q4", t.shape, short, 128))


def test_generic_ir_is_target_independent():
    """The portable path's IR names no target intrinsic or feature: any LLVM backend compiles it."""
    text = tile4_generic_ir.module()
    assert "llvm.x86" not in text and "target-features" not in text and "llvm.aarch64" not in text
    assert all(f"@zoo_t4p_dot_{k}(" in text for k in KEEPS)


@njit
def _stage_every_way(mask, t, ng, keep, xp, out):
    """out[0] compress, out[1] scalar, out[2] bits_K (K < 64): the three stagings of tile t."""
    tile4._stage_c(mask, t * 2 * ng, xp, 0, ng, keep, out[0], 0)
    tile4._stage_s(mask, t * 2 * ng, xp, 0, ng, keep, out[1], 0)
    if keep == 16:
        tile4._sb16(mask, t * 2 * ng, xp, 0, ng, keep, out[2], 0)
    elif keep == 32:
        tile4._sb32(mask, t * 2 * ng, xp, 0, ng, keep, out[2], 0)
    elif keep == 48:
        tile4._sb48(mask, t * 2 * ng, xp, 0, ng, keep, out[2], 0)


@pytest.mark.parametrize("keep", KEEPS)
def test_portable_stagings_agree(keep):
    """Every staging of the portable path (only one runs on a given CPU) gathers each tile's kept
    activations in column order, group g at g*K, including a narrow last group's padding (zeros)."""
    rng = np.random.default_rng(10 + keep)
    rows, cols = 12, 900  # the last group is 4 columns wide: K - 4 padding positions kept
    t, _ = tile_tensor(rng, rows, cols, keep)
    mask = t.parts["tilemask"].reshape(-1)
    ng = -(-cols // 128)
    x = rng.standard_normal(cols).astype(np.float32)
    xp = np.zeros(ng * 128 + 64, np.float32)
    xp[:cols] = x
    for tile in range(rows // 4):
        bits = np.unpackbits(mask[tile * 2 * ng:(tile + 1) * 2 * ng].view(np.uint8), bitorder="little")
        want = xp[:ng * 128][bits.astype(bool)]
        assert want.size == ng * keep
        got = np.full((3, ng * keep + 64), np.nan, np.float32)
        _stage_every_way(mask, tile, ng, keep, xp, got)
        for way in range(3 if keep < 64 else 2):
            assert np.array_equal(got[way, :ng * keep], want), (tile, way)


def test_ir_has_one_dot_per_keep():
    for isa in ("avx512", "avx2"):
        text = tile4_ir.module(isa)
        assert all(f"@zoo_t4_dot_{isa}_{k}(" in text for k in KEEPS)


@pytest.mark.parametrize("keep", [16, 48, 64])
def test_fused_rows_equal_linear(keep):
    """The fused step's row blocks on tile4-q4 weights (stacked q|k|v, SwiGLU gate|up) equal `linear`."""
    from zoo.kernels import decode as fused

    if "avx2" not in PATHS:
        pytest.skip("the fused step needs the avx2 or avx512 path; this CPU has neither")
    rng = np.random.default_rng(keep)

    def weight(rows, cols):
        return K.prepare(tile_tensor(rng, rows, cols, keep)[0])

    q, k, v, g, u = weight(320, 320), weight(64, 320), weight(36, 320), weight(864, 320), weight(864, 320)
    plan = fused.plan_llama([dict(attn_q=q, attn_k=k, attn_v=v, attn_output=q, ffn_gate=g, ffn_up=u, ffn_down=g)], q)
    x = rng.standard_normal(320).astype(np.float32)
    want = np.concatenate([K.linear(x, w) for w in (q, k, v)])
    got = np.zeros(want.size, np.float32)
    fused._linear_rows(plan.meta, 0, 3, x, plan.isa, got, False)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    res = np.ones(320, np.float32)
    fused._linear_rows(plan.meta, 3, 1, x, plan.isa, res, True)  # o adds into the residual stream
    assert np.abs(res - 1.0 - K.linear(x, q)).max() <= 1e-6 * np.abs(res).max()
    hid = np.zeros(2 * 864, np.float32)
    fused._swiglu_rows(plan.meta[4], plan.meta[5], x, plan.isa, hid[:864], hid[864:])
    assert np.abs(hid[864:] - K.linear(x, u)).max() <= 1e-6 * np.abs(hid[864:]).max()


@pytest.mark.parametrize("fast", [p for p in ("avx2", "avx512") if p in PATHS])
def test_fused_model_matches_op_by_op(tmp_path, fast):
    """A Llama whose linears are all tile4-q4 decodes through the fused step, as op by op does."""
    from zoo.runtime.model import Model
    from zoo.synthetic import TINY_LLAMA, random_tensor

    config = dict(TINY_LLAMA, n_layers=2, dim=320, hidden_dim=864, n_heads=5, n_kv_heads=1, head_dim=64,
                  vocab_size=96, tied_embeddings=False)
    rng = np.random.default_rng(3)
    with ArtifactWriter(tmp_path / "m", config) as writer:
        for name, shape in expected_tensors(config).items():
            if len(shape) == 2 and name != "token_embd.weight":
                writer.add(name, encode(tile_weight(rng, *shape, 48), "tile4-q4", group_size=128, keep=48))
            else:
                writer.add(name, encode(random_tensor(rng, name, shape, 0.0), "dense", dtype="F16"))
        path = writer.finish({"card_version": 1, "name": "tile4-test", "architecture": "llama"})
    previous = K.selected_path()
    K.set_path(fast)
    try:
        fused, plain = Model.load(path), Model.load(path, fused=False)
        assert fused.plan is not None and plain.plan is None
        prompt, steps = [1, 5, 9, 2], [3, 11, 0, 23, 6]
        for m in (fused, plain):
            m.forward(prompt, 0)
        got = np.array([fused.forward([t], len(prompt) + i).copy() for i, t in enumerate(steps)])
        want = np.array([plain.forward([t], len(prompt) + i).copy() for i, t in enumerate(steps)])
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    finally:
        K.set_path(previous)

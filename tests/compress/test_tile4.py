"""Pattern tile4 (4-row tiles share one column mask, K of every 128 columns kept) and the encoding choice:
tile4-q4 for tile4 at 4 bits, plain q4 for weights pruned below the sparse-q4 crossover (90%)."""

from __future__ import annotations

import hashlib
import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.compress import InputStats, LinearRecipe, Recipe, compress, compress_linear
from zoo.compress.masks import TILE4_KEEP, pattern_sparsity, select, tile4_keep
from zoo.compress.obs import obs_compress
from zoo.compress.quant import SPARSE_Q4_MIN_SPARSITY, rtn
from zoo.errors import CompressError
from zoo.format import decode
from zoo.format.encode import unpack_mask

from .conftest import tiny_config, write_tiny

ROWS, COLS, TOKENS = 64, 320, 768  # 320 = two full groups of 128 + a narrower last group of 64

format_encode = importlib.import_module("zoo.format.encode")  # the module (zoo.format.encode is also a function)
HAS_TILE4 = hasattr(format_encode, "pack_tile4_q4")
needs_tile4_q4 = pytest.mark.skipif(not HAS_TILE4, reason="format.encode.pack_tile4_q4 has not landed yet")


@pytest.fixture(scope="module")
def layer():
    """Correlated inputs with outlier features, as in test_algorithms, on a weight with a narrow last group."""
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((COLS, COLS)) * 0.3 + np.eye(COLS)
    x = (rng.standard_normal((TOKENS, COLS)) @ mix * np.exp(rng.standard_normal(COLS))).astype(np.float32)
    w = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    stats = InputStats(COLS, need_hessian=True)
    stats.add(x)
    return x, w, stats


def rel_error(x: np.ndarray, w: np.ndarray, w_hat: np.ndarray) -> float:
    return float(np.linalg.norm(x @ (w_hat - w).T) / np.linalg.norm(x @ w.T))


def assert_tile4(mask: np.ndarray, keep: int) -> None:
    """Shared by the 4 rows of every tile; exactly min(keep, width) kept in every (tile, 128-column group)."""
    rows, cols = mask.shape
    tiles = mask.reshape(rows // 4, 4, cols)
    assert np.all(tiles == tiles[:, :1]), "the rows of a tile keep different columns"
    for g0 in range(0, cols, 128):
        width = min(128, cols - g0)
        assert np.all(mask[:, g0:g0 + width].sum(axis=1) == min(keep, width)), (g0, width)


# --- the mask --------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(tiles=st.integers(1, 6), cols=st.integers(1, 400), sparsity=st.sampled_from(sorted(TILE4_KEEP)),
       seed=st.integers(0, 99), ties=st.booleans())
def test_tile4_mask_shape(tiles, cols, sparsity, seed, ties):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (4 * tiles, cols)).astype(np.float32) if ties else rng.random((4 * tiles, cols))
    keep = TILE4_KEEP[sparsity]
    mask = select(scores, sparsity, "tile4")
    assert_tile4(mask, keep)
    tile_scores = scores.reshape(tiles, 4, cols).sum(axis=1, dtype=np.float64)
    tmask = mask[::4]
    for g0 in range(0, cols, 128):  # the kept columns are the tile's best by the summed score
        s, m = tile_scores[:, g0:g0 + 128], tmask[:, g0:g0 + 128]
        lowest_kept = np.where(m, s, np.inf).min(axis=1)
        highest_pruned = np.where(m, -np.inf, s).max(axis=1)
        assert np.all(lowest_kept >= highest_pruned)
    np.testing.assert_array_equal(mask, select(scores, sparsity, "tile4"))  # deterministic


def test_narrow_last_group_keeps_min_k_width():
    scores = np.random.default_rng(0).random((8, 576))  # SmolLM2's 576 = 4 x 128 + 64
    assert select(scores, 0.5, "tile4")[:, 512:].all()  # K = 64 = the width: all kept
    assert (select(scores, 0.75, "tile4")[:, 512:].sum(axis=1) == 32).all()
    assert select(scores[:, :40], 0.5, "tile4").all()  # a group narrower than K keeps every real column
    assert select(scores[:, :152], 0.75, "tile4")[:, 128:].all()  # width 24 < K = 32


def test_tile4_sparsity_levels():
    assert [tile4_keep(s) for s in (0.5, 0.625, 0.75, 0.875)] == [64, 48, 32, 16]
    assert pattern_sparsity("tile4", 0.75) == 0.75


@pytest.mark.parametrize("sparsity", [None, 0.0, 0.3, 0.6, 0.7, 0.9])
def test_bad_tile4_sparsity_is_a_one_line_error_listing_the_levels(layer, sparsity):
    _, w, stats = layer
    for call in (lambda: Recipe(method="wanda", pattern="tile4", sparsity=sparsity).validated(),
                 lambda: select(np.abs(w), sparsity, "tile4"),
                 lambda: obs_compress(w, stats.xtx, sparsity=sparsity or 0.3, pattern="tile4")):
        with pytest.raises(CompressError) as err:
            call()
        assert "\n" not in str(err.value) and "0.5, 0.625, 0.75, 0.875" in str(err.value)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_rows_not_divisible_by_four_is_a_one_line_error(layer, method):
    _, w, stats = layer
    with pytest.raises(CompressError, match="divisible by 4") as err:
        compress_linear(w[:62], stats, LinearRecipe(method=method, sparsity=0.5, pattern="tile4"))
    assert "\n" not in str(err.value)


def test_recipe_refusals():
    with pytest.raises(CompressError, match="profile uniform"):
        Recipe(method="wanda", pattern="tile4", sparsity=0.75, profile="owl").validated()
    with pytest.raises(CompressError, match="profile uniform"):
        Recipe(method="sparsegpt", pattern="tile4", sparsity=0.75, profile="sensitivity").validated()
    with pytest.raises(CompressError, match="group size 128"):
        Recipe(method="wanda", pattern="tile4", sparsity=0.75, bits=4, group_size=64).validated()
    with pytest.raises(CompressError, match="blocksize 128"):
        Recipe(method="sparsegpt", pattern="tile4", sparsity=0.75, blocksize=64).validated()
    r = Recipe(method="wanda", pattern="tile4", sparsity=0.875, bits=8, group_size=64).validated()
    assert r.sparsity == 0.875  # sparse-q8 holds any mask: its group size is free


# --- the methods -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", sorted(TILE4_KEEP))
def test_every_method_gives_the_tile4_shape_and_zeros_stay_zero(layer, method, sparsity):
    _, w, stats = layer
    t, mask = compress_linear(w, stats, LinearRecipe(method=method, sparsity=sparsity, pattern="tile4"))
    assert_tile4(mask, TILE4_KEEP[sparsity])
    assert t.encoding == "sparse-f16"  # bits 16: the tile mask in a per-row bitmask
    dense = decode(t)
    assert np.all(dense[~mask] == 0)


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875])
def test_sparsegpt_tile4_reconstructs_better_than_magnitude_and_wanda(layer, sparsity):
    x, w, stats = layer
    err = {m: rel_error(x, w, decode(compress_linear(w, stats, LinearRecipe(method=m, sparsity=sparsity,
                                                                            pattern="tile4"))[0]))
           for m in ("magnitude", "wanda", "sparsegpt")}
    assert err["sparsegpt"] < err["wanda"] < err["magnitude"], err
    unstructured = rel_error(x, w, decode(compress_linear(w, stats, LinearRecipe(method="sparsegpt", sparsity=sparsity))[0]))
    assert unstructured < err["sparsegpt"]  # sharing columns across 4 rows costs something


def test_sparsegpt_tile4_mask_follows_the_updated_weights(layer):
    """The mask of block 2 is chosen after block 1's error was spread into it: not the mask of the original weights."""
    _, w, stats = layer
    res = obs_compress(w, stats.xtx, sparsity=0.75, pattern="tile4")
    assert_tile4(res.mask, 32)
    assert np.all(res.weight[~res.mask] == 0)
    u = stats.inverse_factor(0.01)[0]
    static = select(w ** 2 / np.diag(u)[None, :] ** 2, 0.75, "tile4")
    np.testing.assert_array_equal(res.mask[:, :128], static[:, :128])  # block 1 sees the original weights
    assert not np.array_equal(res.mask[:, 128:], static[:, 128:])


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
def test_joint_gptq_codes(layer, method):
    x, w, stats = layer
    if method == "sparsegpt":
        res = obs_compress(w, stats.xtx, sparsity=0.75, pattern="tile4", bits=4, group_size=128)
    else:
        mask = select(np.abs(w) * stats.col_norms[None, :].astype(np.float32), 0.75, "tile4")
        res = obs_compress(np.where(mask, w, 0), stats.xtx, fixed_mask=mask, bits=4, group_size=128, act_order=True)
    assert_tile4(res.mask, 32)
    assert res.codes.min() >= -7 and res.codes.max() <= 7
    assert np.all(res.codes[~res.mask] == 0) and np.all(res.weight[~res.mask] == 0)
    assert res.scales.shape == (ROWS, 3) and res.scales.dtype == np.float16
    expect = res.codes.astype(np.float32) * np.repeat(res.scales.astype(np.float32), 128, axis=1)[:, :COLS]
    np.testing.assert_array_equal(res.weight, expect)
    # GPTQ after (or with) the pruning does at least as well as rounding the pruned weights to nearest
    pruned = compress_linear(w, stats, LinearRecipe(method=method, sparsity=0.75, pattern="tile4"))[0]
    codes, scales = rtn(decode(pruned), res.mask, 4, 128)
    then_rtn = codes.astype(np.float32) * np.repeat(scales.astype(np.float32), 128, axis=1)[:, :COLS]
    assert rel_error(x, w, res.weight) <= rel_error(x, w, then_rtn)


# --- the encodings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,quantizer", [("sparsegpt", "gptq"), ("sparsegpt", "rtn"), ("wanda", "gptq"),
                                              ("magnitude", "rtn")])
def test_pack_hands_codes_tile_mask_scales_and_keep_to_pack_tile4_q4(layer, monkeypatch, method, quantizer):
    """The contract with format.encode.pack_tile4_q4, whether or not it has landed: what it is given."""
    _, w, stats = layer
    calls = []

    def fake(codes, kept, scales, keep):
        calls.append((codes, kept, scales, keep))
        return "encoded"

    monkeypatch.setattr(format_encode, "pack_tile4_q4", fake, raising=False)
    t, mask = compress_linear(w, stats, LinearRecipe(method=method, sparsity=0.625, pattern="tile4", bits=4,
                                                     quantizer=quantizer))
    assert t == "encoded" and len(calls) == 1
    codes, kept, scales, keep = calls[0]
    assert keep == 48 and kept.dtype == bool and kept.shape == (ROWS // 4, COLS)
    np.testing.assert_array_equal(np.repeat(kept, 4, axis=0), mask)
    assert codes.dtype == np.int8 and codes.shape == (ROWS, COLS) and codes.min() >= -7 and codes.max() <= 7
    assert np.all(codes[~mask] == 0)
    assert scales.dtype == np.float16 and scales.shape == (ROWS, 3)


@needs_tile4_q4
@pytest.mark.parametrize("method,quantizer", [("sparsegpt", "gptq"), ("wanda", "rtn")])
def test_tile4_q4_decodes_to_the_pruned_weights(layer, method, quantizer):
    _, w, stats = layer
    t, mask = compress_linear(w, stats, LinearRecipe(method=method, sparsity=0.75, pattern="tile4", bits=4,
                                                     quantizer=quantizer, act_order=False))
    assert t.encoding == "tile4-q4"
    dense = decode(t)
    assert np.all(dense[~mask] == 0)
    assert np.count_nonzero(dense) <= mask.sum()
    assert_tile4(unpack_mask(np.asarray(t.parts["tilemask"]), COLS).repeat(4, axis=0), 32)
    np.testing.assert_array_equal(unpack_mask(np.asarray(t.parts["tilemask"]), COLS).repeat(4, axis=0), mask)
    if quantizer == "gptq":  # without act-order the stored codes and scales are exactly the joint sweep's
        res = obs_compress(w, stats.xtx, sparsity=0.75, pattern="tile4", bits=4, group_size=128)
        np.testing.assert_array_equal(dense, res.weight)
    if quantizer == "rtn":  # round to nearest of the pruned weights: within half a step of each group's grid
        step = np.repeat(rtn(w, mask, 4, 128)[1].astype(np.float32), 128, axis=1)[:, :COLS]
        assert np.all(np.abs(dense - np.where(mask, w, 0)) <= 0.5 * step * (1 + 1e-3) + 1e-7)


@pytest.mark.parametrize("method,pattern,sparsity", [("wanda", "unstructured", 0.3), ("sparsegpt", "unstructured", 0.7),
                                                      ("magnitude", "2:4", None)])
@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
def test_pruned_below_the_sparse_q4_crossover_is_stored_as_q4(layer, method, pattern, sparsity, quantizer):
    x, w, stats = layer
    r = LinearRecipe(method=method, sparsity=pattern_sparsity(pattern, sparsity), pattern=pattern, bits=4,
                     quantizer=quantizer)
    t, mask = compress_linear(w, stats, r)
    assert t.encoding == "q4" and "zeros" not in t.parts
    assert 0 < (~mask).mean() < SPARSE_Q4_MIN_SPARSITY
    dense = decode(t)
    assert np.all(dense[~mask] == 0)  # pruned weights are code 0, value exactly 0
    assert rel_error(x, w, dense) < 0.5
    if quantizer == "rtn":  # the same values sparse-q4 would have stored
        codes, scales = rtn(w if method != "sparsegpt" else dense, mask, 4, 128)
        if method != "sparsegpt":
            np.testing.assert_array_equal(dense, codes * np.repeat(scales.astype(np.float32), 128, axis=1)[:, :COLS])


def test_pruned_past_the_crossover_stays_sparse_q4(layer):
    _, w, stats = layer
    for sparsity in (0.9, 0.95):
        t, _ = compress_linear(w, stats, LinearRecipe(method="wanda", sparsity=sparsity, bits=4))
        assert t.encoding == "sparse-q4"
    t, _ = compress_linear(w, stats, LinearRecipe(method="wanda", sparsity=0.3, bits=8))
    assert t.encoding == "sparse-q8"  # the q4 rule is for 4-bit weights only


# --- the pipeline ----------------------------------------------------------------------------------------

FAST = dict(samples=4, seq_len=48)


@pytest.fixture(scope="module")
def narrow_llama(tmp_path_factory, tokenizer_json):
    """A tiny Llama whose widths are not multiples of 128: dim 160 (128 + 32), hidden 288 (2 x 128 + 32)."""
    vocab = len(__import__("json").loads(tokenizer_json)["model"]["vocab"])
    config = {**tiny_config("llama", vocab=vocab), "dim": 160, "hidden_dim": 288, "head_dim": 40}
    return write_tiny(tmp_path_factory.mktemp("m") / "narrow-llama", config, tokenizer_json)


def test_pipeline_q4_rule_and_the_cards_encodings(tiny_llama, tmp_path):
    card = compress(tiny_llama, tmp_path / "w30", Recipe(method="wanda", sparsity=0.3, bits=4, **FAST), evaluate=False)
    from zoo.card import validate
    from zoo.format import open_artifact

    art = open_artifact(tmp_path / "w30")
    assert {t.encoding for n, t in art.tensors.items() if n.startswith("blk.") and len(t.shape) == 2} == {"q4"}
    c = card["compression"]
    assert c["encodings"] == {"q4": 14, "q8": 1}
    assert "below 90%" in c["encoding_reasons"]["q4"] and "tied" in c["encoding_reasons"]["q8"]
    assert card["metrics"]["sparsity"] == pytest.approx(0.3, abs=5e-3)  # as sparse as before (rows round)
    validate(card, strict=True)  # the card schema knows compression.encodings


@needs_tile4_q4
@pytest.mark.parametrize("method,quantizer", [("sparsegpt", "gptq"), ("wanda", "rtn")])
def test_pipeline_writes_tile4_q4_that_decodes_to_the_pruned_weights(narrow_llama, tmp_path, method, quantizer):
    from zoo.convert.source import open_source
    from zoo.evaluate import perplexity
    from zoo.format import open_artifact

    out = tmp_path / "t4"
    card = compress(narrow_llama, out, Recipe(method=method, sparsity=0.75, pattern="tile4", bits=4, quantizer=quantizer,
                                              **FAST), evaluate=False)
    art = open_artifact(out)
    art.validate()
    linears = {n: t for n, t in art.tensors.items() if n.startswith("blk.") and len(t.shape) == 2}
    assert {t.encoding for t in linears.values()} == {"tile4-q4"} and len(linears) == 14
    assert card["compression"]["encodings"] == {"tile4-q4": 14, "q8": 1}
    assert "tile4" in card["compression"]["encoding_reasons"]["tile4-q4"]
    src = open_source(narrow_llama)
    widths = set()
    for name, t in linears.items():
        dense = decode(t)
        rows, cols = t.shape
        widths.add(cols % 128)
        kept = unpack_mask(np.asarray(t.parts["tilemask"]), cols).repeat(4, axis=0)  # the stored tile mask
        assert_tile4(kept, 32)
        assert np.all(dense[~kept] == 0), name
        if quantizer == "rtn" and name.startswith("blk.0."):  # layer 0: RTN of the Wanda-pruned original weights
            w = src.tensor(name)
            codes, scales = rtn(w, kept, 4, 128)
            step = np.repeat(scales.astype(np.float32), 128, axis=1)[:, :cols]
            assert np.all(np.abs(dense - np.where(kept, w, 0)) <= 0.5 * step * (1 + 1e-3) + 1e-7), name
            np.testing.assert_array_equal(dense, codes * step)  # exactly the codes and scales RTN chose
    assert widths == {32}  # every linear had a narrower last group (160 = 128 + 32, 288 = 2 x 128 + 32)
    assert card["metrics"]["sparsity"] < 0.75  # the narrow last groups keep min(K, width) of their columns
    assert perplexity(out, ctx=48, max_windows=1, engine="reference")["perplexity"] > 1


@needs_tile4_q4
def test_tile4_same_recipe_same_bytes(tiny_llama, tmp_path):
    r = Recipe(method="sparsegpt", sparsity=0.875, pattern="tile4", bits=4, quantizer="gptq", seed=2, **FAST)
    compress(tiny_llama, tmp_path / "a" / "m", r, evaluate=False)
    compress(tiny_llama, tmp_path / "b" / "m", r, evaluate=False)
    digest = lambda d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}  # noqa: E731
    assert digest(tmp_path / "a" / "m") == digest(tmp_path / "b" / "m")

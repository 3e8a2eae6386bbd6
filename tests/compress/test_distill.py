"""Distillation recovery (zoo compress --recover distill|both): the whole compressed model learns the dense model's
next-token distributions; the held-out KL falls, masks, zeros and encodings stay, runs repeat byte for byte, and a
model that does not fit in memory is refused in one line."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import yaml

from zoo.compress import Recipe, compress
from zoo.compress.calibration import calibration_windows
from zoo.convert.source import open_source
from zoo.errors import CompressError
from zoo.format import ArtifactWriter, decode, kept_mask, open_artifact

torch = pytest.importorskip("torch")  # the `train` extra; scripts/setup.sh --test installs it

from zoo.compress.distill import _Model, check_memory, distill  # noqa: E402

BASE = dict(samples=16, seq_len=64, seed=3, recover_tokens=4096)


def _logits(config, path_or_source, tokens):
    """Logits of a whole model through the torch model (tests it against the numpy reference below)."""
    weights = {n: torch.from_numpy(decode(t)) for n, t in open_artifact(path_or_source).tensors.items()}
    return _Model(config, tokens.shape[1])(torch, weights, torch.from_numpy(tokens)).numpy()


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_mpt"])
def test_torch_model_matches_the_numpy_reference(model, request):
    from zoo.runtime.reference import logits

    path = request.getfixturevalue(model)
    art = open_artifact(path)
    tokens = np.random.default_rng(0).integers(0, art.config["vocab_size"], (2, 24))
    got = _logits(art.config, path, tokens)
    want = np.stack([logits(art.config, lambda n: decode(art.tensors[n]), t) for t in tokens])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("opts", [
    dict(method="sparsegpt", sparsity=0.5, pattern="tile4", bits=4, quantizer="gptq"),  # tile4-q4
    dict(method="wanda", sparsity=0.5, bits=4),  # q4 holding pruned zeros as codes: the mask is the zeros
    dict(method="sparsegpt", sparsity=0.9, bits=4),  # sparse-q4: the mask is the bitmask
])
def test_distillation_lowers_held_out_kl_and_keeps_masks_and_encodings(tiny_llama, tmp_path, opts):
    recipe = Recipe(**BASE, **opts, recover="none").validated()
    one_shot = tmp_path / "one-shot"
    compress(tiny_llama, one_shot, recipe, evaluate=False)
    source = open_source(tiny_llama)
    tokens = calibration_windows(source.tokenizer_json, 16, 64, 3, None, source.config["vocab_size"]).tokens
    before = open_artifact(one_shot)
    with ArtifactWriter(tmp_path / "out", before.config) as writer:
        report = distill(source, one_shot, writer, tokens, recipe.bits, 4096, 3, bool(recipe.sparsity))
        writer.finish({"card_version": 1, "name": "out"})
    assert report.replaced and report.kl_after < 0.99 * report.kl_before, report
    after = open_artifact(tmp_path / "out")
    trained = 0
    for name, enc in before.tensors.items():
        new = after.tensors[name]
        assert new.encoding == enc.encoding and new.shape == enc.shape and new.meta == enc.meta
        old_w, new_w = decode(enc), decode(new)
        if not name.startswith("blk.") or old_w.ndim == 1:
            assert np.array_equal(old_w, new_w), f"{name} is not a block linear and must not train"
            continue
        mask = kept_mask(enc)
        if mask is not None:
            assert np.array_equal(kept_mask(new), mask), f"{name}: the mask moved"
        if recipe.sparsity:
            zeros = old_w == 0 if mask is None else ~mask
            assert not np.any(new_w[zeros]), f"{name}: a pruned weight came back"
        trained += not np.array_equal(old_w, new_w)
    assert trained == sum(1 for n, t in before.tensors.items() if n.startswith("blk.") and len(t.shape) == 2)


def test_card_records_distillation_and_both(tiny_llama, tmp_path):
    opts = dict(method="sparsegpt", sparsity=0.5, pattern="tile4", bits=4, quantizer="gptq")
    card = compress(tiny_llama, tmp_path / "d", Recipe(**BASE, **opts, recover="distill"), eval_ctx=64, eval_windows=3)
    rec = card["compression"]["recovery"]
    assert rec["mode"] == "distill" and "error_before" not in rec
    assert rec["distill"]["kl_after"] < rec["distill"]["kl_before"] and rec["distill"]["steps"] == 4096 // (4 * 64)
    assert "KL" in rec["distill"]["objective"] and card["metrics"]["recovery_seconds"] > 0
    p = card["metrics"]["perplexity"]
    assert p["value"] < p["before_recovery"], p  # the tiny model's calibration and evaluation texts are alike
    assert not list(tmp_path.glob(".*")), "a staging, pre-distill or one-shot directory was left behind"
    both = compress(tiny_llama, tmp_path / "b", Recipe(**BASE, **opts, recover="both"), evaluate=False)
    rec = both["compression"]["recovery"]
    assert rec["mode"] == "both" and len(rec["error_before"]) == 2 and rec["distill"]["replaced"] in (True, False)
    # after block-wise recovery distillation trains at the lower rate, and the card says which
    assert card["compression"]["recovery"]["distill"]["learning_rate"].startswith("0.01 x")
    assert rec["distill"]["learning_rate"].startswith("0.003 x")
    shown = yaml.safe_load((tmp_path / "b" / "zoo.yaml").read_text())["compression"]["recovery"]
    assert shown["distill"]["kl_before"] == rec["distill"]["kl_before"]


def _digests(path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.suffix != ".yaml"}


def test_distillation_repeats_byte_for_byte(tiny_mpt, tmp_path):
    recipe = Recipe(**BASE, method="wanda", sparsity=0.5, bits=8, recover="distill")
    compress(tiny_mpt, tmp_path / "a", recipe, evaluate=False)
    compress(tiny_mpt, tmp_path / "b", recipe, evaluate=False)
    compress(tiny_mpt, tmp_path / "c", Recipe(**{**BASE, "recover": "none"}, method="wanda", sparsity=0.5, bits=8),
             evaluate=False)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b") != _digests(tmp_path / "c")


def test_a_model_too_large_for_memory_is_one_line():
    with pytest.raises(CompressError) as err:
        check_memory(7_000_000_000, 128, 512, 32000)  # a 7B: teacher, student and Adam need ~170 GB
    assert "\n" not in str(err.value) and "--recover blockwise" in str(err.value)
    check_memory(135_000_000, 32, 512, 49152)  # SmolLM2 fits

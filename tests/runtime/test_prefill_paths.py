"""Prefill through the int8 matmul kernels on every kernel path: q4 with 128-column groups (VNNI tiles on
avx512, AVX2 tiles on avx2), sparse-q4 (VNNI CSR) and tile4-q4, against the float64 numpy reference; the
linears of a Llama block share their quantized inputs (kernels.quantize_input)."""

from __future__ import annotations

import numpy as np
import pytest

import zoo.kernels as K
from zoo.format import decode, open_artifact
from zoo.runtime import reference as ref
from zoo.runtime.model import Model
from zoo.synthetic import TINY_LLAMA, TINY_MPT, write_random_model

LLAMA = dict(TINY_LLAMA, dim=256, hidden_dim=384, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64, vocab_size=64)
MPT = dict(TINY_MPT, dim=256, hidden_dim=512, vocab_size=64)


@pytest.fixture(params=K.available_paths())
def path(request):
    previous = K.selected_path()
    K.set_path(request.param)
    yield request.param
    K.set_path(previous)


@pytest.mark.parametrize("encoding,sparsity", [("q4", 0.0), ("sparse-q4", 0.6), ("tile4-q4", 0.5)])
@pytest.mark.parametrize("config", [LLAMA, MPT], ids=["llama", "mpt"])
def test_prefill_matches_reference_on_every_path(tmp_path, path, config, encoding, sparsity):
    d = write_random_model(tmp_path / "m", config, encoding=encoding, sparsity=sparsity, group_size=128, seed=3,
                           direct=encoding == "tile4-q4")
    art = open_artifact(d)
    ids = [int(i) for i in np.random.default_rng(1).integers(0, config["vocab_size"], 37)]  # 32 + a partial tile
    want = ref.logits(art.config, lambda n: decode(art.tensors[n]), ids, dtype=np.float64)
    got = Model.load(d, fused=False).forward(ids, 0, all_logits=True)
    # int8 activations: within 2% of the largest logit, as for the matvec kernels
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9

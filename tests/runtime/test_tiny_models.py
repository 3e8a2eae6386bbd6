"""The runtime on tiny models: transformers checkpoints converted with `convert`, and every encoding
checked against the dense numpy reference on the decoded weights (prefill in chunks, then decode)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from zoo.convert.convert import convert
from zoo.format import decode, open_artifact
from zoo.runtime import reference as ref
from zoo.runtime.model import Model
from zoo.synthetic import TINY_LLAMA, TINY_MPT, write_random_model


def _hf_models():
    """tests/convert/hf_models.py (tiny transformers checkpoints), loaded by path: test dirs are not packages."""
    spec = importlib.util.spec_from_file_location("zoo_tests_hf_models", Path(__file__).parents[1] / "convert" / "hf_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf = _hf_models()
IDS = [3, 17, 99, 256, 4, 4, 81, 200, 12, 7, 300, 1, 64, 65, 66, 2, 9, 410, 33, 5]


def _run(model: Model, ids: list[int], split: int) -> np.ndarray:
    """Logits [T, vocab]: prefill ids[:split] (chunked by the model), then decode one token at a time."""
    first = model.forward(ids[:split], 0, all_logits=True)
    rest = [model.forward([t], split + i).copy() for i, t in enumerate(ids[split:])]
    return np.concatenate([first, np.array(rest)]) if rest else first


@pytest.mark.parametrize("maker", ["save_llama", "save_mpt"], ids=["llama-awkward", "mpt"])
def test_converted_transformers_checkpoint_matches(tmp_path, maker):
    pytest.importorskip("transformers")
    model_hf = getattr(hf, maker)(tmp_path / "hf")
    art = convert(tmp_path / "hf", tmp_path / "zoo", encoding="f32")
    model = Model.load(art, chunk=8)
    got = _run(model, IDS, 13)
    want = hf.hf_logits(model_hf, IDS)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


ENCODINGS = ["dense", "q8", "q4", "sparse-q8", "sparse-q4", "sparse-f16"]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("config", [dict(TINY_LLAMA, n_layers=2), dict(TINY_LLAMA, rope_layout="interleaved"),
                                    dict(TINY_MPT, clip_qkv=0.05, n_heads=3)], ids=["llama", "llama-interleaved", "mpt"])
def test_every_encoding_matches_reference(tmp_path, config, encoding):
    path = write_random_model(tmp_path / "m", config, encoding=encoding, group_size=64,
                              sparsity=0.4 if encoding.startswith("sparse") else 0.0)
    art = open_artifact(path)
    ids = [i % config["vocab_size"] for i in IDS]
    want = ref.logits(art.config, lambda n: decode(art.tensors[n]), ids, dtype=np.float64)
    got = _run(Model.load(path, chunk=4), ids, 9)
    # dense weights: float32 rounding only; quantized: the kernels also quantize activations to int8
    tol = 1e-5 if encoding in ("dense", "sparse-f16") else 2e-2
    assert np.abs(got - want).max() <= tol * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_quantized_embedding_and_untied_head(tmp_path):
    """token_embd stored q8 (row lookup without densifying) and a separate output head."""
    from zoo.format import ArtifactWriter, encode, expected_tensors
    from zoo.synthetic import random_tensor

    config = dict(TINY_LLAMA, tied_embeddings=False)
    rng = np.random.default_rng(3)
    with ArtifactWriter(tmp_path / "m", config) as w:
        for name, shape in expected_tensors(config).items():
            t = random_tensor(rng, name, shape, 0.0)
            w.add(name, encode(t, "dense", dtype="F32") if len(shape) == 1 else encode(t, "q8", group_size=32))
        path = w.finish({"card_version": 1, "architecture": "llama"})
    art = open_artifact(path)
    ids = [i % 24 for i in IDS[:6]]
    got = _run(Model.load(path), ids, 3)
    want = ref.logits(art.config, lambda n: decode(art.tensors[n]), ids, dtype=np.float64)
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()

"""Fixtures: a tiny BPE tokenizer trained on the shipped calibration text and tiny random Llama/MPT artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zoo.evaluate import CALIBRATION_TEXT, EVALUATION_TEXT
from zoo.format import ArtifactWriter, encode, expected_tensors
from zoo.synthetic import random_tensor

VOCAB = 320


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    text = CALIBRATION_TEXT.read_text()[:60_000] + EVALUATION_TEXT.read_text()[:60_000]
    tok.train_from_iterator([text], trainer)
    return tok.to_str()


@pytest.fixture(scope="session")
def tokenizer_json() -> str:
    return _tokenizer_json()


def tiny_config(arch: str = "llama", n_layers: int = 2, vocab: int = VOCAB) -> dict:
    if arch == "llama":
        return dict(arch="llama", dim=128, hidden_dim=256, n_layers=n_layers, n_heads=4, n_kv_heads=2, head_dim=32,
                    vocab_size=vocab, max_seq_len=256, norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
                    rope_layout="half", tied_embeddings=True)
    return dict(arch="mpt", dim=128, hidden_dim=256, n_layers=n_layers, n_heads=4, vocab_size=vocab, max_seq_len=256,
                norm_eps=1e-5, alibi_bias_max=8.0, clip_qkv=None, tied_embeddings=False)


def write_tiny(path: Path, config: dict, tokenizer_json: str, seed: int = 0) -> Path:
    """A dense F32 random model with correlated weights (low-rank + noise) and a tokenizer."""
    rng = np.random.default_rng(seed)
    with ArtifactWriter(path, config) as wr:
        for name, shape in expected_tensors(config).items():
            w = random_tensor(rng, name, shape, 0.0)
            if len(shape) == 2 and name != "token_embd.weight":
                w *= np.float32(2.0)
            wr.add(name, encode(w, "dense", dtype="F32"))
        wr.add_file("tokenizer.json", tokenizer_json.encode())
        wr.finish({"card_version": 1, "name": path.name, "architecture": config["arch"]})
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tokenizer_json) -> Path:
    vocab = len(__import__("json").loads(tokenizer_json)["model"]["vocab"])
    return write_tiny(tmp_path_factory.mktemp("m") / "tiny-llama", tiny_config("llama", vocab=vocab), tokenizer_json)


@pytest.fixture(scope="session")
def tiny_mpt(tmp_path_factory, tokenizer_json) -> Path:
    vocab = len(__import__("json").loads(tokenizer_json)["model"]["vocab"])
    return write_tiny(tmp_path_factory.mktemp("m") / "tiny-mpt", tiny_config("mpt", vocab=vocab), tokenizer_json)

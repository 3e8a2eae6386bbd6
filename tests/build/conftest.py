"""Fixtures for zoo build: an isolated ZOO_HOME and catalog, a tiny base model as a GGUF file and as a wheel."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from zoo.format.architectures import expected_tensors
from zoo.synthetic import TINY_LLAMA, random_tensor

BASE_CONFIG = dict(TINY_LLAMA, dim=64, hidden_dim=128, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32,
                   vocab_size=300, tied_embeddings=False)


@pytest.fixture
def zoo_env(tmp_path, monkeypatch) -> Path:
    """ZOO_HOME, catalog and registry all empty and private to the test."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "catalog"))
    (tmp_path / "catalog").mkdir()
    for var in ("ZOO_REGISTRY", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A tiny random Llama as a real GGUF file (f32 tensors, a byte-level GPT-2 style vocabulary)."""
    import gguf

    c = BASE_CONFIG
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c["n_layers"]); w.add_context_length(c["max_seq_len"]); w.add_embedding_length(c["dim"])  # noqa: E702
    w.add_feed_forward_length(c["hidden_dim"]); w.add_head_count(c["n_heads"]); w.add_head_count_kv(c["n_kv_heads"])  # noqa: E702
    w.add_rope_dimension_count(c["head_dim"]); w.add_layer_norm_rms_eps(c["norm_eps"]); w.add_file_type(0)  # noqa: E702
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("default")  # noqa: E702
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte -> unicode table
    tokens = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    tokens += [f"t{i}" for i in range(c["vocab_size"] - len(tokens))]
    w.add_token_list(tokens); w.add_token_types([1] * len(tokens)); w.add_token_merges(["t 0"])  # noqa: E702
    w.add_bos_token_id(0); w.add_eos_token_id(1)  # noqa: E702
    for name, shape in expected_tensors(c).items():
        w.add_tensor(name, random_tensor(rng, name, shape, 0.0))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("base") / "tiny.gguf")


def write_wheel(directory: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding `files`, as pip expects to find one."""
    dist = f"{package.replace('-', '_')}-{version}"
    members = dict(files)
    members[f"{dist}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode()
    members[f"{dist}.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: zoo-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    members[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path

"""The writer: deterministic bytes, shared shards across variants, size-based sharding, atomicity."""

import filecmp
import os

import numpy as np
import pytest

from corrupt import read_shard

from zoo.errors import FormatError
from zoo.format import ArtifactWriter, decode, encode, open_artifact
from zoo.synthetic import TINY_LLAMA, TINY_MPT, write_random_model


def _files(path):
    return sorted(p.name for p in path.iterdir())


def test_same_input_same_bytes(tmp_path):
    a = write_random_model(tmp_path / "a", TINY_LLAMA, "sparse-q4", 0.7, seed=3)
    b = write_random_model(tmp_path / "b", TINY_LLAMA, "sparse-q4", 0.7, seed=3)
    assert _files(a) == _files(b)
    for name in _files(a):
        if name != "zoo.yaml":  # the cards differ in `name` only
            assert filecmp.cmp(a / name, b / name, shallow=False), name
    assert open_artifact(a).card["files"] == open_artifact(b).card["files"]


def test_variants_share_the_shared_shard(tmp_path):
    q4 = write_random_model(tmp_path / "q4", TINY_MPT, "q4", 0.5, seed=1)
    sp = write_random_model(tmp_path / "sp", TINY_MPT, "sparse-q4", 0.5, seed=1)
    assert filecmp.cmp(q4 / "shared-00001.safetensors", sp / "shared-00001.safetensors", shallow=False)
    assert not filecmp.cmp(q4 / "model-00001.safetensors", sp / "model-00001.safetensors", shallow=False)
    shared = open_artifact(q4)
    assert {n for n, t in shared.tensors.items() if len(t.shape) == 1 or n == "token_embd.weight"} == {
        n for n in shared.tensors if n.endswith("norm.weight") or n == "token_embd.weight"}


def test_shards_by_size_and_never_split_a_tensor(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "sharded"
    with ArtifactWriter(out, TINY_MPT, max_shard_bytes=6000) as w:
        from zoo.format import expected_tensors
        originals = {}
        for name, shape in expected_tensors(TINY_MPT).items():
            originals[name] = rng.standard_normal(shape).astype(np.float32)
            w.add(name, encode(originals[name], "q8" if len(shape) == 2 and name != "token_embd.weight" else "dense"))
        w.finish({"name": "sharded"})
    names = _files(out)
    assert sum(n.startswith("model-") for n in names) > 2
    art = open_artifact(out)
    art.validate()
    for name, array in originals.items():
        assert np.abs(decode(art.tensors[name]) - array).max() < 0.05, name
    for shard in art.files:  # a shard past the limit holds a single tensor that alone exceeds it
        meta, parts = read_shard(shard)
        data = sum(len(p[2]) for p in parts.values())
        assert data <= 6000 or len(meta["tensors"]) == 1, shard.name


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with ArtifactWriter(out, TINY_LLAMA) as w:
            w.add("token_embd.weight", encode(np.zeros((24, 40), np.float32), "dense"))
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_incomplete_model_is_refused_and_leaves_nothing(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(FormatError, match="missing"):
        with ArtifactWriter(out, TINY_LLAMA) as w:
            w.add("token_embd.weight", encode(np.zeros((24, 40), np.float32), "dense"))
            w.finish()
    assert os.listdir(tmp_path) == []


def test_existing_directory_needs_overwrite(tmp_path):
    first = write_random_model(tmp_path / "m", TINY_LLAMA, "q4")
    with pytest.raises(FormatError, match="already exists"):
        write_random_model(first, TINY_LLAMA, "q8")
    write_random_model(first, TINY_LLAMA, "q8", overwrite=True)
    assert open_artifact(first).tensors["blk.0.attn_q.weight"].encoding == "q8"
    assert _files(tmp_path) == ["m"]


def test_card_lists_every_file_with_digest(tmp_path):
    import hashlib

    out = write_random_model(tmp_path / "m", TINY_LLAMA, "sparse-q8", 0.5)
    card = open_artifact(out).card
    listed = {f["path"]: f for f in card["files"]}
    assert set(listed) == set(_files(out)) - {"zoo.yaml"}
    for name, item in listed.items():
        data = (out / name).read_bytes()
        assert item["size"] == len(data) and item["sha256"] == hashlib.sha256(data).hexdigest()
    open_artifact(out).verify_checksums()


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(FormatError, match="unknown architecture"):
        ArtifactWriter(tmp_path / "x", {**TINY_LLAMA, "arch": "gpt-j"})

"""The writer reproduces the committed test vectors byte for byte, and they read back correctly."""

import filecmp

import numpy as np
import pytest
import safetensors.numpy

import make_vectors
from zoo.format import decode, expected_tensors, open_artifact


@pytest.mark.parametrize("vector", sorted(make_vectors.VECTORS))
def test_writer_reproduces_vector_bytes(vector, vectors, tmp_path):
    (fresh,) = make_vectors.build(tmp_path, names=(vector,))
    committed = vectors / vector
    names = sorted(p.name for p in committed.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir())
    for name in names:
        assert filecmp.cmp(committed / name, fresh / name, shallow=False), f"{vector}/{name} differs"


@pytest.mark.parametrize("vector", sorted(make_vectors.VECTORS))
def test_vector_decodes_close_to_source_weights(vector, vectors):
    """Each stored weight is within half a quantization step (or f16/bf16 rounding) of the source."""
    art = open_artifact(vectors / vector)
    art.validate()
    linear = 0
    for salt, (name, shape) in enumerate(expected_tensors(make_vectors.CONFIG).items()):
        w = make_vectors.source_weights(vector, name, shape, salt, linear)
        linear += len(shape) == 2 and name != "token_embd.weight"
        got = decode(art.tensors[name])
        t = art.tensors[name]
        if "scales" in t.parts:
            scales = t.parts["scales"].astype(np.float32)
            if t.encoding == "tile4-q4":  # [tiles, 4 * groups] -> [rows, groups]
                scales = scales.reshape(shape[0] // 4, -1, 4).transpose(0, 2, 1).reshape(shape[0], -1)
            step = np.repeat(scales, t.group_size, axis=1)[:, : shape[1]]
            if "zeros" in t.parts:  # asymmetric rounding of the scale can push the range by one step
                step = step * 2
            assert np.all(np.abs(got - w) <= step / 2 + 1e-7), name
        else:
            np.testing.assert_allclose(got, w, rtol=2 ** -7, atol=1e-7, err_msg=name)
        if t.encoding.startswith("sparse-") or t.encoding == "tile4-q4":
            assert np.array_equal(got == 0, (w == 0) | (got == 0)) and np.all(got[w == 0] == 0), name


def test_safetensors_library_reads_our_files(vectors):
    for shard in sorted(vectors.glob("*/*.safetensors")):
        if shard.parent.name == "dense-bf16":  # numpy has no bfloat16: read that one through torch
            import safetensors.torch
            import torch

            loaded = {k: v.view(torch.uint16).numpy() if v.dtype == torch.bfloat16 else v.numpy()
                      for k, v in safetensors.torch.load_file(shard).items()}
        else:
            loaded = safetensors.numpy.load_file(shard)
        art = open_artifact(shard.parent)
        for physical, array in loaded.items():
            logical, _, suffix = physical.rpartition(".") if physical not in art.tensors else (physical, "", "")
            view = art.tensors[logical].parts[suffix]
            assert np.array_equal(array.view(np.uint8), np.ascontiguousarray(view).view(np.uint8)), physical


def test_views_are_zero_copy_and_read_only(vectors):
    art = open_artifact(vectors / "sparse-q4")
    mask = art.tensors["blk.0.attn_q.weight"].parts["bitmask"]
    assert not mask.flags.writeable
    assert mask.base is not None  # a view on the mapped file, not a copy
    assert mask.ctypes.data % 8 == 0 and art.tensors["blk.0.attn_q.weight"].parts["row_offsets"].ctypes.data % 8 == 0

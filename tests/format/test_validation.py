"""Every check of SPEC.md section 4 fires on a corrupted copy, naming the tensor and the check."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from corrupt import drop_card_files, read_shard, write_shard
from zoo.errors import FormatError, VersionError
from zoo.format import FORMAT_VERSION, open_artifact

W = "blk.0.ffn_up.weight"  # sparse-q4, 136 x 40: one mask word a row


@pytest.fixture
def art(vectors, tmp_path):
    """A writable copy of the sparse-q4 vector, with the card's file list dropped."""
    dst = tmp_path / "art"
    shutil.copytree(vectors / "sparse-q4", dst)
    drop_card_files(dst)
    return dst


def edit(art, fn, shard="model-00001.safetensors"):
    meta, tensors = read_shard(art / shard)
    fn(meta, tensors)
    write_shard(art / shard, meta, tensors)


def expect(art, *words, kind=FormatError):
    with pytest.raises(kind) as info:
        open_artifact(art).validate()
    for word in words:
        assert word in str(info.value), str(info.value)
    return str(info.value)


def _u64(t):
    return np.frombuffer(t[2], np.uint64)


def _i64(t):
    return np.frombuffer(t[2], np.int64)


def test_clean_copy_validates(art):
    open_artifact(art).validate()


def test_mask_bit_flip(art):
    def flip(meta, t):
        words = _u64(t[W + ".bitmask"]).copy()
        words[5] ^= np.uint64(1 << 3)
        t[W + ".bitmask"][2] = bytearray(words.tobytes())
    edit(art, flip)
    expect(art, W, "row 5", "popcount")


def test_mask_padding_bit(art):
    def pad(meta, t):
        words = _u64(t[W + ".bitmask"]).copy()
        words[7] |= np.uint64(1 << 63)
        t[W + ".bitmask"][2] = bytearray(words.tobytes())
    edit(art, pad)
    expect(art, W, "row 7", "beyond the last column")


def test_truncated_values(art):
    def cut(meta, t):
        t[W + ".values"][2] = t[W + ".values"][2][:-3]
        t[W + ".values"][1] = [len(t[W + ".values"][2])]
    edit(art, cut)
    expect(art, W, "row_offsets[-1]")


@pytest.mark.parametrize("where,words", [(0, ("row_offsets[0]",)), (3, ("decrease", "row 3")), (136, ("row_offsets[-1]",))])
def test_wrong_offsets(art, where, words):
    def bump(meta, t):
        offsets = _i64(t[W + ".row_offsets"]).copy()
        offsets[where] = offsets[where + 1] + 1 if where < 136 else offsets[where] - 1
        if where == 0:
            offsets[0] = 1
        t[W + ".row_offsets"][2] = bytearray(offsets.tobytes())
    edit(art, bump)
    expect(art, W, *words)


def test_padding_nibble(art):
    def nibble(meta, t):
        words = _u64(t[W + ".bitmask"])
        offsets = _i64(t[W + ".row_offsets"])
        counts = [bin(int(x)).count("1") for x in words]
        row = next(r for r, c in enumerate(counts) if c % 2)
        t[W + ".values"][2][offsets[row + 1] - 1] |= 0xF0
    edit(art, nibble)
    expect(art, W, "padding nibble")


def test_scales_not_finite(art):
    def nan(meta, t):
        t[W + ".scales"][2][0:2] = np.array([np.nan], np.float16).tobytes()
    edit(art, nan)
    expect(art, W, "scales not finite")


@pytest.mark.parametrize("change,words", [
    (lambda m: m["tensors"][W].update(encoding="sparse-q3"), (W, "unknown encoding")),
    (lambda m: m["tensors"][W].update(shape=[137, 40]), (W, "shape")),
    (lambda m: m["tensors"][W].update(group_size=96), (W, "group_size")),
    (lambda m: m["tensors"][W].update(group_size=2 ** 63), (W, "group_size")),  # fuzz case: OverflowError in the plan
    (lambda m: m["tensors"][W].update(extra=1), (W, "unknown metadata")),
    (lambda m: m["config"].update(hidden_dim=100), ("config",)),
    (lambda m: m["config"].update(arch="gpt5"), ("unknown architecture",)),
    (lambda m: m["config"].pop("n_heads"), ("n_heads",)),
    (lambda m: m["tensors"].pop(W), ("belongs to no logical tensor",)),
])
def test_wrong_metadata(art, change, words):
    edit(art, lambda meta, t: change(meta))
    expect(art, *words)


def test_newer_major_version_is_refused(art):
    edit(art, lambda meta, t: meta.update(format_version="2.0"))
    message = expect(art, "2.0", FORMAT_VERSION, "upgrade", kind=VersionError)
    assert "model-00001.safetensors" in message


def test_newer_minor_version_is_read(art):
    edit(art, lambda meta, t: meta.update(format_version="1.7"))
    open_artifact(art).validate()


def test_wrong_dtype(art):
    edit(art, lambda meta, t: t[W + ".values"].__setitem__(0, "I8"))
    expect(art, W + ".values", "dtype I8")


def test_missing_part(art):
    edit(art, lambda meta, t: t.pop(W + ".scales"))
    expect(art, W, "missing part")


def test_misaligned_tensor(art):
    def reorder(meta, t):
        values = t.pop(W + ".values")
        items = list(t.items())
        t.clear()
        t[W + ".values"] = values  # a 1-byte tensor first pushes the 8-byte ones off alignment
        t.update(items)
    edit(art, reorder)
    expect(art, "misaligned")


def test_truncated_file_and_card_size(vectors, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(vectors / "sparse-q4", dst)
    shard = dst / "model-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-5])
    expect(dst, "model-00001.safetensors", "truncated")
    drop_card_files(dst)
    expect(dst, "model-00001.safetensors", "data section")


def test_header_length_out_of_range(art):
    shard = art / "model-00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[:8] = (10**12).to_bytes(8, "little")
    shard.write_bytes(bytes(raw))
    expect(art, "header length")


def test_shape_disagrees_with_config(art, tmp_path):
    def grow(meta, t):
        meta["config"]["hidden_dim"] = 100
    for shard in ("model-00001.safetensors", "shared-00001.safetensors"):
        edit(art, grow, shard)
    expect(art, "disagrees with the config")


def test_cli_reports_one_line_and_exit_1(art):
    edit(art, lambda meta, t: t[W + ".row_offsets"][2].__setitem__(slice(8, 16), (999).to_bytes(8, "little")))
    # --no-verify: the edit also left the card without digests, which the checksum step would refuse first
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.main", "inspect", "--no-verify", str(art)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and W in lines[0] and "Traceback" not in proc.stderr, proc.stderr

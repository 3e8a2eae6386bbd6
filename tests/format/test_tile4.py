"""tile4-q4 (SPEC.md 3.6): round trips, the lane layout, the reference encoder's rules, sizes, versions,
and every invariant of section 4 failing on a corrupted copy of the tile4-q4 vector."""

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spec_reader
from corrupt import drop_card_files, read_shard, write_shard
from zoo.errors import FormatError
from zoo.format import (TILE_KEEP, ArtifactWriter, EncodedTensor, decode, encode, expected_tensors, open_artifact,
                        pack_tile4_q4)
from zoo.format.checks import check_tensor
from zoo.format.constants import ENCODINGS, part_shape, version_for
from zoo.format.stats import tensor_stats
from zoo.synthetic import TINY_LLAMA


def tile_sparse(rng, rows, cols, keep, slack=0, density=0.9):
    """Random float32 [rows, cols] whose tiles keep at most keep - slack columns a group (>= 0)."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[rng.random((rows, cols)) >= density] = 0.0
    for t in range(0, rows, 4):
        for start in range(0, cols, 128):
            width = min(128, cols - start)
            n = max(0, min(keep, width) - slack)
            cut = rng.permutation(width)[n:]
            w[t:t + 4, start + cut] = 0.0
    return w


def row_scales(t):
    """tile4-q4 scales [tiles, 4 * groups] as [rows, groups] float32."""
    rows = t.shape[0]
    return t.parts["scales"].astype(np.float32).reshape(rows // 4, -1, 4).transpose(0, 2, 1).reshape(rows, -1)


def quantized_form(w, scales):
    """q4's symmetric rounding per row and 128-column group with the given f16 scales [rows, groups]."""
    s = np.repeat(scales, 128, axis=1)[:, :w.shape[1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.clip(np.rint(w / np.where(s > 0, s, 1)), -7, 7), 0)
    return (q * s).astype(np.float32)


def lanes_by_loop(t):
    """{(tile, group, r, i): u} read byte by byte with the rule of SPEC.md 3.6."""
    k = t.keep
    out = {}
    for tile in range(t.shape[0] // 4):
        for g in range(t.parts["tilemask"].shape[1] // 2):
            block = t.parts["qweight"][tile, 2 * k * g:2 * k * (g + 1)]
            for lane in range(4 * k):
                byte = int(block[32 * (lane // 64) + lane % 32])
                out[tile, g, lane // k, lane % k] = byte & 15 if lane % 64 < 32 else byte >> 4
    return out


# --- round trips -------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(rows=st.sampled_from([4, 8, 12]), cols=st.sampled_from([1, 5, 16, 40, 64, 100, 127, 128, 129, 200, 300]),
       keep=st.sampled_from(TILE_KEEP), slack=st.sampled_from([0, 0, 3, 200]), seed=st.integers(0, 2**31))
def test_decode_encode_is_quantized_form(rows, cols, keep, slack, seed):
    w = tile_sparse(np.random.default_rng(seed), rows, cols, keep, slack)
    t = encode(w, "tile4-q4", keep=keep)
    check_tensor("W", t)
    assert t.metadata() == {"encoding": "tile4-q4", "shape": [rows, cols], "group_size": 128, "keep": keep}
    for suffix, part in t.parts.items():
        assert part.shape == part_shape("tile4-q4", suffix, (rows, cols), 128, keep), suffix
    scales = row_scales(t)
    np.testing.assert_array_equal(scales, encode(w, "q4").parts["scales"].astype(np.float32))
    got = decode(t)
    np.testing.assert_array_equal(got, quantized_form(w, scales))
    assert np.all(got[w == 0] == 0)
    info = {"encoding": "tile4-q4", "shape": [rows, cols], "group_size": 128, "keep": keep}
    np.testing.assert_allclose(spec_reader.decode(info, t.parts), got, rtol=1e-6, atol=0)


@settings(max_examples=30, deadline=None)
@given(rows=st.sampled_from([4, 8]), cols=st.sampled_from([3, 40, 128, 150, 256]), keep=st.sampled_from(TILE_KEEP),
       seed=st.integers(0, 2**31))
def test_pack_places_every_code_in_its_lane(rows, cols, keep, seed):
    rng = np.random.default_rng(seed)
    kept = np.zeros((rows // 4, cols), bool)
    for t in range(rows // 4):
        for start in range(0, cols, 128):
            width = min(128, cols - start)
            kept[t, start + rng.permutation(width)[:min(keep, width)]] = True
    codes = rng.integers(-8, 8, (rows, cols)).astype(np.int8) * np.repeat(kept, 4, axis=0)
    scales = rng.uniform(0.01, 1, (rows, -(-cols // 128))).astype(np.float16)
    t = pack_tile4_q4(codes, kept, scales, keep)
    lanes = lanes_by_loop(t)
    for tile in range(rows // 4):
        for g in range(-(-cols // 128)):
            positions = [p for p in range(128 * g, 128 * g + 128)
                         if (int(t.parts["tilemask"][tile, p // 64]) >> (p % 64)) & 1]
            assert len(positions) == keep
            for r in range(4):
                assert t.parts["scales"][tile, 4 * g + r] == scales[4 * tile + r, g]
                for i, p in enumerate(positions):
                    assert lanes[tile, g, r, i] == (codes[4 * tile + r, p] + 8 if p < cols else 8)
    np.testing.assert_array_equal(decode(t), codes * np.repeat(scales.astype(np.float32), 128, axis=1)[:, :cols])


def test_encode_is_pack_of_its_codes():
    rng = np.random.default_rng(5)
    w = tile_sparse(rng, 16, 300, 32)
    t = encode(w, "tile4-q4", keep=32)
    kept = np.zeros((4, 300), bool)
    where = np.nonzero(np.unpackbits(t.parts["tilemask"].view(np.uint8), axis=1, bitorder="little"))
    kept[where[0][where[1] < 300], where[1][where[1] < 300]] = True
    scales = row_scales(t).astype(np.float16)
    codes = np.rint(decode(t) / np.repeat(scales.astype(np.float32), 128, axis=1)[:, :300]).astype(np.int8)
    again = pack_tile4_q4(codes, kept, scales, 32)
    for suffix in t.parts:
        assert t.parts[suffix].tobytes() == again.parts[suffix].tobytes(), suffix


def test_fill_takes_the_lowest_unkept_columns_then_padding():
    w = np.zeros((4, 150), np.float32)
    w[1, 7], w[3, 100], w[2, 145] = 1.0, -2.0, 0.5
    t = encode(w, "tile4-q4", keep=16)
    bits = np.unpackbits(t.parts["tilemask"].view(np.uint8), bitorder="little").astype(bool)
    # group 0: columns 7, 100 and the 14 lowest others; group 1 (width 22 >= 16): 145 and the 15 lowest others
    assert list(np.flatnonzero(bits[:128])) == [*range(0, 15), 100]
    assert list(np.flatnonzero(bits[128:]) + 128) == [*range(128, 143), 145]
    narrow = encode(np.ones((4, 10), np.float32), "tile4-q4", keep=48)  # width 10 < 48: padding 10..47
    bits = np.unpackbits(narrow.parts["tilemask"].view(np.uint8), bitorder="little")
    assert list(np.flatnonzero(bits)) == list(range(48))
    u = lanes_by_loop(narrow)
    assert all(u[0, 0, r, i] == 8 for r in range(4) for i in range(10, 48))
    assert all(u[0, 0, r, i] == 15 for r in range(4) for i in range(10))


def test_zero_tensor_and_all_keeps():
    for keep in TILE_KEEP:
        t = encode(np.zeros((8, 256), np.float32), "tile4-q4", keep=keep)
        assert not decode(t).any() and not t.parts["scales"].any()
        assert np.all(t.parts["qweight"] == 0x88)


def test_large_weight_packs_quickly():
    """11008 x 4096 (a 7B MLP) with keep 64: numpy-vectorized, a second or two even on a busy machine."""
    import time

    rng = np.random.default_rng(0)
    rows, cols, keep = 11008, 4096, 64
    order = np.argsort(rng.random((rows // 4, cols // 128, 128)), axis=2)[:, :, :keep]
    kept = np.zeros((rows // 4, cols // 128, 128), bool)
    np.put_along_axis(kept, order, True, axis=2)
    kept = kept.reshape(rows // 4, cols)
    codes = (rng.integers(-8, 8, (rows, cols), dtype=np.int8) * np.repeat(kept, 4, axis=0)).astype(np.int8)
    scales = np.full((rows, cols // 128), 0.01, np.float16)
    start = time.perf_counter()
    t = pack_tile4_q4(codes, kept, scales, keep)
    assert time.perf_counter() - start < 10
    assert 8 * t.nbytes / (rows * cols) == 0.375 + keep / 32


# --- the reference encoder's refusals ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs,words", [
    (dict(shape=(4, 128), keep=16, nonzero=17), ("tile 0", "group 0", "17 nonzero", "does not fit tile4 with keep 16")),
    (dict(shape=(6, 128), keep=16), ("rows (6)", "multiple of 4")),
    (dict(shape=(4, 128), keep=20), ("keep must be one of 16, 32, 48, 64",)),
    (dict(shape=(4, 128), keep=None), ("keep must be one of",)),
    (dict(shape=(4, 128), keep=16, group_size=64), ("group_size must be 128",)),
    (dict(shape=(4, 128), keep=16, group_size=256), ("group_size must be 128",)),
])
def test_encode_refuses(kwargs, words):
    w = np.zeros(kwargs["shape"], np.float32)
    w[2, :kwargs.get("nonzero", 0)] = 1.0
    with pytest.raises(FormatError) as info:
        encode(w, "tile4-q4", group_size=kwargs.get("group_size", 128), keep=kwargs["keep"])
    for word in words:
        assert word in str(info.value), str(info.value)


def test_keep_belongs_to_tile4_only():
    with pytest.raises(FormatError, match="takes no keep"):
        encode(np.ones((4, 64), np.float32), "q4", keep=16)


def _pack_args():
    kept = np.zeros((1, 130), bool)
    kept[0, :16] = kept[0, 128:130] = True
    codes = np.zeros((4, 130), np.int8)
    return codes, kept, np.ones((4, 2), np.float16), 16


@pytest.mark.parametrize("change,words", [
    (lambda c, k, s: c.__setitem__((1, 20), 3), ("row 1, column 20", "does not keep")),
    (lambda c, k, s: c.__setitem__((0, 0), 9), ("[-8, 7]",)),
    (lambda c, k, s: k.__setitem__((0, 20), True), ("tile 0, group 0", "17 kept columns", "needs 16")),
    (lambda c, k, s: k.__setitem__((0, 129), False), ("tile 0, group 1", "1 kept columns", "needs 2")),
])
def test_pack_refuses(change, words):
    codes, kept, scales, keep = _pack_args()
    pack_tile4_q4(codes, kept, scales, keep)  # the unchanged arguments pack
    change(codes, kept, scales)
    with pytest.raises(FormatError) as info:
        pack_tile4_q4(codes, kept, scales, keep)
    for word in words:
        assert word in str(info.value), str(info.value)


# --- sizes and versions ------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", TILE_KEEP)
def test_bits_per_weight_and_sparsity(keep):
    t = encode(tile_sparse(np.random.default_rng(keep), 8, 512, keep), "tile4-q4", keep=keep)
    stats = tensor_stats(t)
    assert stats["bits_per_weight"] == 0.375 + keep / 32
    assert stats["stored"] == 8 * 4 * keep and stats["sparsity"] == 1 - keep / 128
    narrow = tensor_stats(encode(tile_sparse(np.random.default_rng(0), 4, 136, keep), "tile4-q4", keep=keep))
    assert narrow["stored"] == 4 * (keep + min(keep, 8))  # the last group has 8 real columns


def test_encoding_row():
    spec = ENCODINGS["tile4-q4"]
    assert [(p.suffix, p.dtypes) for p in spec.parts] == [("tilemask", ("U64",)), ("qweight", ("U8",)),
                                                          ("scales", ("F16",))]
    assert (spec.sparse, spec.bits, spec.grouped, spec.group_multiple, spec.meta_keys) == (True, 4, True, 128, ("keep",))
    assert version_for(["q4", "dense"]) == "1.0" and version_for(["q4", "tile4-q4"]) == "1.1"


def test_writer_marks_only_files_with_tile4_as_1_1(tmp_path):
    rng = np.random.default_rng(0)
    with ArtifactWriter(tmp_path / "m", TINY_LLAMA) as writer:
        for name, shape in expected_tensors(TINY_LLAMA).items():
            if len(shape) == 2 and name != "token_embd.weight":
                writer.add(name, encode(tile_sparse(rng, *shape, 32), "tile4-q4", keep=32))
            else:
                writer.add(name, encode(rng.standard_normal(shape).astype(np.float32), "dense"))
        out = writer.finish()
    assert read_shard(out / "model-00001.safetensors")[0]["format_version"] == "1.1"
    assert read_shard(out / "shared-00001.safetensors")[0]["format_version"] == "1.0"
    art = open_artifact(out)
    art.validate()
    assert art.format_version == "1.1" and {t.keep for t in art.tensors.values() if t.encoding == "tile4-q4"} == {32}


# --- every invariant, on a corrupted copy of the committed vector ------------------------------------

Q = "blk.0.attn_q.weight"  # 40 x 40, keep 16: one group of width 40 >= 16, no padding
V = "blk.0.attn_v.weight"  # 20 x 40, keep 48: one group of width 40 < 48, padding positions 40..47
D = "blk.0.ffn_down.weight"  # 40 x 136, keep 48: groups of width 128 and 8 (padding 136..175)


@pytest.fixture
def art(vectors, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(vectors / "tile4-q4", dst)
    drop_card_files(dst)
    return dst


def edit(art, fn):
    meta, tensors = read_shard(art / "model-00001.safetensors")
    fn(meta, tensors)
    write_shard(art / "model-00001.safetensors", meta, tensors)


def expect(art, *words):
    with pytest.raises(FormatError) as info:
        open_artifact(art).validate()
    for word in words:
        assert word in str(info.value), str(info.value)


def edit_words(art, name, fn):
    def change(meta, t):
        words = np.frombuffer(t[name + ".tilemask"][2], np.uint64).reshape(t[name + ".tilemask"][1]).copy()
        fn(words)
        t[name + ".tilemask"][2] = bytearray(words.tobytes())
    edit(art, change)


def test_vector_is_valid_and_matches_its_keeps(art):
    a = open_artifact(art)
    a.validate()
    assert {n: t.keep for n, t in a.tensors.items() if t.encoding == "tile4-q4"}[Q] == 16
    assert a.tensors[V].keep == 48 and a.tensors[D].keep == 48


def test_popcount(art):
    edit_words(art, Q, lambda w: w.__setitem__((3, 0), w[3, 0] ^ np.uint64(1 << 5)))
    expect(art, Q, "tile 3, group 0", "popcount", "keep (16)")


@pytest.mark.parametrize("name,group,fn", [
    # width 40 >= keep 16: a padding bit instead of a real one
    (Q, 0, lambda w: w.__setitem__((1, 0), (w[1, 0] & (w[1, 0] - np.uint64(1))) | np.uint64(1 << 41))),
    # width 40 < keep 48: padding at 48 instead of the lowest padding position 47
    (V, 0, lambda w: w.__setitem__((2, 0), (w[2, 0] & ~np.uint64(1 << 47)) | np.uint64(1 << 48))),
    # width 8 < keep 48 in group 1: a real column dropped for a higher padding position
    (D, 1, lambda w: w.__setitem__((4, 2), (w[4, 2] & ~np.uint64(1)) | np.uint64(1 << 48))),
])
def test_padding_rule(art, name, group, fn):
    edit_words(art, name, fn)
    tile = {Q: 1, V: 2, D: 4}[name]
    expect(art, name, f"tile {tile}, group {group}", "width rule")


def test_padding_code(art):
    def change(meta, t):
        # V, keep 48, tile 0: lane r*48 + 40 (r = 1: lane 88) is the first padding lane of row 1
        lane = 48 + 40
        t[V + ".qweight"][2][32 * (lane // 64) + lane % 32] ^= 0x10 if lane % 64 >= 32 else 0x01
    edit(art, change)
    expect(art, V, "tile 0, group 0", "padding code is not 8")


@pytest.mark.parametrize("change,words", [
    (lambda m: m["tensors"][Q].update(keep=20), (Q, "keep must be one of 16, 32, 48, 64")),
    (lambda m: m["tensors"][Q].update(keep=16.0), (Q, "keep must be one of")),
    (lambda m: m["tensors"][Q].pop("keep"), (Q, "needs metadata key 'keep'")),
    (lambda m: m["tensors"][Q].update(group_size=256), (Q, "group_size must be 128")),
    (lambda m: m["tensors"][Q].update(group_size=64), (Q, "group_size")),
    (lambda m: m["tensors"][Q].update(shape=[42, 40]), (Q, "rows (42) must be a multiple of 4")),
    (lambda m: m["tensors"][Q].update(keep=32), (Q + ".qweight", "shape [10, 32], expected [10, 64]")),
    (lambda m: m.update(format_version="1.0"), ("tile4-q4 needs format_version 1.1", "says 1.0")),
    (lambda m: m["tensors"][Q].update(encoding="tile8-q4"), (Q, "unknown encoding")),
])
def test_wrong_metadata(art, change, words):
    edit(art, lambda meta, t: change(meta))
    expect(art, *words)


def test_keep_on_another_encoding_is_refused(vectors, tmp_path):
    dst = tmp_path / "q4"
    shutil.copytree(vectors / "q4", dst)
    drop_card_files(dst)
    edit(dst, lambda meta, t: meta["tensors"][Q].update(keep=16))
    expect(dst, Q, "unknown metadata keys ['keep']")


def test_unknown_encoding_in_a_newer_file_says_upgrade(art):
    edit(art, lambda meta, t: (meta.update(format_version="1.9"), meta["tensors"][Q].update(encoding="tile8-q4")))
    expect(art, Q, "unknown encoding 'tile8-q4'", "format 1.9", "upgrade")


def test_part_shape(art):
    def change(meta, t):
        t[Q + ".scales"][1] = [5, 8]
    edit(art, change)
    expect(art, Q + ".scales", "shape [5, 8], expected [10, 4]")


def test_part_dtype(art):
    edit(art, lambda meta, t: t[Q + ".tilemask"].__setitem__(0, "I64"))
    expect(art, Q + ".tilemask", "dtype I64")


def test_missing_part(art):
    edit(art, lambda meta, t: t.pop(Q + ".tilemask"))
    expect(art, Q, "missing part", "tilemask")


def test_scales_not_finite(art):
    edit(art, lambda meta, t: t[D + ".scales"][2].__setitem__(slice(6, 8), np.array([np.inf], np.float16).tobytes()))
    expect(art, D, "scales not finite")


def test_check_tensor_on_a_tensor_built_in_memory():
    t = encode(tile_sparse(np.random.default_rng(0), 4, 40, 16), "tile4-q4", keep=16)
    check_tensor("W", t)
    bad = EncodedTensor("tile4-q4", t.shape, {**t.parts, "qweight": t.parts["qweight"][:, :16]}, 128, {"keep": 16})
    with pytest.raises(FormatError, match="W.qweight: shape"):
        check_tensor("W", bad)
    with pytest.raises(FormatError, match="keep must be"):
        check_tensor("W", EncodedTensor("tile4-q4", t.shape, t.parts, 128, {"keep": 17}))

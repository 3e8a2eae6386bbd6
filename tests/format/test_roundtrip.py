"""decode(encode(W)) equals W's quantized form (SPEC.md 3.5, recomputed here element by element)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.errors import FormatError
from zoo.format import decode, encode


def quantized_form(w: np.ndarray, encoding: str, g: int, zeros: bool = False) -> np.ndarray:
    """The spec's reference rounding, one group at a time, in float64 where it does not matter."""
    out = np.zeros_like(w, dtype=np.float32)
    if encoding == "sparse-f16":
        return w.astype(np.float16).astype(np.float32)
    qmax = 127 if encoding.endswith("q8") else 7
    for r in range(w.shape[0]):
        for start in range(0, w.shape[1], g):
            grp = w[r, start:start + g]
            if zeros:
                lo, hi = min(grp.min(), 0), max(grp.max(), 0)
                s = np.float32(np.float16((hi - lo) / np.float32(15)))
                if s == 0:
                    continue
                z = np.clip(np.rint(-lo / s), 0, 15)
                u = np.clip(np.rint(grp / s) + z, 0, 15)
                out[r, start:start + g] = (u - z) * s
                continue
            s = np.float32(np.float16(np.abs(grp).max() / np.float32(qmax)))
            if s == 0:
                continue
            out[r, start:start + g] = np.clip(np.rint(grp / s), -qmax, qmax) * s
    return out


@st.composite
def matrices(draw):
    rows = draw(st.integers(1, 6))
    cols = draw(st.sampled_from([1, 7, 63, 64, 65, 127, 128, 129, 200, 300]))
    seed = draw(st.integers(0, 2**31))
    density = draw(st.sampled_from([0.0, 0.01, 0.3, 0.5, 0.9, 1.0]))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[rng.random((rows, cols)) >= density] = 0.0
    if rows > 1:
        w[0] = 0.0  # an all-zero row
        w[-1] = rng.standard_normal(cols).astype(np.float32) + 3.0  # a fully dense row
    return w


@settings(max_examples=60, deadline=None)
@given(w=matrices(), encoding=st.sampled_from(["q8", "q4", "sparse-q4", "sparse-q8", "sparse-f16"]),
       g=st.sampled_from([64, 128, 256]))
def test_decode_encode_is_quantized_form(w, encoding, g):
    t = encode(w, encoding, group_size=g)
    np.testing.assert_array_equal(decode(t), quantized_form(w, encoding, g))
    if encoding.startswith("sparse-"):
        assert t.parts["row_offsets"][-1] == t.parts["values"].shape[0]


@settings(max_examples=30, deadline=None)
@given(w=matrices(), g=st.sampled_from([32, 128]))
def test_q4_zero_points(w, g):
    np.testing.assert_array_equal(decode(encode(w, "q4", group_size=g, zeros=True)), quantized_form(w, "q4", g, True))


@settings(max_examples=20, deadline=None)
@given(w=matrices(), dtype=st.sampled_from(["F32", "F16", "BF16"]))
def test_dense_dtypes(w, dtype):
    got = decode(encode(w, "dense", dtype=dtype))
    if dtype == "F32":
        np.testing.assert_array_equal(got, w)
    else:
        # F16 subnormals (below 2^-14) are spaced 2^-24 apart: rounding there errs by up to 2^-25, absolute
        np.testing.assert_allclose(got, w, rtol=2 ** -8 if dtype == "BF16" else 2 ** -11,
                                   atol=1e-30 if dtype == "BF16" else 2 ** -25)


def test_sparse_q4_bytes_match_spec_example():
    """The worked example of SPEC.md section 8, byte for byte."""
    w = np.array([[0, 0.5, 0, -1.0, 0], [0.7, 0, 0, 0, 0]], np.float32)
    t = encode(w, "sparse-q4", group_size=64)
    assert t.parts["bitmask"].tobytes().hex() == "0a00000000000000" "0100000000000000"
    assert t.parts["row_offsets"].tolist() == [0, 1, 2]
    assert t.parts["values"].tobytes().hex() == "1c0f"
    assert t.parts["scales"].tobytes().hex() == "9230" "662e"


def test_tile4_q4_bytes_match_spec_example():
    """The worked example of SPEC.md section 8.2, byte for byte."""
    w = np.array([[0, 0.5, 0, -1.0, 0], [0.7, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0.25, 0, 0]], np.float32)
    t = encode(w, "tile4-q4", keep=16)
    assert t.metadata() == {"encoding": "tile4-q4", "shape": [4, 5], "group_size": 128, "keep": 16}
    assert t.parts["tilemask"].tobytes().hex() == "ffff000000000000" "0000000000000000"
    assert t.parts["scales"].tobytes().hex() == "9230" "662e" "0000" "9228"
    assert t.parts["qweight"].tobytes().hex() == "888c8881" + "88" * 12 + "8f88f888" + "88" * 12
    expected = np.zeros((4, 5), np.float32)
    expected[0, 1], expected[0, 3] = 4 * np.float32(np.float16(1 / 7)), -7 * np.float32(np.float16(1 / 7))
    expected[1, 0], expected[3, 2] = 7 * np.float32(np.float16(0.1)), 7 * np.float32(np.float16(0.25 / 7))
    np.testing.assert_array_equal(decode(t), expected)


@pytest.mark.parametrize("bad", [dict(encoding="q7"), dict(encoding="q4", group_size=48),
                                 dict(encoding="sparse-q4", group_size=32), dict(encoding="q8", group_size=0)])
def test_encode_refuses_bad_options(bad):
    with pytest.raises(FormatError):
        encode(np.ones((2, 64), np.float32), **bad)


def test_encode_refuses_nan():
    with pytest.raises(FormatError, match="NaN"):
        encode(np.array([[np.nan, 1.0]], np.float32), "q8", group_size=32)

"""The calibration passes on a thread pool give exactly the serial loop's statistics and activations."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.compress.windows import collect, compress_threads, forward
from zoo.convert.source import open_source
from zoo.errors import CompressError
from zoo.runtime.reference import block_forward, layer_names


def _inputs(path, samples=5, tokens=24):
    src = open_source(path)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((samples, tokens, src.config["dim"]), dtype=np.float32)  # [samples, seq_len, dim]
    return src.config, {n: src.tensor(n) for n in layer_names(src.config, 0)}, x


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_mpt"])
def test_threaded_passes_equal_the_serial_loop_bit_for_bit(fixture, request, monkeypatch):
    config, weights, x = _inputs(request.getfixturevalue(fixture))
    results = {}
    for threads in (1, 3):
        monkeypatch.setenv("ZOO_COMPRESS_THREADS", str(threads))
        xs = x.copy()
        stats = collect(config, weights, xs, 0, lambda _: True)
        advanced = x.copy()
        collect(config, weights, advanced, 0, lambda _: False, advance=True)
        forward(config, weights, xs, 0)
        results[threads] = (stats, xs, advanced)
    (s1, x1, a1), (s3, x3, a3) = results[1], results[3]
    assert set(s1) == set(s3) and len(s1) >= 4
    for name in s1:
        assert s1[name].tokens == s3[name].tokens == x.shape[0] * x.shape[1]
        assert np.array_equal(s1[name].sq_sum, s3[name].sq_sum)
        assert np.array_equal(s1[name].xtx, s3[name].xtx)
    assert np.array_equal(x1, x3) and np.array_equal(a1, a3)
    serial = np.stack([block_forward(config, weights, w, 0) for w in x])  # the plain loop, no pool
    assert np.array_equal(x1, serial) and np.array_equal(a1, serial)
    if config["arch"] == "llama":
        assert s1["attn_k"] is s1["attn_q"] and s1["ffn_up"] is s1["ffn_gate"]  # shared inputs share statistics


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("ZOO_COMPRESS_THREADS", "3")
    assert compress_threads() == 3
    monkeypatch.delenv("ZOO_COMPRESS_THREADS")
    assert compress_threads() >= 1
    for bad in ("0", "two"):
        monkeypatch.setenv("ZOO_COMPRESS_THREADS", bad)
        with pytest.raises(CompressError, match="ZOO_COMPRESS_THREADS"):
            compress_threads()


def test_an_error_in_a_window_stops_the_pass(monkeypatch):
    from zoo.compress.windows import _ordered

    monkeypatch.setenv("ZOO_COMPRESS_THREADS", "2")
    ran = []

    def fn(s: int) -> int:
        ran.append(s)
        if s == 3:
            raise ValueError("window 3")
        return s

    got = []
    with pytest.raises(ValueError, match="window 3"):
        for r in _ordered(fn, 100):
            got.append(r)
    assert got == [0, 1, 2]  # results in order up to the failing window
    assert max(ran) < 3 + 2 * 2 + 1  # at most the look-ahead was submitted; the other windows never ran

"""Token embedding rows straight from each encoding, against the decoded table."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.format import decode, encode
from zoo.runtime.embedding import embed_rows
from zoo.synthetic import tile_weight


@pytest.mark.parametrize("encoding", ["dense", "q8", "q4", "sparse-q4", "tile4-q4"])
def test_rows_equal_the_decoded_table(encoding):
    rng = np.random.default_rng(0)
    if encoding == "tile4-q4":
        t = encode(tile_weight(rng, 24, 200, 32), encoding, group_size=128, keep=32)
    else:
        w = rng.standard_normal((24, 200)).astype(np.float32)
        w[rng.random(w.shape) < 0.5] = 0.0
        t = encode(w, encoding, group_size=64) if encoding != "dense" else encode(w, encoding)
    ids = [0, 5, 23, 10, 5]
    out = np.zeros((len(ids), 200), np.float32)
    embed_rows(t, ids, out)
    assert np.array_equal(out, decode(t)[ids])

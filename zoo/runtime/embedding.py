"""Token embedding lookup on an encoded `token_embd` without densifying it: one row at a time."""

from __future__ import annotations

import numpy as np

from zoo.format import EncodedTensor, decode
from zoo.format.constants import bf16_to_f32


def _row(t: EncodedTensor, r: int) -> EncodedTensor:
    """Row r of an encoded matrix as a 1-row EncodedTensor of views (offsets rebased for sparse)."""
    p = t.parts
    if t.encoding in ("q8", "q4"):
        parts = {k: v[r:r + 1] for k, v in p.items()}
    else:
        lo, hi = int(p["row_offsets"][r]), int(p["row_offsets"][r + 1])
        parts = {"bitmask": p["bitmask"][r:r + 1], "row_offsets": np.array([0, hi - lo], np.int64),
                 "values": p["values"][lo:hi]}
        if "scales" in p:
            parts["scales"] = p["scales"][r:r + 1]
    return EncodedTensor(t.encoding, (1, t.shape[1]), parts, t.group_size)


def embed_rows(t: EncodedTensor, ids: list[int], out: np.ndarray) -> np.ndarray:
    """out [len(ids), dim] float32 = rows `ids` of the embedding, whatever its encoding."""
    if t.encoding == "dense":
        table = t.parts[""]
        rows = table[np.asarray(ids, dtype=np.intp)]
        out[:] = bf16_to_f32(rows) if rows.dtype == np.uint16 else rows
        return out
    if t.encoding == "tile4-q4":  # rows come in tiles of 4: decode the tile, keep the row
        for i, r in enumerate(ids):
            tile = {k: v[r // 4:r // 4 + 1] for k, v in t.parts.items()}
            out[i] = decode(EncodedTensor(t.encoding, (4, t.shape[1]), tile, t.group_size, meta=dict(t.meta)))[r % 4]
        return out
    for i, r in enumerate(ids):
        out[i] = decode(_row(t, r))[0]
    return out

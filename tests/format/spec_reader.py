"""An independent reader of the zoo format, written from format/SPEC.md alone.

It imports numpy and json and nothing of zoo: if it decodes the committed test vectors to the
same numbers as zoo's own reader, the spec says everything a reader needs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DT = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "U64": "<u8", "I8": "i1", "U8": "u1"}


def read_file(path: Path) -> tuple[dict, dict]:
    """(zoo metadata, {physical name: ndarray}) of one .safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["zoo"])
    data = raw[8 + n:]
    arrays = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        arrays[name] = np.frombuffer(data[begin:end], dtype=_DT[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            arrays[name] = (arrays[name].astype(np.uint32) << 16).view(np.float32)
    return meta, arrays


def _nibbles(packed: np.ndarray) -> np.ndarray:
    out = np.empty(packed.size * 2, np.int64)
    out[0::2] = packed & 15  # low nibble first
    out[1::2] = packed >> 4
    return out


def _mask_row(words: np.ndarray, cols: int) -> np.ndarray:
    bits = [(int(words[c // 64]) >> (c % 64)) & 1 for c in range(cols)]
    return np.array(bits, dtype=bool)


def _decode_tile4(rows: int, cols: int, keep: int, parts: dict) -> np.ndarray:
    """SPEC.md 3.6, one (tile, group) block at a time."""
    out = np.zeros((rows, cols))
    groups = -(-cols // 128)
    for t in range(rows // 4):
        for g in range(groups):
            words = parts["tilemask"][t]
            kept = [p for p in range(128 * g, 128 * g + 128) if (int(words[p // 64]) >> (p % 64)) & 1]
            assert len(kept) == keep
            block = parts["qweight"][t, 2 * keep * g: 2 * keep * (g + 1)]
            for r in range(4):
                scale = float(parts["scales"][t, 4 * g + r])
                for i, c in enumerate(kept):
                    lane = r * keep + i
                    byte = int(block[32 * (lane // 64) + lane % 32])
                    u = byte & 15 if lane % 64 < 32 else byte >> 4
                    if c < cols:
                        out[4 * t + r, c] = (u - 8) * scale
                    else:
                        assert u == 8  # a padding position
    return out


def decode(info: dict, parts: dict) -> np.ndarray:
    """Dense float64 values of one logical tensor from its metadata entry and parts (by suffix)."""
    enc, shape = info["encoding"], info["shape"]
    if enc == "dense":
        return parts[""].astype(np.float64)
    rows, cols = shape
    if enc == "tile4-q4":
        assert info["group_size"] == 128 and rows % 4 == 0
        return _decode_tile4(rows, cols, info["keep"], parts)
    g = info.get("group_size")
    out = np.zeros((rows, cols))
    for r in range(rows):
        if enc in ("q8", "q4"):
            if enc == "q8":
                q = parts["qweight"][r].astype(np.float64)
            else:
                zeros = parts["zeros"][r] if "zeros" in parts else None
                u = _nibbles(parts["qweight"][r])[:cols]
                z = np.array([zeros[c // g] if zeros is not None else 8 for c in range(cols)])
                q = (u - z).astype(np.float64)
            s = np.array([parts["scales"][r, c // g] for c in range(cols)], dtype=np.float64)
            out[r] = q * s
            continue
        mask = _mask_row(parts["bitmask"][r], cols)
        start, end = parts["row_offsets"][r], parts["row_offsets"][r + 1]
        stored = parts["values"][start:end]
        if enc == "sparse-q4":
            stored = _nibbles(stored)[: int(mask.sum())] - 8
        for k, c in enumerate(np.flatnonzero(mask)):
            scale = 1.0 if enc == "sparse-f16" else float(parts["scales"][r, c // g])
            out[r, c] = float(stored[k]) * scale
    return out


def read_artifact(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, {logical name: dense float64 array}) of an artifact directory."""
    config, tensors = None, {}
    for shard in sorted(Path(path).glob("*.safetensors")):
        meta, arrays = read_file(shard)
        assert meta["format_version"].split(".")[0] == "1"  # any 1.x: a newer minor only adds encodings
        config = meta["config"]
        for name, info in meta["tensors"].items():
            parts = {(p[len(name) + 1:] if p != name else ""): a for p, a in arrays.items()
                     if p == name or p.startswith(name + ".")}
            tensors[name] = decode(info, parts)
    return config, tensors

"""Test helpers that rewrite a shard's tensors or header to make corrupt artifacts on purpose."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def read_shard(path: Path) -> tuple[dict, dict[str, list]]:
    """(zoo metadata, {name: [dtype, shape, bytearray]}) in file order."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["zoo"])
    data = raw[8 + n:]
    tensors = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        tensors[name] = [info["dtype"], info["shape"], bytearray(data[b:e])]
    return meta, tensors


def write_shard(path: Path, meta: dict, tensors: dict[str, list], header_extra: dict | None = None) -> None:
    """Lay the tensors out in dict order, contiguously, with an 8-aligned header."""
    header = {"__metadata__": {"zoo": json.dumps(meta)}}
    cursor = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [cursor, cursor + len(data)]}
        cursor += len(data)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(bytes(t[2]) for t in tensors.values()))


def drop_card_files(artifact: Path) -> None:
    """Remove the card's file list so edited shards are not refused for their changed size."""
    card = artifact / "zoo.yaml"
    card.write_text("\n".join(l for l in card.read_text().splitlines() if not l.startswith(("files:", "- path:", "  size:", "  sha256:"))))

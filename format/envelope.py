"""The safetensors envelope: parse and build headers (u64 length + JSON + data), strictly checked.

We read and write the envelope ourselves because the safetensors library neither streams a write
one tensor at a time nor hands out zero-copy views of a memory-mapped file; files stay readable by
the safetensors library (tested).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from zoo.errors import FormatError
from zoo.untrusted import MAX_HEADER_BYTES, loads_json

from .constants import DTYPES


@dataclass(frozen=True)
class TensorEntry:
    """One physical tensor of a file: dtype name, shape, absolute byte offset and length."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def parse_header(head: bytes, file_size: int, where: str) -> tuple[dict[str, str], dict[str, TensorEntry]]:
    """Check a file's header (given its first bytes, enough to hold it) and return (metadata, entries).

    Checks: header length, JSON, dtypes, shapes, offsets covering the data section exactly, alignment.
    """
    if file_size < 8 or len(head) < 8:
        raise FormatError(f"{where}: file too short for a safetensors header")
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > MAX_HEADER_BYTES or n > file_size - 8:
        raise FormatError(f"{where}: header length {n} is out of range for a {file_size}-byte file")
    if len(head) < 8 + n:
        raise FormatError(f"{where}: truncated header")
    header = loads_json(head[8:8 + n], f"{where}: header")
    if not isinstance(header, dict):
        raise FormatError(f"{where}: header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{where}: __metadata__ must map to strings")
    data_start, data_size = 8 + n, file_size - 8 - n
    entries: dict[str, TensorEntry] = {}
    spans = []
    for name, info in header.items():
        entries[name] = _entry(name, info, data_start, where)
        spans.append((entries[name].offset - data_start, entries[name].offset - data_start + entries[name].nbytes, name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            raise FormatError(f"{where}: tensor {name}: data_offsets leave a hole or overlap at byte {cursor}")
        cursor = end
    if cursor != data_size:
        raise FormatError(f"{where}: tensors cover {cursor} bytes but the data section has {data_size} (truncated or padded file)")
    return metadata, entries


def _entry(name: str, info: object, data_start: int, where: str) -> TensorEntry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"{where}: tensor {name}: entry must have exactly dtype, shape, data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise FormatError(f"{where}: tensor {name}: unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise FormatError(f"{where}: tensor {name}: bad shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            or offsets[1] < offsets[0]):
        raise FormatError(f"{where}: tensor {name}: bad data_offsets {offsets!r}")
    itemsize = DTYPES[dtype].itemsize
    count = 1
    for s in shape:
        count *= s
    if offsets[1] - offsets[0] != count * itemsize:
        raise FormatError(f"{where}: tensor {name}: {offsets[1] - offsets[0]} bytes for shape {shape} of {dtype}")
    offset = data_start + offsets[0]
    if offset % itemsize:
        raise FormatError(f"{where}: tensor {name}: misaligned (file offset {offset} not a multiple of {itemsize})")
    return TensorEntry(name, dtype, tuple(shape), offset, offsets[1] - offsets[0])


def build_header(metadata: dict[str, str], tensors: list[tuple[str, str, tuple[int, ...], int]]) -> bytes:
    """Header bytes (length prefix + JSON padded with spaces to 8) for tensors laid out in list order.

    `tensors` holds (name, dtype, shape, nbytes); callers order them by decreasing itemsize, then name.
    """
    header: dict[str, object] = {"__metadata__": metadata}
    cursor = 0
    for name, dtype, shape, nbytes in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [cursor, cursor + nbytes]}
        cursor += nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text

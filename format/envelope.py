"""The safetensors envelope: parse and build headers (u64 length + JSON + data), strictly checked.

We read and write the envelope ourselves because the safetensors library neither streams a write
one tensor at a time nor hands out zero-copy views of a memory-mapped file; files stay readable by
the safetensors library (tested).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import yaml

from zoo.errors import FormatError, ZooError

from .constants import DTYPES, MAX_HEADER_BYTES

# Readers' limits on untrusted JSON and YAML (SPEC.md 1.1): deep enough for any real header, card or
# manifest, small enough that no parser recurses out of stack and no alias bomb expands.
MAX_JSON_DEPTH = 64  # nesting of objects and arrays in a header, the zoo metadata or a manifest
MAX_YAML_DEPTH = 64  # nesting of mappings and sequences in a card
MAX_YAML_BYTES = 4 << 20  # size of a card
MAX_YAML_NODES = 200_000  # nodes of a card with every alias expanded (a billion-laughs card has 10**9)


def loads_json(text: str | bytes, where: str, error: type[ZooError] = FormatError,
               max_bytes: int = MAX_HEADER_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with the readers' limits: size, nesting depth, and duplicate object keys refused."""
    if len(text) > max_bytes:
        raise error(f"{where}: JSON of {len(text)} bytes exceeds the limit of {max_bytes}")
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, where, error))
    except RecursionError:  # json's C parser guards its own recursion: far deeper than max_depth
        raise error(f"{where}: JSON nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise error(f"{where}: not valid JSON ({err.__class__.__name__})") from None
    if _json_depth(value) > max_depth:
        raise error(f"{where}: JSON nested deeper than {max_depth} levels")
    return value


def _unique_keys(pairs: list[tuple[str, Any]], where: str, error: type[ZooError]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise error(f"{where}: duplicate JSON key {dup[:80]!r}")
    return out


def _json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a tree: JSON has no shared nodes)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


class _LimitExceeded(Exception):
    pass


class _BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that composes at most MAX_YAML_DEPTH levels and refuses alias expansion bombs."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _LimitExceeded(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise _LimitExceeded(f"more than {MAX_YAML_NODES} nodes with its aliases expanded")
        return node


def _expanded_nodes(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded (memoized per node; a cycle counts
    as unbounded). Visiting children before parents, without recursion."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if not ready:
            if id(node) in open_nodes:
                return MAX_YAML_NODES + 1  # a recursive alias expands forever
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        open_nodes.discard(id(node))
        if any(id(c) not in sizes for c in children):
            return MAX_YAML_NODES + 1  # a child still open: a cycle through an alias
        sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
    return sizes[id(root)]


def load_yaml(text: str | bytes, where: str, error: type[ZooError] = FormatError) -> Any:
    """yaml.safe_load with the readers' limits: size, nesting depth and expanded size (aliases)."""
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{where}: {len(text)} bytes of YAML exceed the limit of {MAX_YAML_BYTES}")
    loader = None
    try:
        loader = _BoundedSafeLoader(text)  # the reader decodes (and may refuse) the first bytes right here
        return loader.get_single_data()
    except _LimitExceeded as err:
        raise error(f"{where}: YAML {err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise error(f"{where}: not valid YAML ({str(err).splitlines()[0] if str(err) else err.__class__.__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()


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

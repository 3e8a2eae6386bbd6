"""The closed tables of the zoo format v1.1: version, dtypes, encodings and their parts.

Everything the reader, writer and validator know about the layout is looked up here; no code is
ever resolved from a metadata string.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

FORMAT_VERSION = "1.1"  # the newest version this code reads and writes
FORMAT_MAJOR = 1
FORMAT_MINOR = 1
METADATA_KEY = "zoo"

DEFAULT_GROUP_SIZE = 128
DEFAULT_SHARD_BYTES = 2 << 30
MASK_WORD_BITS = 64
Q4_TOP_CODE = 15  # q4's unsigned codes u lie in [0, 15]; with zero points a group spans 15 steps

# tile4-q4 (SPEC.md 3.6): 4 rows share one column mask per 128-column group, K kept columns each
TILE_ROWS = 4
TILE_GROUP = 128  # the only group_size tile4-q4 allows
MAX_GROUP_SIZE = 1 << 24  # the largest group_size a reader accepts (int64 arithmetic in the kernels stays exact)
TILE_KEEP = (16, 32, 48, 64)  # allowed values of the tensor's "keep" metadata (K)
TILE_LANE_CHUNK = 64  # lanes per 32-byte chunk of a (tile, group) block: low nibbles 0..31, high 32..63

CARD_FILE = "zoo.yaml"
TOKENIZER_FILE = "tokenizer.json"
MODEL_SHARD = "model-{:05d}.safetensors"
SHARED_SHARD = "shared-{:05d}.safetensors"

# safetensors dtype name <-> numpy dtype (always little-endian)
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; decode with bf16_to_f32
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
}
NUMPY_TO_DTYPE = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64",
                  np.dtype("<u8"): "U64", np.dtype("i1"): "I8", np.dtype("u1"): "U8"}


@dataclass(frozen=True)
class Part:
    """One physical tensor of an encoding: suffix ('' for the dense part), allowed dtypes."""

    suffix: str
    dtypes: tuple[str, ...]
    optional: bool = False


@dataclass(frozen=True)
class Encoding:
    """A row of the closed encoding table."""

    name: str
    parts: tuple[Part, ...]
    sparse: bool
    bits: int  # bits per stored value
    grouped: bool  # has scales and a group_size
    group_multiple: int  # group_size must be a positive multiple of this
    matrix_only: bool
    meta_keys: tuple[str, ...] = ()  # extra integer metadata keys the encoding requires ("keep")
    since: tuple[int, int] = (1, 0)  # the first format version (major, minor) that has the encoding


_MASK = Part("bitmask", ("U64",))
_OFFSETS = Part("row_offsets", ("I64",))
_SCALES = Part("scales", ("F16",))

ENCODINGS: dict[str, Encoding] = {
    e.name: e
    for e in (
        Encoding("dense", (Part("", ("F32", "F16", "BF16")),), False, 0, False, 1, False),
        Encoding("q8", (Part("qweight", ("I8",)), _SCALES), False, 8, True, 32, True),
        Encoding("q4", (Part("qweight", ("U8",)), _SCALES, Part("zeros", ("U8",), optional=True)),
                 False, 4, True, 32, True),
        Encoding("sparse-q4", (_MASK, _OFFSETS, Part("values", ("U8",)), _SCALES), True, 4, True, 64, True),
        Encoding("sparse-q8", (_MASK, _OFFSETS, Part("values", ("I8",)), _SCALES), True, 8, True, 64, True),
        Encoding("sparse-f16", (_MASK, _OFFSETS, Part("values", ("F16",))), True, 16, False, 1, True),
        Encoding("tile4-q4", (Part("tilemask", ("U64",)), Part("qweight", ("U8",)), _SCALES), True, 4, True,
                 TILE_GROUP, True, meta_keys=("keep",), since=(1, 1)),
    )
}


def version_for(encodings) -> str:
    """format_version a writer puts in a file holding these encodings: the oldest that has them all.

    A file of 1.0 encodings stays "1.0", so it is byte-identical to what a 1.0 writer made (shared-*
    shards dedupe across old and new variants) and 1.0 readers still read it.
    """
    major, minor = max([(1, 0)] + [ENCODINGS[e].since for e in encodings])
    return f"{major}.{minor}"


def part_name(logical: str, suffix: str) -> str:
    """Physical tensor name of a part: 'W' for the dense part, 'W.<suffix>' otherwise."""
    return f"{logical}.{suffix}" if suffix else logical


def n_groups(cols: int, group_size: int) -> int:
    return -(-cols // group_size)


def n_words(cols: int) -> int:
    return -(-cols // MASK_WORD_BITS)


def value_units(count: int, encoding: str) -> int:
    """Elements of W.values a row with `count` stored values occupies (3.3 of SPEC.md)."""
    return (count + 1) // 2 if encoding == "sparse-q4" else count


def part_shape(encoding: str, suffix: str, shape: tuple[int, ...], group_size: int | None,
               keep: int | None = None) -> tuple[int, ...] | None:
    """Expected shape of a part; None for W.values, whose length depends on the row offsets.

    `keep` is the tensor's K, needed (only) by tile4-q4.
    """
    if encoding == "dense":
        return tuple(shape)
    rows, cols = shape
    if encoding == "tile4-q4":
        tiles, groups = rows // TILE_ROWS, n_groups(cols, TILE_GROUP)
        shapes = {"tilemask": (tiles, 2 * groups), "qweight": (tiles, groups * 2 * keep),
                  "scales": (tiles, TILE_ROWS * groups)}
        return shapes[suffix]
    if suffix == "qweight":
        return (rows, cols) if encoding == "q8" else (rows, (cols + 1) // 2)
    if suffix in ("scales", "zeros"):
        return (rows, n_groups(cols, group_size))
    if suffix == "bitmask":
        return (rows, n_words(cols))
    if suffix == "row_offsets":
        return (rows + 1,)
    if suffix == "values":
        return None
    raise KeyError(suffix)


def tile4_problem(shape: tuple[int, ...], group_size: object, keep: object) -> str | None:
    """What is wrong with a tile4-q4 tensor's shape, group_size or keep (None if nothing)."""
    if len(shape) != 2:
        return f"tile4-q4 needs a 2-D shape, got {list(shape)}"
    if min(shape) <= 0:
        return f"tile4-q4 needs a nonempty shape, got {list(shape)}"
    if shape[0] % TILE_ROWS:
        return f"tile4-q4: rows ({shape[0]}) must be a multiple of {TILE_ROWS}"
    if not isinstance(group_size, Integral) or isinstance(group_size, bool) or group_size != TILE_GROUP:
        return f"tile4-q4: group_size must be {TILE_GROUP}, got {group_size!r}"
    if not isinstance(keep, Integral) or isinstance(keep, bool) or keep not in TILE_KEEP:
        return f"tile4-q4: keep must be one of {', '.join(map(str, TILE_KEEP))}, got {keep!r}"
    return None


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """BF16 raw bits (uint16) to float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 to BF16 raw bits (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)

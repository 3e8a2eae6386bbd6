"""What the kernels know of a weight: its kind, the kernel paths, and `prepare`, the one check of a weight.

`Kind` names the row body a weight's rows take (one value per encoding, dense split by dtype); jitted
code receives it as an int (the decode step's weight table stores it in a column). `Path` names the
instruction set the kernels use; its value is the `isa` argument of the x86 kernels. `prepare` checks
an encoded weight against format's encoding table (zoo.format.constants: parts, dtypes, shapes, group
multiples) once and flattens its parts into read-only 1-D views (one numba specialization per kernel).
It trusts that the artifact was validated (zoo.format): no bounds checks of the values themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from zoo.errors import KernelError
from zoo.format.constants import DTYPES, TILE_GROUP, TILE_KEEP, TILE_ROWS
from zoo.format.constants import ENCODINGS as FORMAT_ENCODINGS
from zoo.format.constants import part_shape


class Kind(IntEnum):
    """How a weight's rows are stored. int8-activation kinds first (Q4..SPARSE_Q8, and TILE4_Q4), then the
    float kinds; the decode step relies on this order (kind <= Q8: dense int rows, <= SPARSE_Q8: sparse)."""

    Q4 = 0
    Q8 = 1
    SPARSE_Q4 = 2
    SPARSE_Q8 = 3
    F32 = 4
    F16 = 5
    BF16 = 6
    SPARSE_F16 = 7
    TILE4_Q4 = 8


class Path(IntEnum):
    """A kernel path; the value is what the x86 kernels take as `isa`."""

    AVX512 = 0
    AVX2 = 1
    PORTABLE = 2

    @property
    def label(self) -> str:
        """The public name: 'avx512', 'avx2' or 'portable' (ZOO_KERNELS, set_path)."""
        return self.name.lower()


PATHS = (Path.PORTABLE, Path.AVX2, Path.AVX512)  # slowest first
ENCODINGS = tuple(FORMAT_ENCODINGS)
_KIND_OF = {"q4": Kind.Q4, "q8": Kind.Q8, "sparse-q4": Kind.SPARSE_Q4, "sparse-q8": Kind.SPARSE_Q8,
            "sparse-f16": Kind.SPARSE_F16, "tile4-q4": Kind.TILE4_Q4}
_DENSE_KIND = {"F32": Kind.F32, "F16": Kind.F16, "BF16": Kind.BF16}
DENSE_GROUP = 64  # group_size recorded for weights without groups (dense, sparse-f16)


@dataclass(frozen=True)
class PreparedWeight:
    """A checked weight: encoding, dense shape, group size and its parts as flat read-only views."""

    encoding: str
    rows: int
    cols: int
    group_size: int
    parts: dict  # suffix -> 1-D read-only ndarray (f16 as uint16 bits, int8 as uint8)
    kind: Kind
    density: float = 1.0  # stored values / dense size (sparse encodings), measured once in prepare()
    keep: int = 0  # tile4-q4: K, the columns each tile keeps of 128

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)


def _flat(name: str, a: object, dtypes: tuple, shape: tuple | None) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise KernelError(f"weight part {name!r} is not a numpy array")
    if a.dtype not in [np.dtype(d) for d in dtypes]:
        raise KernelError(f"weight part {name!r} has dtype {a.dtype}, expected {' or '.join(map(str, dtypes))}")
    if shape is not None and tuple(a.shape) != shape:
        raise KernelError(f"weight part {name!r} has shape {tuple(a.shape)}, expected {shape}")
    if not a.flags.c_contiguous:
        raise KernelError(f"weight part {name!r} is not C-contiguous")
    view = a.reshape(-1)
    if a.dtype in (np.float16,):
        view = view.view(np.uint16)
    elif a.dtype == np.int8:
        view = view.view(np.uint8)
    view.flags.writeable = False
    return view


def prepare(w) -> PreparedWeight:
    """Check an EncodedTensor-like object (.encoding, .shape, .group_size, .parts) once."""
    if isinstance(w, PreparedWeight):
        return w
    try:
        encoding, shape, parts, gs = w.encoding, tuple(int(s) for s in w.shape), w.parts, w.group_size
    except (AttributeError, TypeError, ValueError):
        raise KernelError("linear: weight must have .encoding, .shape, .group_size and .parts") from None
    if encoding not in ENCODINGS:
        raise KernelError(f"linear: unknown encoding {encoding!r}")
    if len(shape) != 2 or min(shape) < 1:
        raise KernelError(f"linear: weight shape {shape} is not a non-empty matrix")
    rows, cols = shape
    table = FORMAT_ENCODINGS[encoding]
    keep = None
    if encoding == "tile4-q4":
        if rows % TILE_ROWS or gs != TILE_GROUP:
            raise KernelError(f"linear: tile4-q4 needs rows a multiple of {TILE_ROWS} and group_size {TILE_GROUP}, "
                              f"got {rows} rows, {gs!r}")
        keep = _tile4_keep(parts, rows, cols)
    elif table.grouped:
        multiple = table.group_multiple
        if not isinstance(gs, (int, np.integer)) or gs <= 0 or gs % multiple:
            raise KernelError(f"linear: {encoding} needs group_size a positive multiple of {multiple}, got {gs!r}")
        gs = int(gs)
    else:
        gs = DENSE_GROUP
    flat = {}
    for part in table.parts:
        if part.suffix not in parts:
            if part.optional:
                continue
            raise KernelError(f"linear: {encoding} weight lacks part {part.suffix!r}")
        dtypes = tuple(DTYPES[d].str for d in part.dtypes)
        flat[part.suffix] = _flat(part.suffix or "(dense)", parts[part.suffix], dtypes,
                                  part_shape(encoding, part.suffix, shape, gs, keep))
    if encoding == "dense":
        stored = parts[""].dtype
        dtype = "F16" if stored == np.float16 else next(d for d in ("F32", "BF16") if DTYPES[d] == stored)
        return PreparedWeight(encoding, rows, cols, gs, flat, _DENSE_KIND[dtype])
    if encoding == "tile4-q4":
        return PreparedWeight(encoding, rows, cols, gs, flat, Kind.TILE4_Q4, keep / TILE_GROUP, keep)
    if not table.sparse:
        return PreparedWeight(encoding, rows, cols, gs, flat, _KIND_OF[encoding])
    if flat["values"].size < int(flat["row_offsets"][-1]):
        raise KernelError(f"linear: {encoding} values shorter than row_offsets[-1]")
    return PreparedWeight(encoding, rows, cols, gs, flat, _KIND_OF[encoding], _density(flat, encoding, rows, cols))


def _tile4_keep(parts: dict, rows: int, cols: int) -> int:
    """tile4-q4's K, from the size of its codes: tiles x groups x 2K bytes, K one of TILE_KEEP."""
    if "qweight" not in parts:
        raise KernelError("linear: tile4-q4 weight lacks part 'qweight'")
    qweight = _flat("qweight", parts["qweight"], (DTYPES["U8"].str,), None)
    tiles, n_groups = rows // TILE_ROWS, (cols + TILE_GROUP - 1) // TILE_GROUP
    keep, rem = divmod(qweight.size, tiles * n_groups * 2)
    if rem or keep not in TILE_KEEP:
        raise KernelError(f"linear: tile4-q4 qweight has {qweight.size} bytes: not {tiles} tiles x {n_groups} "
                          f"groups x 2K for K in {TILE_KEEP}")
    return keep


def _density(parts: dict, encoding: str, rows: int, cols: int) -> float:
    """Stored values / dense size of a sparse weight (sparse-q4 offsets count bytes, two values each:
    an odd row count rounds up, which is within a value a row)."""
    stored = int(parts["row_offsets"][-1]) * (2 if encoding == "sparse-q4" else 1)
    return min(1.0, stored / (rows * cols))

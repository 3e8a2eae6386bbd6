"""`linear(x, w, out)`: y = x W^T on an encoded weight, without densifying it.

The wrapper checks dtypes, shapes and contiguity (KernelError), flattens the parts into read-only
1-D views (one numba specialization per kernel, whatever the caller's arrays) and dispatches on
the encoding and the active path. `prepare(w)` does the checking once, for a runtime that calls
the same weight every token. It trusts the artifact was validated (zoo.format): no bounds checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.errors import KernelError

from . import csr_matmul, matmul, portable, portable_ir, tile4, tile4_ir
from ._paths import active_path

ENCODINGS = ("dense", "q8", "q4", "sparse-q4", "sparse-q8", "sparse-f16", "tile4-q4")
_EMPTY_U8 = np.zeros(1, np.uint8)
_EMPTY_U16 = np.zeros(1, np.uint16)
_EMPTY_F32 = np.zeros(1, np.float32)
for _a in (_EMPTY_U8, _EMPTY_U16, _EMPTY_F32):
    _a.flags.writeable = False


@dataclass(frozen=True)
class PreparedWeight:
    """A checked weight: encoding, dense shape, group size and its parts as flat read-only views."""

    encoding: str
    rows: int
    cols: int
    group_size: int
    parts: dict  # suffix -> 1-D read-only ndarray (f16 as uint16 bits, int8 as uint8)
    kind: int  # dense: 0 f32, 1 f16, 2 bf16; sparse: 0 q4, 1 q8, 2 f16; tile4-q4: K (columns kept of 128)
    density: float = 1.0  # stored values / dense size (sparse encodings), measured once in prepare()

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
    n_words = (cols + 63) // 64

    def part(suffix, dtypes, pshape, optional=False):
        if suffix not in parts:
            if optional:
                return None
            raise KernelError(f"linear: {encoding} weight lacks part {suffix!r}")
        return _flat(suffix or "(dense)", parts[suffix], dtypes, pshape)

    if encoding == "dense":
        data = part("", ("<f4", "<f2", "<u2"), shape)
        kind = {np.dtype("<f4"): 0, np.dtype("<u2"): 1 if parts[""].dtype == np.float16 else 2}[data.dtype]
        return PreparedWeight(encoding, rows, cols, 64, {"": data}, kind)
    if encoding == "sparse-f16":
        flat = {"bitmask": part("bitmask", ("<u8",), (rows, n_words)),
                "row_offsets": part("row_offsets", ("<i8",), (rows + 1,)),
                "values": part("values", ("<f2",), None)}
        _check_values(flat, encoding)
        return PreparedWeight(encoding, rows, cols, 64, flat, 2, _density(flat, encoding, rows, cols))
    if encoding == "tile4-q4":
        return _prepare_tile4(part, rows, cols, gs)
    multiple = 32 if encoding in ("q4", "q8") else 64
    if not isinstance(gs, (int, np.integer)) or gs <= 0 or gs % multiple:
        raise KernelError(f"linear: {encoding} needs group_size a positive multiple of {multiple}, got {gs!r}")
    gs = int(gs)
    n_groups = (cols + gs - 1) // gs
    flat = {"scales": part("scales", ("<f2",), (rows, n_groups))}
    if encoding == "q8":
        flat["qweight"] = part("qweight", ("i1",), (rows, cols))
        return PreparedWeight(encoding, rows, cols, gs, flat, 1)
    if encoding == "q4":
        flat["qweight"] = part("qweight", ("u1",), (rows, (cols + 1) // 2))
        zeros = part("zeros", ("u1",), (rows, n_groups), optional=True)
        if zeros is not None:
            flat["zeros"] = zeros
        return PreparedWeight(encoding, rows, cols, gs, flat, 0)
    flat["bitmask"] = part("bitmask", ("<u8",), (rows, n_words))
    flat["row_offsets"] = part("row_offsets", ("<i8",), (rows + 1,))
    flat["values"] = part("values", ("u1",) if encoding == "sparse-q4" else ("i1",), None)
    _check_values(flat, encoding)
    return PreparedWeight(encoding, rows, cols, gs, flat, 0 if encoding == "sparse-q4" else 1,
                          _density(flat, encoding, rows, cols))


def _prepare_tile4(part, rows: int, cols: int, gs) -> PreparedWeight:
    """tile4-q4: rows a multiple of 4, groups of 128, K from the codes' shape (one of tile4_ir.KEEPS)."""
    if rows % 4 or gs != 128:
        raise KernelError(f"linear: tile4-q4 needs rows a multiple of 4 and group_size 128, got {rows} rows, {gs!r}")
    tiles, n_groups = rows // 4, (cols + 127) // 128
    qweight = part("qweight", ("u1",), None)
    keep, rem = divmod(qweight.size, tiles * n_groups * 2)
    if rem or keep not in tile4_ir.KEEPS:
        raise KernelError(f"linear: tile4-q4 qweight has {qweight.size} bytes: not {tiles} tiles x {n_groups} "
                          f"groups x 2K for K in {tile4_ir.KEEPS}")
    flat = {"tilemask": part("tilemask", ("<u8",), (tiles, 2 * n_groups)),
            "qweight": part("qweight", ("u1",), (tiles, n_groups * 2 * keep)),
            "scales": part("scales", ("<f2",), (tiles, 4 * n_groups))}
    return PreparedWeight("tile4-q4", rows, cols, 128, flat, keep, keep / 128)


def _check_values(flat: dict, encoding: str) -> None:
    if flat["values"].size < int(flat["row_offsets"][-1]):
        raise KernelError(f"linear: {encoding} values shorter than row_offsets[-1]")


def _check_x(x: object, cols: int) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise KernelError(f"linear: x must be a float32 array, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim not in (1, 2) or x.shape[-1] != cols:
        raise KernelError(f"linear: x has shape {x.shape}, expected [{cols}] or [tokens, {cols}]")
    if not x.flags.c_contiguous:
        raise KernelError("linear: x is not C-contiguous")
    return x


def _check_out(out: object, shape: tuple) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
        raise KernelError(f"linear: out must be float32 of shape {shape}, got "
                          f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise KernelError("linear: out must be C-contiguous and writeable")
    return out


def linear(x: np.ndarray, w, out: np.ndarray | None = None) -> np.ndarray:
    """out = x @ W.T. x float32 [cols] (matvec) or [tokens, cols] (matmul); returns out [rows] / [tokens, rows]."""
    pw = prepare(w)
    path = active_path()
    x = _check_x(x, pw.cols)
    out = _check_out(out, (pw.rows,) if x.ndim == 1 else (x.shape[0], pw.rows))
    if x.ndim == 2 and x.shape[0] == 1:
        _matvec(pw, path, x[0], out[0])
    elif x.ndim == 1:
        _matvec(pw, path, x, out)
    elif x.shape[0] > 0:
        _matmul(pw, path, x, out)
    return out


def _matvec(pw: PreparedWeight, path: str, x: np.ndarray, out: np.ndarray) -> None:
    p, enc, rows, cols, gs = pw.parts, pw.encoding, pw.rows, pw.cols, pw.group_size
    if path != "portable" and enc in ("q4", "q8", "sparse-q4", "sparse-q8"):
        from . import simd

        isa = simd.AVX512 if path == "avx512" else simd.AVX2
        if enc in ("q4", "q8"):
            zeros = p.get("zeros", _EMPTY_U8)
            simd.matvec_dense_q(p["qweight"], p["scales"], zeros, int("zeros" in p), enc == "q4", isa, rows, cols, gs,
                                x, out)
        else:
            simd.matvec_sparse_q(p["bitmask"], p["row_offsets"], p["values"], p["scales"], enc == "sparse-q4", isa,
                                 rows, cols, gs, x, out)
        return
    if enc == "tile4-q4":
        if path == "portable":
            tile4.matvec_portable(p["tilemask"], p["qweight"], p["scales"], rows, cols, pw.kind, x, out)
        else:
            tile4.matvec_simd(p["tilemask"], p["qweight"], p["scales"], tile4.AVX512 if path == "avx512" else tile4.AVX2,
                              rows, cols, pw.kind, x, out)
        return
    if enc == "dense":
        if pw.kind == 0:
            portable.matvec_dense_f32(p[""], rows, cols, x, out)
        else:
            portable.matvec_dense_16(p[""], pw.kind == 2, rows, cols, x, out)
    elif enc == "q8":
        portable.matvec_q8(p["qweight"], p["scales"], rows, cols, gs, x, out)
    elif enc == "q4" and gs % 64 == 0:
        portable_ir.matvec_q4(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), "zeros" in p, rows, cols, gs, x, out)
    elif enc == "q4":
        portable.matvec_q4(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), "zeros" in p, rows, cols, gs, x, out)
    elif enc == "sparse-f16":
        portable.matvec_sparse_f16(p["bitmask"], p["row_offsets"], p["values"], rows, cols, x, out)
    else:
        portable_ir.matvec_sparse_q(p["bitmask"], p["row_offsets"], p["values"], p["scales"], enc == "sparse-q4",
                                        rows, cols, gs, x, out)


# avx512 sparse matmul at or below this density (stored / dense) takes the VNNI CSR kernel, whose work
# is proportional to the nonzeros; above it the VNNI tiles (work proportional to the dense size) are
# as fast (measured, one thread, 32 tokens: equal at 50% sparsity, CSR 1.3x the tiles at 70%, 2x at 90%)
VCSR_DENSITY = 0.55
VCSR_MAX_COLS = 65535  # its columns are uint16


def vcsr_min_tokens(density: float) -> int:
    """Fewest tokens for which the VNNI CSR kernel beats the tiles: its cost per call hardly depends on the
    token count up to 32 (a row's CSR is built once, the quads are 32 tokens wide) while the tiles' grows
    with it. Measured crossover (4096x11008, one thread): ~12 tokens at 90% sparsity, ~17 at 70%, ~23 at 50%."""
    return int(8 + 30 * density)


def _density(parts: dict, encoding: str, rows: int, cols: int) -> float:
    """Stored values / dense size of a sparse weight (sparse-q4 offsets count bytes, two values each:
    an odd row count rounds up, which is within a value a row)."""
    stored = int(parts["row_offsets"][-1]) * (2 if encoding == "sparse-q4" else 1)
    return min(1.0, stored / (rows * cols))


def matmul_kernel(pw: PreparedWeight, path: str, tokens: int = 32) -> str:
    """Which matmul kernel runs: "vnni" (AVX-512 tiles, int8 activations like the matvec), "vcsr"
    (AVX-512, int8 activations, VNNI over the nonzeros: sparse-q4/q8 at density <= VCSR_DENSITY and at
    least vcsr_min_tokens(density) tokens),
    "csr" (float32 over the nonzeros, generic IR: sparse weights on the portable and avx2 paths,
    sparse-f16 on all), "tile4" (tile4-q4: on avx512/avx2 the matvec's int8 tiles, token by token per tile;
    portable: float32, a tile's activations gathered once for every token) or
    "float" (plain numba, the rest)."""
    if pw.encoding == "tile4-q4":
        return "tile4"
    if pw.encoding == "sparse-f16" or (path != "avx512" and pw.encoding.startswith("sparse")):
        return "csr"
    if path != "avx512":
        return "float"
    if pw.encoding in ("sparse-q4", "sparse-q8"):
        vcsr = pw.density <= VCSR_DENSITY and pw.cols <= VCSR_MAX_COLS and tokens >= vcsr_min_tokens(pw.density)
        return "vcsr" if vcsr else "vnni"
    return "vnni" if pw.encoding == "q4" and pw.group_size % 128 == 0 else "float"


def _matmul(pw: PreparedWeight, path: str, x: np.ndarray, out: np.ndarray) -> None:
    """x float32 [tokens, cols]; out float32 [tokens, rows]."""
    p, enc, rows, cols, gs = pw.parts, pw.encoding, pw.rows, pw.cols, pw.group_size
    tokens = x.shape[0]
    flat_out = out.reshape(-1)
    kernel = matmul_kernel(pw, path, tokens)
    if kernel == "tile4":
        if path == "portable":
            tile4.matmul(p["tilemask"], p["qweight"], p["scales"], rows, cols, pw.kind, x.reshape(-1), tokens, flat_out)
        else:
            tile4.matmul_simd(p["tilemask"], p["qweight"], p["scales"], tile4.AVX512 if path == "avx512" else tile4.AVX2,
                              rows, cols, pw.kind, x.reshape(-1), tokens, flat_out)
        return
    if kernel == "csr":
        csr_matmul.matmul_csr(p["bitmask"], p["row_offsets"], p["values"], p.get("scales", _EMPTY_U16), pw.kind, rows,
                              cols, gs, x.reshape(-1), tokens, flat_out)
        return
    if kernel != "float":
        from . import simd_matmul

        if kernel == "vcsr":
            from . import vnni_csr

            vnni_csr.matmul_vcsr(p["bitmask"], p["row_offsets"], p["values"], p["scales"], enc == "sparse-q4", rows,
                                 cols, gs, vnni_csr.quads_per_group(pw.density, gs), x.reshape(-1), tokens, flat_out)
        elif enc == "q4":
            simd_matmul.matmul_q4(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), int("zeros" in p), rows, cols,
                                  gs, x.reshape(-1), tokens, flat_out)
        else:
            simd_matmul.matmul_sparse(p["bitmask"], p["row_offsets"], p["values"], p["scales"], enc == "sparse-q4",
                                      rows, cols, gs, x.reshape(-1), tokens, flat_out)
        return
    if enc == "dense":
        w32 = p[""] if pw.kind == 0 else _EMPTY_F32
        w16 = p[""] if pw.kind != 0 else _EMPTY_U16
        matmul.matmul_dense(w32, w16, pw.kind, rows, cols, x.reshape(-1), tokens, flat_out)
    else:
        matmul.matmul_q(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), "zeros" in p, enc == "q4", rows, cols,
                        gs, x.reshape(-1), tokens, flat_out)

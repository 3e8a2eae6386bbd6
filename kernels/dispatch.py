"""`linear(x, w, out)`: y = x W^T on an encoded weight, without densifying it, through one dispatch table.

A matvec (one token) runs MATVEC[(encoding, path)]; a matmul (several tokens) runs the kernel
`matmul_kernel` names for (encoding, path, density, tokens), MATMUL[name]. The crossovers between
kernels (which sparse layout pays at which density and token count) are measured and kept here.
docs/kernels.md opens with this table.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import KernelError

from .activations import Activations
from .cpu import active_path
from .layout import Kind, Path, PreparedWeight, prepare
from .matmul import avx2, csr, float32, vnni, vnni_csr
from .matmul import tile4 as tile4_matmul
from .matvec import generic, portable, tile4, x86
from .matvec.tile4 import GROUP as TILE4_GROUP
from .ir.x86_tiles import SMALL_TILE

_EMPTY_U8 = np.zeros(1, np.uint8)
_EMPTY_U16 = np.zeros(1, np.uint16)
_EMPTY_F32 = np.zeros(1, np.float32)
for _a in (_EMPTY_U8, _EMPTY_U16, _EMPTY_F32):
    _a.flags.writeable = False

# avx512 sparse matmul at or below this density (stored / dense) takes the VNNI CSR kernel, whose work
# is proportional to the nonzeros; above it the VNNI tiles (work proportional to the dense size) are
# as fast (measured, one thread, 32 tokens: equal at 50% sparsity, CSR 1.3x the tiles at 70%, 2x at 90%)
VCSR_DENSITY = 0.55
VCSR_MAX_COLS = 65535  # its columns are uint16
Q4_GENERIC_GROUP = 64  # portable q4 with groups of a multiple of this many columns: the generic-IR rows
VNNI_Q4_GROUP = 128  # q4 matmul with groups of a multiple of this many columns: the VNNI tiles (avx512), AVX2 tiles


def vcsr_min_tokens(density: float) -> int:
    """Fewest tokens for which the VNNI CSR kernel beats the tiles: its cost per call hardly depends on the
    token count up to 32 (a row's CSR is built once, the quads are 32 tokens wide) while the tiles' grows
    with it. Measured crossover (4096x11008, one thread): ~12 tokens at 90% sparsity, ~17 at 70%, ~23 at 50%."""
    return int(8 + 30 * density)


def linear(x: np.ndarray | Activations, w, out: np.ndarray | None = None) -> np.ndarray:
    """out = x @ W.T. x float32 [cols] (matvec) or [tokens, cols] (matmul), or quantize_input(x) when several
    weights share x (the int8 kernels then quantize it once); returns out [rows] / [tokens, rows]."""
    pw = prepare(w)
    path = active_path()
    acts = x if isinstance(x, Activations) else None
    x = _check_x(acts.x if acts else x, pw.cols)
    out = _check_out(out, (pw.rows,) if x.ndim == 1 else (x.shape[0], pw.rows))
    if x.ndim == 2 and x.shape[0] == 1:
        MATVEC[pw.encoding, path](pw, path, x[0], out[0])
    elif x.ndim == 1:
        MATVEC[pw.encoding, path](pw, path, x, out)
    elif x.shape[0] > 0:
        kernel = matmul_kernel(pw, path, x.shape[0])
        MATMUL[kernel](pw, path, acts or Activations(x), out.reshape(-1))
    return out


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


# ---- matvec: x float32 [cols] -> out float32 [rows]

def _mv_dense(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    if pw.kind == Kind.F32:
        portable.matvec_dense_f32(pw.parts[""], pw.rows, pw.cols, x, out)
    else:
        portable.matvec_dense_16(pw.parts[""], pw.kind == Kind.BF16, pw.rows, pw.cols, x, out)


def _mv_q8(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    portable.matvec_q8(p["qweight"], p["scales"], pw.rows, pw.cols, pw.group_size, x, out)


def _mv_q4(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    fn = generic.matvec_q4 if pw.group_size % Q4_GENERIC_GROUP == 0 else portable.matvec_q4
    fn(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), "zeros" in p, pw.rows, pw.cols, pw.group_size, x, out)


def _mv_sparse_q(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    generic.matvec_sparse_q(p["bitmask"], p["row_offsets"], p["values"], p["scales"], pw.encoding == "sparse-q4",
                            pw.rows, pw.cols, pw.group_size, x, out)


def _mv_sparse_f16(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    portable.matvec_sparse_f16(p["bitmask"], p["row_offsets"], p["values"], pw.rows, pw.cols, x, out)


def _mv_tile4(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    tile4.matvec_portable(p["tilemask"], p["qweight"], p["scales"], pw.rows, pw.cols, pw.keep, x, out)


def _mv_x86_q(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    x86.matvec_dense_q(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), int("zeros" in p), pw.encoding == "q4",
                       int(path), pw.rows, pw.cols, pw.group_size, x, out)


def _mv_x86_sparse_q(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    x86.matvec_sparse_q(p["bitmask"], p["row_offsets"], p["values"], p["scales"], pw.encoding == "sparse-q4",
                        int(path), pw.rows, pw.cols, pw.group_size, x, out)


def _mv_x86_tile4(pw: PreparedWeight, path: Path, x: np.ndarray, out: np.ndarray) -> None:
    p = pw.parts
    tile4.matvec_simd(p["tilemask"], p["qweight"], p["scales"], int(path), pw.rows, pw.cols, pw.keep, x, out)


_PORTABLE_MATVEC = {"dense": _mv_dense, "q8": _mv_q8, "q4": _mv_q4, "sparse-q4": _mv_sparse_q,
                    "sparse-q8": _mv_sparse_q, "sparse-f16": _mv_sparse_f16, "tile4-q4": _mv_tile4}
_X86_MATVEC = {"dense": _mv_dense, "q8": _mv_x86_q, "q4": _mv_x86_q, "sparse-q4": _mv_x86_sparse_q,
               "sparse-q8": _mv_x86_sparse_q, "sparse-f16": _mv_sparse_f16, "tile4-q4": _mv_x86_tile4}
MATVEC = {(enc, path): (_PORTABLE_MATVEC if path == Path.PORTABLE else _X86_MATVEC)[enc]
          for enc in _PORTABLE_MATVEC for path in Path}


# ---- matmul: Activations of x float32 [tokens, cols] -> out float32 [tokens * rows]

def matmul_kernel(pw: PreparedWeight, path: Path | str, tokens: int = 32) -> str:
    """Which matmul kernel runs: "vnni" (AVX-512 tiles, int8 activations like the matvec; dense q4 with at least
    SMALL_TILE tokens: avx2.matmul's tiles with ymm vpdpbusd; dense q8 too from SMALL_TILE tokens), "vcsr"
    (AVX-512, int8 activations, VNNI over the nonzeros: sparse-q4/q8 at density <= VCSR_DENSITY and at
    least vcsr_min_tokens(density) tokens),
    "csr" (float32 over the nonzeros, generic IR: sparse weights on the portable and avx2 paths,
    sparse-f16 on all), "tile4" (tile4-q4: on avx512/avx2 the matvec's int8 tiles, token by token per tile;
    portable: float32, a tile's activations gathered once for every token) or
    "avx2" (q4 with group_size a multiple of 128 and at least SMALL_TILE tokens on the avx2 path: int8 tiles
    with vpmaddubsw) or "float" (plain numba, the rest)."""
    path = path if isinstance(path, Path) else Path[path.upper()]
    if pw.encoding == "tile4-q4":
        return "tile4"
    if pw.encoding == "sparse-f16" or (path != Path.AVX512 and pw.encoding.startswith("sparse")):
        return "csr"
    if path == Path.AVX2 and pw.encoding == "q4" and pw.group_size % VNNI_Q4_GROUP == 0 and tokens >= SMALL_TILE:
        return "avx2"
    if path != Path.AVX512:
        return "float"
    if pw.encoding in ("sparse-q4", "sparse-q8"):
        vcsr = pw.density <= VCSR_DENSITY and pw.cols <= VCSR_MAX_COLS and tokens >= vcsr_min_tokens(pw.density)
        return "vcsr" if vcsr else "vnni"
    if pw.encoding == "q8":  # the VNNI q8 tiles from SMALL_TILE tokens (tied q8 heads in batched decode)
        return "vnni" if pw.group_size % VNNI_Q4_GROUP == 0 and tokens >= SMALL_TILE else "float"
    return "vnni" if pw.encoding == "q4" and pw.group_size % VNNI_Q4_GROUP == 0 else "float"


def _mm_float(pw: PreparedWeight, path: Path, acts: Activations, out: np.ndarray) -> None:
    p, rows, cols, x, tokens = pw.parts, pw.rows, pw.cols, acts.x.reshape(-1), acts.tokens
    if pw.encoding == "dense":
        w32 = p[""] if pw.kind == Kind.F32 else _EMPTY_F32
        w16 = p[""] if pw.kind != Kind.F32 else _EMPTY_U16
        float32.matmul_dense(w32, w16, int(pw.kind), rows, cols, x, tokens, out)
    else:
        float32.matmul_q(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), "zeros" in p, pw.encoding == "q4", rows,
                         cols, pw.group_size, x, tokens, out)


def _mm_csr(pw: PreparedWeight, path: Path, acts: Activations, out: np.ndarray) -> None:
    p = pw.parts
    csr.matmul_csr(p["bitmask"], p["row_offsets"], p["values"], p.get("scales", _EMPTY_U16), int(pw.kind), pw.rows,
                   pw.cols, pw.group_size, acts.x.reshape(-1), acts.tokens, out)


def _mm_vnni(pw: PreparedWeight, path: Path, acts: Activations, out: np.ndarray) -> None:
    p, rows, cols, gs = pw.parts, pw.rows, pw.cols, pw.group_size
    if pw.encoding in ("q4", "q8") and acts.tokens >= SMALL_TILE:  # 8 or 4 tokens a tile, rows and stores in the IR
        bits = 4 if pw.encoding == "q4" else 8
        xq, xd, xs, stride = acts.int8(gs, bits == 4)
        avx2.matmul(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), int("zeros" in p), bits, rows, cols, gs, xq,
                    xd, xs, stride, acts.tokens, out, 1, avx2.tile_tokens(acts.tokens))
    elif pw.encoding == "q4":
        xq, xd, xs, stride = acts.int8(gs, True)
        vnni.matmul_q4(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), int("zeros" in p), rows, cols, gs, xq, xd,
                       xs, stride, acts.tokens, out)
    else:
        xq, xd, xs, stride = acts.int8(gs, False)
        vnni.matmul_sparse(p["bitmask"], p["row_offsets"], p["values"], p["scales"], pw.encoding == "sparse-q4", rows,
                           cols, gs, xq, xd, xs, stride, acts.tokens, out)


def _mm_avx2(pw: PreparedWeight, path: Path, acts: Activations, out: np.ndarray) -> None:
    p, gs = pw.parts, pw.group_size
    xq, xd, xs, stride = acts.int8(gs, True)
    avx2.matmul(p["qweight"], p["scales"], p.get("zeros", _EMPTY_U8), int("zeros" in p), 4, pw.rows, pw.cols, gs, xq,
                xd, xs, stride, acts.tokens, out, 0, avx2.tile_tokens(acts.tokens))


def _mm_vcsr(pw: PreparedWeight, path: Path, acts: Activations, out: np.ndarray) -> None:
    p, gs = pw.parts, pw.group_size
    xt, xdt = acts.tiles(gs)
    vnni_csr.matmul_vcsr(p["bitmask"], p["row_offsets"], p["values"], p["scales"], pw.encoding == "sparse-q4", pw.rows,
                         pw.cols, gs, vnni_csr.quads_per_group(pw.density, gs), xt, xdt, acts.tokens, out)


def _mm_tile4(pw: PreparedWeight, path: Path, acts: Activations, out: np.ndarray) -> None:
    p = pw.parts
    if path == Path.PORTABLE:
        tile4_matmul.matmul(p["tilemask"], p["qweight"], p["scales"], pw.rows, pw.cols, pw.keep, acts.x.reshape(-1),
                            acts.tokens, out)
    else:
        xq, xd, _, stride = acts.int8(TILE4_GROUP, False)
        tile4_matmul.matmul_simd(p["tilemask"], p["qweight"], p["scales"], int(path), pw.rows, pw.cols, pw.keep, xq, xd,
                                 stride, acts.tokens, out)


MATMUL = {"avx2": _mm_avx2, "float": _mm_float, "csr": _mm_csr, "vnni": _mm_vnni, "vcsr": _mm_vcsr, "tile4": _mm_tile4}

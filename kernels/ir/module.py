"""The LLVM IR modules the kernels link, by name: each is generated once per process, on first use.

numba links a module into the library of every jitted function that calls into it (intrinsics.link);
the names are the keys of MODULES.
"""

from __future__ import annotations

from . import csr, generic_rows, tile4_generic, tile4_x86, vnni_csr
from .x86_rows import attrs, dense_row, expand_lut, sparse_row, unpack_fn
from .x86_scaled_rows import dense_q4x, sparse_rowx
from .x86_tiles import AVX2_TILES, module_tiles, q4_tile_avx2

_DECLS = """
declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <64 x i8>, <64 x i8>)
declare <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32>, <32 x i8>, <32 x i8>)
declare <64 x i8> @llvm.x86.avx512.mask.expand.v64i8(<64 x i8>, <64 x i8>, <64 x i1>)
declare <64 x i8> @llvm.masked.expandload.v64i8(ptr, <64 x i1>, <64 x i8>)
declare <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8>, <32 x i8>)
declare <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16>, <16 x i16>)
declare <8 x i32> @llvm.x86.avx2.phadd.d(<8 x i32>, <8 x i32>)
declare <32 x i8> @llvm.x86.avx2.psign.b(<32 x i8>, <32 x i8>)
declare <32 x i8> @llvm.x86.avx2.pshuf.b(<32 x i8>, <32 x i8>)
declare <32 x i8> @llvm.abs.v32i8(<32 x i8>, i1)
declare <16 x i8> @llvm.masked.load.v16i8.p0(ptr, i32, <16 x i1>, <16 x i8>)
declare <16 x i16> @llvm.masked.load.v16i16.p0(ptr, i32, <16 x i1>, <16 x i16>)
declare <16 x float> @llvm.masked.load.v16f32.p0(ptr, i32, <16 x i1>, <16 x float>)
declare <32 x i8> @llvm.masked.load.v32i8.p0(ptr, i32, <32 x i1>, <32 x i8>)
declare <64 x i8> @llvm.masked.load.v64i8.p0(ptr, i32, <64 x i1>, <64 x i8>)
declare <8 x i32> @llvm.masked.load.v8i32.p0(ptr, i32, <8 x i1>, <8 x i32>)
declare void @llvm.prefetch.p0(ptr, i32, i32, i32)
declare i64 @llvm.ctpop.i64(i64)
declare i64 @llvm.cttz.i64(i64, i1)
declare float @llvm.fma.f32(float, float, float)
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare <8 x float> @llvm.fma.v8f32(<8 x float>, <8 x float>, <8 x float>)
declare float @llvm.vector.reduce.fadd.v16f32(float, <16 x float>)
declare float @llvm.vector.reduce.fadd.v8f32(float, <8 x float>)
"""


def x86(isa: str) -> str:
    """The whole IR module of one instruction set: dense q4/q8 rows, sparse rows, nibble unpack."""
    widths = (64, 32) if isa == "avx512" else (32,)
    fns = [dense_row(isa, kind, w) for kind in ("q4", "q8") for w in widths]
    fns += [sparse_row(isa, "q4")] if isa == "avx2" else []  # avx2: one signed kind for q4 and q8
    fns += [unpack_fn(isa, widths[0])]
    if isa == "avx512":
        fns += [dense_q4x(), sparse_rowx("q4"), sparse_rowx("q8"), module_tiles()]
    else:
        fns += [q4_tile_avx2(tt) for tt in AVX2_TILES]
    lut = expand_lut() if isa == "avx2" else ""
    return lut + "\n".join(fns) + _DECLS + f"attributes #0 = {{ nounwind {attrs(isa)} }}\n"


MODULES = {
    "zoo_simd_avx512": lambda: x86("avx512"),
    "zoo_simd_avx2": lambda: x86("avx2"),
    "zoo_tile4_avx512": lambda: tile4_x86.module("avx512"),
    "zoo_tile4_avx2": lambda: tile4_x86.module("avx2"),
    "zoo_tile4_generic": tile4_generic.module,
    "zoo_psparse": generic_rows.module,
    "zoo_csr": csr.module,
    "zoo_vcsr": vnni_csr.module,
}

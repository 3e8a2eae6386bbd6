"""AVX-512 sparse matmul (prefill) over the nonzeros with int8 VNNI dot products.

Each row is expanded once to CSR (uint16 columns by `vpcompressw`, signed codes as bytes), its stored
values padded per scale group to a multiple of 4 (zero codes). The activations are quantized to
int8 per (token, group) as for the VNNI tiles, offset to unsigned (x + 128) and transposed to
xt uint8 [cols, 32 tokens]. Four nonzeros (c0..c3) make a quad: their four 32-byte token rows are
interleaved with 8 unpacks into four ymm of (x[c0,t], x[c1,t], x[c2,t], x[c3,t]) dwords and each
meets the quad's 4 codes (one broadcast dword) in one `vpdpbusd`: 128 multiply-adds for 4
nonzeros. Per group, int32 lanes minus 128 x (sum of the group's codes, one more `vpdpbusd` a
quad) are scaled by weight
scale x activation scale into float accumulators. Work is proportional to the nonzeros (plus the
padding), and activations take 32 bytes per nonzero instead of 128 in float32.
The token order inside xt is permuted (`_slot`) so that the unpacked lanes come out in order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._llvm import call_intrinsic
from .simd_matmul import quantize_tokens

TILE = 32  # tokens a tile (4 ymm of 8 int32 lanes)
ROW_BLOCK = 16


def _build_ir() -> str:
    """i64 @zoo_vcsr_build(mask, nwords, gw, ub, idx, codes, gq, kq): one row's CSR. ub int8
    [nnz] signed codes in stored order (64 of slack); out: idx uint16 columns and codes int8 of each
    group's values, padded with zero codes (column 0) to max(ceil(n / 4), kq) quads, gq int64
    [groups] each group's quads. No branch depends on the
    data: 2 `vpcompressw` and one 64-byte code copy a mask word, a fixed zero fill a group, so a
    group's quad count is kq unless it holds more values (kq is chosen so that this is rare).
    Returns the padded length."""
    comp = ""
    iota = ", ".join(f"i16 {i}" for i in range(32))
    for k in range(2):
        comp += f"""  %ms{k} = lshr i64 %m, {32 * k}
  %mt{k} = trunc i64 %ms{k} to i32
  %mk{k} = bitcast i32 %mt{k} to <32 x i1>
  %ba{k} = add i16 %base, {32 * k}
  %bi{k} = insertelement <32 x i16> poison, i16 %ba{k}, i64 0
  %bv{k} = shufflevector <32 x i16> %bi{k}, <32 x i16> poison, <32 x i32> zeroinitializer
  %v{k} = add <32 x i16> %bv{k}, <{iota}>
  %cv{k} = call <32 x i16> @llvm.x86.avx512.mask.compress.v32i16(<32 x i16> %v{k}, <32 x i16> zeroinitializer, <32 x i1> %mk{k})
  %dp{k} = getelementptr i16, ptr %idx, i64 %q{k}
  store <32 x i16> %cv{k}, ptr %dp{k}, align 2
  %mz{k} = zext i32 %mt{k} to i64
  %c{k} = call i64 @llvm.ctpop.i64(i64 %mz{k})
  %q{k + 1} = add i64 %q{k}, %c{k}
"""
    return f"""define i64 @zoo_vcsr_build(ptr %mask, i64 %nwords, i64 %gw, ptr %ub, ptr %idx, ptr %codes, ptr %gq, i64 %kq) #0 {{
entry:
  %kq3 = add i64 %kq, 3
  %nz0 = lshr i64 %kq3, 2
  %nz = add i64 %nz0, 1
  br label %gl
gl:
  %g = phi i64 [0, %entry], [%g2, %zdone]
  %p = phi i64 [0, %entry], [%pr, %zdone]
  %u = phi i64 [0, %entry], [%uw, %zdone]
  %w0 = mul i64 %g, %gw
  %w1a = add i64 %w0, %gw
  %w1c = icmp ult i64 %w1a, %nwords
  %w1 = select i1 %w1c, i64 %w1a, i64 %nwords
  br label %wl
wl:
  %w = phi i64 [%w0, %gl], [%w2, %wl]
  %q0 = phi i64 [%p, %gl], [%qe, %wl]
  %uu = phi i64 [%u, %gl], [%uw, %wl]
  %mp = getelementptr i64, ptr %mask, i64 %w
  %m = load i64, ptr %mp, align 8
  %w64 = shl i64 %w, 6
  %base = trunc i64 %w64 to i16
  %pc = call i64 @llvm.ctpop.i64(i64 %m)
{comp}  %up = getelementptr i8, ptr %ub, i64 %uu
  %cb = load <64 x i8>, ptr %up, align 1
  %cp = getelementptr i8, ptr %codes, i64 %q0
  store <64 x i8> %cb, ptr %cp, align 1
  %qe = add i64 %q2, 0
  %uw = add i64 %uu, %pc
  %w2 = add i64 %w, 1
  %wmore = icmp ult i64 %w2, %w1
  br i1 %wmore, label %wl, label %pad
pad:
  %cnt = sub i64 %qe, %p
  %r3 = add i64 %cnt, 3
  %quads = lshr i64 %r3, 2
  %qbig = icmp ugt i64 %quads, %kq
  %nq = select i1 %qbig, i64 %quads, i64 %kq
  %plen = shl i64 %nq, 2
  %pr = add i64 %p, %plen
  %gqp = getelementptr i64, ptr %gq, i64 %g
  store i64 %nq, ptr %gqp, align 8
  br label %zl
zl:
  %z = phi i64 [0, %pad], [%zn, %zl]
  %zo0 = shl i64 %z, 4
  %zo = add i64 %qe, %zo0
  %zip = getelementptr i16, ptr %idx, i64 %zo
  store <16 x i16> zeroinitializer, ptr %zip, align 2
  %zcp = getelementptr i8, ptr %codes, i64 %zo
  store <16 x i8> zeroinitializer, ptr %zcp, align 1
  %zn = add i64 %z, 1
  %zmore = icmp ult i64 %zn, %nz
  br i1 %zmore, label %zl, label %zdone
zdone:
  %g2 = add i64 %g, 1
  %gmore = icmp ult i64 %w1, %nwords
  br i1 %gmore, label %gl, label %done
done:
  ret i64 %pr
}}
"""


def _unpack(a: str, b: str, out: str, width: str, hi: bool) -> str:
    """shufflevector text of punpckl/h{bw,wd} on 256-bit vectors of `width` elements (i8 or i16)."""
    n = 32 if width == "i8" else 16
    half = n // 4  # elements per 128-bit lane half
    lane = n // 2
    idx = []
    for ln in range(2):
        for j in range(half):
            src = ln * lane + (half if hi else 0) + j
            idx += [src, src + n]
    mask = ", ".join(f"i32 {i}" for i in idx)
    return f"  %{out} = shufflevector <{n} x {width}> {a}, <{n} x {width}> {b}, <{n} x i32> <{mask}>\n"


def _row_ir() -> str:
    """void @zoo_vcsr_row(idx, codes, gq, ng, sc, xt, xd, res): one row (its CSR from
    zoo_vcsr_build) against a tile of 32 tokens: xt uint8 [cols, 32] (x + 128, slot order), xd float32
    [groups, 32] activation scales (token order), sc f16 [groups]; res float32 [32] out."""
    quad = ""
    for j in range(4):
        quad += f"""  %ce{j} = extractelement <4 x i16> %cols, i64 {j}
  %cz{j} = zext i16 %ce{j} to i64
  %co{j} = shl i64 %cz{j}, 5
  %xp{j} = getelementptr i8, ptr %xt, i64 %co{j}
  %x{j} = load <32 x i8>, ptr %xp{j}, align 1
"""
    quad += _unpack("%x0", "%x1", "l01", "i8", False) + _unpack("%x0", "%x1", "h01", "i8", True)
    quad += _unpack("%x2", "%x3", "l23", "i8", False) + _unpack("%x2", "%x3", "h23", "i8", True)
    for v in ("l01", "h01", "l23", "h23"):
        quad += f"  %{v}w = bitcast <32 x i8> %{v} to <16 x i16>\n"
    quad += _unpack("%l01w", "%l23w", "d0w", "i16", False) + _unpack("%l01w", "%l23w", "d1w", "i16", True)
    quad += _unpack("%h01w", "%h23w", "d2w", "i16", False) + _unpack("%h01w", "%h23w", "d3w", "i16", True)
    for k in range(4):
        quad += f"""  %d{k} = bitcast <16 x i16> %d{k}w to <32 x i8>
  %a{k}n = call <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32> %a{k}, <32 x i8> %d{k}, <32 x i8> %wb)
"""
    aphis = "".join(f"  %a{k} = phi <8 x i32> [zeroinitializer, %gbody], [%a{k}n, %ql]\n" for k in range(5))
    return f"""define void @zoo_vcsr_row(ptr %idx, ptr %codes, ptr %gq, i64 %ng, ptr %sc, ptr %xt, ptr %xd, ptr %res) #0 {{
entry:
  br label %gl
gl:
  %g = phi i64 [0, %entry], [%g2, %gend]
  %p = phi i64 [0, %entry], [%pn, %gend]
  %f0 = phi <16 x float> [zeroinitializer, %entry], [%f0n, %gend]
  %f1 = phi <16 x float> [zeroinitializer, %entry], [%f1n, %gend]
  %gqp = getelementptr i64, ptr %gq, i64 %g
  %nq = load i64, ptr %gqp, align 8
  %pn = add i64 %p, %nq
  %any = icmp ne i64 %nq, 0
  br i1 %any, label %gbody, label %gend
gbody:
  br label %ql
ql:
  %qi = phi i64 [%p, %gbody], [%qn, %ql]
{aphis}  %ip = getelementptr <4 x i16>, ptr %idx, i64 %qi
  %cols = load <4 x i16>, ptr %ip, align 2
  %wp = getelementptr i32, ptr %codes, i64 %qi
  %wd = load i32, ptr %wp, align 1
  %wi = insertelement <8 x i32> poison, i32 %wd, i64 0
  %wv = shufflevector <8 x i32> %wi, <8 x i32> poison, <8 x i32> zeroinitializer
  %wb = bitcast <8 x i32> %wv to <32 x i8>
  %a4n = call <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32> %a4, <32 x i8> splat(i8 -128), <32 x i8> %wb)
{quad}  %qn = add i64 %qi, 1
  %qmore = icmp ult i64 %qn, %pn
  br i1 %qmore, label %ql, label %gfin
gfin:
  %cv = add <8 x i32> %a4n, zeroinitializer
  %e0 = sub <8 x i32> %a0n, %cv
  %e1 = sub <8 x i32> %a1n, %cv
  %e2 = sub <8 x i32> %a2n, %cv
  %e3 = sub <8 x i32> %a3n, %cv
  %e01 = shufflevector <8 x i32> %e0, <8 x i32> %e1, <16 x i32> <{", ".join(f"i32 {i}" for i in range(16))}>
  %e23 = shufflevector <8 x i32> %e2, <8 x i32> %e3, <16 x i32> <{", ".join(f"i32 {i}" for i in range(16))}>
  %ef0 = sitofp <16 x i32> %e01 to <16 x float>
  %ef1 = sitofp <16 x i32> %e23 to <16 x float>
  %scp = getelementptr i16, ptr %sc, i64 %g
  %sch = load half, ptr %scp, align 2
  %s = fpext half %sch to float
  %si = insertelement <16 x float> poison, float %s, i64 0
  %sv = shufflevector <16 x float> %si, <16 x float> poison, <16 x i32> zeroinitializer
  %xo = shl i64 %g, 5
  %xdp0 = getelementptr float, ptr %xd, i64 %xo
  %xd0 = load <16 x float>, ptr %xdp0, align 4
  %xdp1 = getelementptr float, ptr %xdp0, i64 16
  %xd1 = load <16 x float>, ptr %xdp1, align 4
  %m0 = fmul <16 x float> %xd0, %sv
  %m1 = fmul <16 x float> %xd1, %sv
  %f0g = call <16 x float> @llvm.fma.v16f32(<16 x float> %ef0, <16 x float> %m0, <16 x float> %f0)
  %f1g = call <16 x float> @llvm.fma.v16f32(<16 x float> %ef1, <16 x float> %m1, <16 x float> %f1)
  br label %gend
gend:
  %f0n = phi <16 x float> [%f0, %gl], [%f0g, %gfin]
  %f1n = phi <16 x float> [%f1, %gl], [%f1g, %gfin]
  %g2 = add i64 %g, 1
  %gmore = icmp ult i64 %g2, %ng
  br i1 %gmore, label %gl, label %done
done:
  store <16 x float> %f0n, ptr %res, align 4
  %rp1 = getelementptr float, ptr %res, i64 16
  store <16 x float> %f1n, ptr %rp1, align 4
  ret void
}}
"""


def module_ir() -> str:
    return (_build_ir() + _row_ir()
            + "declare <32 x i16> @llvm.x86.avx512.mask.compress.v32i16(<32 x i16>, <32 x i16>, <32 x i1>)\n"
            + "declare <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32>, <32 x i8>, <32 x i8>)\n"
            + "declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)\n"
            + "declare i64 @llvm.ctpop.i64(i64)\ndeclare i32 @llvm.vector.reduce.add.v16i32(<16 x i32>)\n"
            + 'attributes #0 = { nounwind "target-features"="+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avx512vbmi2,+popcnt" '
            + '"min-legal-vector-width"="512" }\n')


def _call_intrinsic(fname: str, spec: str, ret: str = "v"):
    """An intrinsic calling `fname` of this file's IR module (see _llvm.call_intrinsic for `spec`)."""
    return call_intrinsic("zoo_vcsr", module_ir, fname, spec, ret)


# build: mask, nwords, gw, ub, idx, codes, gq, kq
row_build = _call_intrinsic("zoo_vcsr_build", "pii" + "ppp" + "pi", ret="i")
# row: idx, codes, gq, ng, sc, xt, xd, res
row_dot = _call_intrinsic("zoo_vcsr_row", "ppp" + "i" + "pppp")


def quads_per_group(density: float, group_size: int) -> int:
    """Quads every group is padded to: the mean plus one standard deviation of a group's stored
    values (binomial) over 4, so that the quad loop's trip count is nearly always the same (a
    varying one costs a mispredicted branch a group) and only a few groups need more."""
    mean = density * group_size
    return max(1, int(np.ceil((mean + np.sqrt(group_size * density * (1.0 - density))) / 4)))


@njit(cache=True, inline="always")
def _slot(t):
    """Byte of token t (0..31) inside a column of xt: the unpacks leave lane j of dword vector k
    holding slot 4k + j (j < 4) or 16 + 4k + j - 4, so token 8k + j is stored there."""
    k, j = t // 8, t % 8
    return 4 * k + j if j < 4 else 12 + 4 * k + j


@njit(parallel=True, cache=True)
def transpose_tiles(xq, xd, stride, tokens, cols, n_groups):
    """int8 xq [tokens * stride] -> xt uint8 [n_tiles, cols, 32] (x + 128, slot order, missing tokens
    128 = zero); xd float32 [tokens * n_groups] -> xdt float32 [n_tiles, n_groups, 32] (token order, 0)."""
    n_tiles = (tokens + TILE - 1) // TILE
    xt = np.full(n_tiles * cols * TILE, 128, np.uint8)
    xdt = np.zeros(n_tiles * n_groups * TILE, np.float32)
    for tile in prange(n_tiles):
        for t in range(tile * TILE, min(tokens, (tile + 1) * TILE)):
            slot = _slot(t - tile * TILE)
            src = xq[t * stride:t * stride + cols]
            dst = xt[tile * cols * TILE + slot:(tile + 1) * cols * TILE]
            for c in range(cols):
                dst[c * TILE] = np.uint8(np.int32(src[c]) + 128)
            for g in range(n_groups):
                xdt[(tile * n_groups + g) * TILE + t - tile * TILE] = xd[t * n_groups + g]
    return xt, xdt


@njit(cache=True, inline="always")
def _unpack_row(values, row_offsets, r, is_q4, ub):
    """Row r's stored values as signed codes, one a byte, into ub (q4: nibble - 8; q8: the int8)."""
    src = values[row_offsets[r]:row_offsets[r + 1]]
    if is_q4:
        for k in range(src.size):
            ub[2 * k] = np.int8(np.int32(src[k] & 15) - 8)
            ub[2 * k + 1] = np.int8(np.int32(src[k] >> 4) - 8)
    else:
        for k in range(src.size):
            ub[k] = np.int8(src[k])


@njit(parallel=True, cache=True)
def matmul_vcsr(bitmask, row_offsets, values, scales, is_q4, rows, cols, group_size, kq, x, tokens, out):
    """sparse-q4 / sparse-q8 rows x tokens (see module doc); x float32 [tokens * cols], out float32
    [tokens * rows]; kq: quads a group is padded to (quads_per_group). Parallel over blocks of rows;
    each row's CSR is built once for all tiles. One tile (<= 32 tokens): row by row, the tile's xt
    stays in L2. Several tiles: the block's rows are built first, then each tile meets all of them,
    so a tile's xt is fetched once a block, not once a row."""
    xq, xd, _, stride = quantize_tokens(x, tokens, cols, group_size, False)
    n_groups = (cols + group_size - 1) // group_size
    xt, xdt = transpose_tiles(xq, xd, stride, tokens, cols, n_groups)
    n_words = (cols + 63) // 64
    gw = group_size // 64
    n_tiles = (tokens + TILE - 1) // TILE
    pad = n_groups * (4 * kq + 3) + 16 * (kq // 4 + 2) + 64  # padding and SIMD slack a row can add
    for blk in prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = blk * ROW_BLOCK, min(rows, (blk + 1) * ROW_BLOCK)
        ub = np.empty(cols + 64, np.int8)  # [stored values of a row] signed codes + slack (read past: never used)
        res = np.empty(TILE, np.float32)
        if n_tiles == 1:
            cap = cols + pad
            nr = 1
        else:
            span = row_offsets[r1] - row_offsets[r0]
            cap = (2 * span if is_q4 else span) + (r1 - r0) * pad
            nr = r1 - r0
        idx = np.empty(cap, np.uint16)  # [padded values] column of each (cols < 65536); the build writes all it reads
        codes = np.empty(cap, np.int8)  # [padded values] signed code of each, 4 a quad
        gq = np.empty(nr * n_groups, np.int64)  # [row, group] quads of each group
        start = np.zeros(nr + 1, np.int64)  # where each built row begins in idx / codes
        for r in range(r0, r1):
            _unpack_row(values, row_offsets, r, is_q4, ub)
            j = 0 if n_tiles == 1 else r - r0
            start[j + 1] = start[j] + row_build(bitmask, r * n_words, n_words, gw, ub, 0, idx, start[j], codes,
                                                start[j], gq, j * n_groups, kq)
            if n_tiles == 1:
                row_dot(idx, 0, codes, 0, gq, 0, n_groups, scales, r * n_groups, xt, 0, xdt, 0, res, 0)
                for t in range(tokens):
                    out[t * rows + r] = res[t]
        if n_tiles == 1:
            continue
        for tile in range(n_tiles):
            for r in range(r0, r1):
                j = r - r0
                row_dot(idx, start[j], codes, start[j], gq, j * n_groups, n_groups, scales, r * n_groups, xt,
                        tile * cols * TILE, xdt, tile * n_groups * TILE, res, 0)
                for t in range(tile * TILE, min(tokens, (tile + 1) * TILE)):
                    out[t * rows + r] = res[t - tile * TILE]

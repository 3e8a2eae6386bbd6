"""AVX-512 LLVM IR of the VNNI CSR matmul (matmul/vnni_csr.py): a row's CSR build (uint16 columns by
`vpcompressw`, codes padded per group to quads) and the quad loop (`vpdpbusd` over 4 nonzeros x 32 tokens)."""

from __future__ import annotations

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


def module() -> str:
    return (_build_ir() + _row_ir()
            + "declare <32 x i16> @llvm.x86.avx512.mask.compress.v32i16(<32 x i16>, <32 x i16>, <32 x i1>)\n"
            + "declare <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32>, <32 x i8>, <32 x i8>)\n"
            + "declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)\n"
            + "declare i64 @llvm.ctpop.i64(i64)\ndeclare i32 @llvm.vector.reduce.add.v16i32(<16 x i32>)\n"
            + 'attributes #0 = { nounwind "target-features"="+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avx512vbmi2,+popcnt" '
            + '"min-legal-vector-width"="512" }\n')

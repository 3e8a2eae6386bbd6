"""Target-independent LLVM IR of the portable q4 and sparse-q4/q8 matvec rows (see matvec/generic.py).

64 columns a step: `llvm.masked.expandload` places a mask word's stored codes at their columns
(sparse), or 32 bytes of nibbles are interleaved to column order (q4); lanes are widened to float32
and multiplied with float32 activations in 4 accumulators, one multiply by the group's scale a group.
"""

from __future__ import annotations

def module() -> str:
    """float @zoo_psparse_row(mask, nwords, gw, codes, x, sc, zc): one row. mask uint64 [nwords], codes
    uint8 one a stored value (q4 0..15, q8 the int8 bits), x float32 [nwords * 64] (zero padded), sc
    f16 [groups], zc the codes' zero point (8 or 0): sum over groups of scale x sum (code - zc) * x."""
    lanes = []
    for k in range(4):
        idx = ", ".join(f"i32 {16 * k + i}" for i in range(16))
        lanes.append(f"""  %d{k}b = shufflevector <64 x i8> %d, <64 x i8> poison, <16 x i32> <{idx}>
  %d{k}i = sext <16 x i8> %d{k}b to <16 x i32>
  %d{k}f = sitofp <16 x i32> %d{k}i to <16 x float>
  %xp{k} = getelementptr float, ptr %xw, i64 {16 * k}
  %x{k} = load <16 x float>, ptr %xp{k}, align 4
  %a{k}n = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %d{k}f, <16 x float> %x{k}, <16 x float> %a{k})
""")
    aphis = "".join(f"  %a{k} = phi <16 x float> [zeroinitializer, %gl], [%a{k}n, %wl]\n" for k in range(4))
    return f"""define float @zoo_psparse_row(ptr %mask, i64 %nwords, i64 %gw, ptr %codes, ptr %x, ptr %sc, i8 %zc) #0 {{
entry:
  %t0 = add i64 %nwords, %gw
  %t1 = sub i64 %t0, 1
  %ng = udiv i64 %t1, %gw
  %zi = insertelement <64 x i8> poison, i8 %zc, i64 0
  %zv = shufflevector <64 x i8> %zi, <64 x i8> poison, <64 x i32> zeroinitializer
  br label %gl
gl:
  %g = phi i64 [0, %entry], [%g2, %gend]
  %p = phi i64 [0, %entry], [%pn, %gend]
  %tot = phi <16 x float> [zeroinitializer, %entry], [%totn, %gend]
  %w0 = mul i64 %g, %gw
  %w1a = add i64 %w0, %gw
  %w1c = icmp ult i64 %w1a, %nwords
  %w1 = select i1 %w1c, i64 %w1a, i64 %nwords
  br label %wl
wl:
  %w = phi i64 [%w0, %gl], [%w2, %wl]
  %pp = phi i64 [%p, %gl], [%pn, %wl]
{aphis}  %mp = getelementptr i64, ptr %mask, i64 %w
  %m = load i64, ptr %mp, align 8
  %mk = bitcast i64 %m to <64 x i1>
  %cp = getelementptr i8, ptr %codes, i64 %pp
  %e = call <64 x i8> @llvm.masked.expandload.v64i8(ptr %cp, <64 x i1> %mk, <64 x i8> %zv)
  %d = sub <64 x i8> %e, %zv
  %xo = shl i64 %w, 6
  %xw = getelementptr float, ptr %x, i64 %xo
{"".join(lanes)}  %pc = call i64 @llvm.ctpop.i64(i64 %m)
  %pn = add i64 %pp, %pc
  %w2 = add i64 %w, 1
  %wmore = icmp ult i64 %w2, %w1
  br i1 %wmore, label %wl, label %gend
gend:
  %s01 = fadd <16 x float> %a0n, %a1n
  %s23 = fadd <16 x float> %a2n, %a3n
  %sg = fadd <16 x float> %s01, %s23
  %scp = getelementptr i16, ptr %sc, i64 %g
  %sch = load half, ptr %scp, align 2
  %s = fpext half %sch to float
  %si = insertelement <16 x float> poison, float %s, i64 0
  %sv = shufflevector <16 x float> %si, <16 x float> poison, <16 x i32> zeroinitializer
  %totn = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %sg, <16 x float> %sv, <16 x float> %tot)
  %g2 = add i64 %g, 1
  %gmore = icmp ult i64 %w1, %nwords
  br i1 %gmore, label %gl, label %done
done:
  %r = call reassoc float @llvm.vector.reduce.fadd.v16f32(float 0.0, <16 x float> %totn)
  ret float %r
}}
declare <64 x i8> @llvm.masked.expandload.v64i8(ptr, <64 x i1>, <64 x i8>)
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare float @llvm.vector.reduce.fadd.v16f32(float, <16 x float>)
declare i64 @llvm.ctpop.i64(i64)
attributes #0 = {{ nounwind "min-legal-vector-width"="512" }}
""" + _q4_row()


def _q4_row() -> str:
    """float @zoo_pq4_row(qw, rowbytes, ng, spg, x, sc, zs, hz): one q4 row. qw uint8 [rowbytes] nibbles
    (low first), ng groups of spg steps of 32 bytes (64 columns; steps past the row's end: masked loads),
    x float32 [ng * spg * 64] zero padded, sc f16 [ng], zs uint8 [ng] zero points when hz (else 8)."""
    lanes = []
    for k in range(4):
        idx = ", ".join(f"i32 {16 * k + i}" for i in range(16))
        lanes.append(f"""  %d{k}b = shufflevector <64 x i8> %d, <64 x i8> poison, <16 x i32> <{idx}>
  %d{k}i = sext <16 x i8> %d{k}b to <16 x i32>
  %d{k}f = sitofp <16 x i32> %d{k}i to <16 x float>
  %xp{k} = getelementptr float, ptr %xw, i64 {16 * k}
  %x{k} = load <16 x float>, ptr %xp{k}, align 4
  %a{k}n = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %d{k}f, <16 x float> %x{k}, <16 x float> %a{k})
""")
    aphis = "".join(f"  %a{k} = phi <16 x float> [zeroinitializer, %gl], [%a{k}n, %sj]\n" for k in range(4))
    iota = ", ".join(f"i8 {i}" for i in range(32))
    return f"""define float @zoo_pq4_row(ptr %qw, i64 %rowbytes, i64 %ng, i64 %spg, ptr %x, ptr %sc, ptr %zs, i64 %hz) #0 {{
entry:
  br label %gl
gl:
  %g = phi i64 [0, %entry], [%g2, %gend]
  %tot = phi <16 x float> [zeroinitializer, %entry], [%totn, %gend]
  %hasz = icmp ne i64 %hz, 0
  %zg = mul i64 %g, %hz
  %zp = getelementptr i8, ptr %zs, i64 %zg
  %zl = load i8, ptr %zp, align 1
  %z = select i1 %hasz, i8 %zl, i8 8
  %zi = insertelement <64 x i8> poison, i8 %z, i64 0
  %zv = shufflevector <64 x i8> %zi, <64 x i8> poison, <64 x i32> zeroinitializer
  %k0 = mul i64 %g, %spg
  %k1 = add i64 %k0, %spg
  br label %sl
sl:
  %k = phi i64 [%k0, %gl], [%k2, %sj]
{aphis}  %bo = shl i64 %k, 5
  %bp = getelementptr i8, ptr %qw, i64 %bo
  %rem = sub i64 %rowbytes, %bo
  %full = icmp sge i64 %rem, 32
  br i1 %full, label %lf, label %lt
lf:
  %vf = load <32 x i8>, ptr %bp, align 1
  br label %sj
lt:
  %neg = icmp slt i64 %rem, 0
  %remc = select i1 %neg, i64 0, i64 %rem
  %r8 = trunc i64 %remc to i8
  %ri = insertelement <32 x i8> poison, i8 %r8, i64 0
  %rs = shufflevector <32 x i8> %ri, <32 x i8> poison, <32 x i32> zeroinitializer
  %mk = icmp ult <32 x i8> <{iota}>, %rs
  %vt = call <32 x i8> @llvm.masked.load.v32i8.p0(ptr %bp, i32 1, <32 x i1> %mk, <32 x i8> zeroinitializer)
  br label %sj
sj:
  %v = phi <32 x i8> [%vf, %lf], [%vt, %lt]
  %vw = zext <32 x i8> %v to <32 x i16>
  %lo = and <32 x i16> %vw, splat(i16 15)
  %sh = shl <32 x i16> %vw, splat(i16 4)
  %hi = and <32 x i16> %sh, splat(i16 3840)
  %or = or <32 x i16> %lo, %hi
  %u = bitcast <32 x i16> %or to <64 x i8>
  %d = sub <64 x i8> %u, %zv
  %xo = shl i64 %k, 6
  %xw = getelementptr float, ptr %x, i64 %xo
{"".join(lanes)}  %k2 = add i64 %k, 1
  %kmore = icmp ult i64 %k2, %k1
  br i1 %kmore, label %sl, label %gend
gend:
  %s01 = fadd <16 x float> %a0n, %a1n
  %s23 = fadd <16 x float> %a2n, %a3n
  %sg = fadd <16 x float> %s01, %s23
  %scp = getelementptr i16, ptr %sc, i64 %g
  %sch = load half, ptr %scp, align 2
  %s = fpext half %sch to float
  %si = insertelement <16 x float> poison, float %s, i64 0
  %sv = shufflevector <16 x float> %si, <16 x float> poison, <16 x i32> zeroinitializer
  %totn = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %sg, <16 x float> %sv, <16 x float> %tot)
  %g2 = add i64 %g, 1
  %gmore = icmp ult i64 %g2, %ng
  br i1 %gmore, label %gl, label %done
done:
  %r = call reassoc float @llvm.vector.reduce.fadd.v16f32(float 0.0, <16 x float> %totn)
  ret float %r
}}
declare <32 x i8> @llvm.masked.load.v32i8.p0(ptr, i32, <32 x i1>, <32 x i8>)
"""

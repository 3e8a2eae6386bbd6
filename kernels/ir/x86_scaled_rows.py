"""LLVM IR text of the AVX-512 matvec rows with fused scales: q4 128 columns a step, sparse rows.

Unlike x86_rows.dense_row / sparse_row, these compute the f16 scale, the scale product and the zero-point
correction per group inside the IR (no per-row pass in numba) and return the finished dot product.
Linked in module.x86("avx512").
"""

from __future__ import annotations

from .common import PREFETCH, load_chunk


def _scaled_group_end(lanes: int, zero: str) -> str:
    """Group end of the fused kernels: sd = f16 scale x activation scale computed here, and the
    zero-point correction s * z * xs[g] accumulated in a scalar (no per-row pass in numba)."""
    return f"""gend:
  %scp = getelementptr i16, ptr %sc, i64 %g
  %sch = load half, ptr %scp, align 2
  %s = fpext half %sch to float
  %xdp = getelementptr float, ptr %xd, i64 %g
  %xdg = load float, ptr %xdp, align 4
  %sdf = fmul float %s, %xdg
  %xsp = getelementptr float, ptr %xs, i64 %g
  %xsg = load float, ptr %xsp, align 4
{zero}  %zxs = fmul float %z, %xsg
  %corr2 = call float @llvm.fma.f32(float %s, float %zxs, float %corr)
{_scale_and_finish(lanes, "%corr2")}"""


def _scale_and_finish(lanes: int, corr: str) -> str:
    """The end of a group and of the row: the group's int32 lanes times the broadcast %sdf (scale x activation
    scale) into the float sum, the group loop's back edge, then the row's sum minus the zero-point correction."""
    return f"""  %sdi = insertelement <{lanes} x float> poison, float %sdf, i64 0
  %sdv = shufflevector <{lanes} x float> %sdi, <{lanes} x float> poison, <{lanes} x i32> zeroinitializer
  %fv = sitofp <{lanes} x i32> %iacc2 to <{lanes} x float>
  %accv2 = call <{lanes} x float> @llvm.fma.v{lanes}f32(<{lanes} x float> %fv, <{lanes} x float> %sdv, <{lanes} x float> %accv)
  %g2 = add i64 %g, 1
  %gc = icmp ult i64 %g2, %ng
  br i1 %gc, label %gloop, label %done
done:
  %acct = fadd <{lanes} x float> %accv2, %accb
  %red = call reassoc float @llvm.vector.reduce.fadd.v{lanes}f32(float 0.0, <{lanes} x float> %acct)
  %res = fsub float %red, {corr}
  ret float %res
"""


_ZERO_CONST = "  %z = fadd float %zc, 0.0\n"  # sparse rows: one zero point, passed in


def _factors() -> str:
    """IR blocks %ploop .. %pdone: sd[g] = f16 scale x activation scale into the stack buffer %sdb, and
    %corr = sum_g s_g z_g xs_g (the zero-point correction), 16 groups a step with masked loads."""
    return """ploop:
  %pg = phi i64 [0, %entry], [%pg2, %ploop]
  %cv = phi <16 x float> [zeroinitializer, %entry], [%cv2, %ploop]
  %left = sub i64 %ng, %pg
  %lc = icmp ult i64 %left, 16
  %nl = select i1 %lc, i64 %left, i64 16
  %bits = shl i64 1, %nl
  %bm1 = sub i64 %bits, 1
  %b16 = trunc i64 %bm1 to i16
  %m = bitcast i16 %b16 to <16 x i1>
  %scp = getelementptr i16, ptr %sc, i64 %pg
  %sbits = call <16 x i16> @llvm.masked.load.v16i16.p0(ptr %scp, i32 2, <16 x i1> %m, <16 x i16> zeroinitializer)
  %shh = bitcast <16 x i16> %sbits to <16 x half>
  %s = fpext <16 x half> %shh to <16 x float>
  %xdp = getelementptr float, ptr %xd, i64 %pg
  %xdv = call <16 x float> @llvm.masked.load.v16f32.p0(ptr %xdp, i32 4, <16 x i1> %m, <16 x float> zeroinitializer)
  %sdv16 = fmul <16 x float> %s, %xdv
  %sdp = getelementptr float, ptr %sdb, i64 %pg
  store <16 x float> %sdv16, ptr %sdp, align 4
  %xsp = getelementptr float, ptr %xs, i64 %pg
  %xsv = call <16 x float> @llvm.masked.load.v16f32.p0(ptr %xsp, i32 4, <16 x i1> %m, <16 x float> zeroinitializer)
  %hasz = icmp ne i64 %hz, 0
  %mz = select i1 %hasz, <16 x i1> %m, <16 x i1> zeroinitializer
  %zp = getelementptr i8, ptr %zs, i64 %pg
  %zb = call <16 x i8> @llvm.masked.load.v16i8.p0(ptr %zp, i32 1, <16 x i1> %mz, <16 x i8> splat(i8 8))
  %zf = uitofp <16 x i8> %zb to <16 x float>
  %sz = fmul <16 x float> %s, %zf
  %cv2 = call <16 x float> @llvm.fma.v16f32(<16 x float> %sz, <16 x float> %xsv, <16 x float> %cv)
  %pg2 = add i64 %pg, 16
  %pc = icmp ult i64 %pg2, %ng
  br i1 %pc, label %ploop, label %pdone
pdone:
  %corr = call reassoc float @llvm.vector.reduce.fadd.v16f32(float 0.0, <16 x float> %cv2)
  br label %gloop
"""


def dense_q4x() -> str:
    """float @zoo_q4x_avx512(qw, cols, gs, xq, sc, xd, xs, zs, hz): one q4 row, 128 columns per step.

    The activations come permuted per 128-column block (xq[b*128 + k] = x[b*128 + 2k],
    xq[b*128 + 64 + k] = x[b*128 + 2k + 1]), so the 64 low nibbles of a 64-byte load pair with the
    first half and the 64 high nibbles with the second: the codes need one and + one shift + and,
    no interleave (llama.cpp's Q4 trick, on our nibble order). gs: a multiple of 128; sc: the row's
    f16 scales; xd / xs float32 [n_groups]: activation scale and scale x sum per group; zs: the
    row's zero points (used when hz != 0, else 8). Returns sum_g s_g (xd_g codes.xq - z_g xs_g).
    The per-group factors are computed first, 16 groups a step (`_factors`), so a group ends in one
    broadcast load, one convert and one FMA.
    """
    return f"""define float @zoo_q4x_avx512(ptr %qw, i64 %cols, i64 %gs, ptr %xq, ptr %sc, ptr %xd, ptr %xs, ptr %zs, i64 %hz) #0 {{
entry:
  %t0 = add i64 %cols, 127
  %nch = udiv i64 %t0, 128
  %cpg = udiv i64 %gs, 128
  %t1 = add i64 %cols, 1
  %rowbytes = lshr i64 %t1, 1
  %t2 = add i64 %nch, %cpg
  %t3 = sub i64 %t2, 1
  %ng = udiv i64 %t3, %cpg
  %nb = add i64 %ng, 16
  %sdb = alloca float, i64 %nb, align 64
  br label %ploop
{_factors()}gloop:
  %g = phi i64 [0, %pdone], [%g2, %gend]
  %accv = phi <16 x float> [zeroinitializer, %pdone], [%accb, %gend]
  %accb = phi <16 x float> [zeroinitializer, %pdone], [%accv2, %gend]
  %k0 = mul i64 %g, %cpg
  %k1a = add i64 %k0, %cpg
  %k1c = icmp ult i64 %k1a, %nch
  %k1 = select i1 %k1c, i64 %k1a, i64 %nch
  br label %kloop
kloop:
  %k = phi i64 [%k0, %gloop], [%k2, %v.j]
  %ilo = phi <16 x i32> [zeroinitializer, %gloop], [%ilo2, %v.j]
  %ihi = phi <16 x i32> [zeroinitializer, %gloop], [%ihi2, %v.j]
  %boff = mul i64 %k, 64
  %wp = getelementptr i8, ptr %qw, i64 %boff
  %pfp = getelementptr i8, ptr %wp, i64 {PREFETCH}
  call void @llvm.prefetch.p0(ptr %pfp, i32 0, i32 0, i32 1)
  %rem = sub i64 %rowbytes, %boff
{load_chunk(64, "%wp", "%rem", "%v")}  %lo = and <64 x i8> %v, splat(i8 15)
  %v16 = bitcast <64 x i8> %v to <32 x i16>
  %sh16 = lshr <32 x i16> %v16, splat(i16 4)
  %sh = bitcast <32 x i16> %sh16 to <64 x i8>
  %hi = and <64 x i8> %sh, splat(i8 15)
  %xoff = mul i64 %k, 128
  %xp = getelementptr i8, ptr %xq, i64 %xoff
  %xlo = load <64 x i8>, ptr %xp, align 1
  %xp2 = getelementptr i8, ptr %xp, i64 64
  %xhi = load <64 x i8>, ptr %xp2, align 1
  %ilo2 = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %ilo, <64 x i8> %lo, <64 x i8> %xlo)
  %ihi2 = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %ihi, <64 x i8> %hi, <64 x i8> %xhi)
  %k2 = add i64 %k, 1
  %kc = icmp ult i64 %k2, %k1
  br i1 %kc, label %kloop, label %gpre
gpre:
  %iacc2 = add <16 x i32> %ilo2, %ihi2
  br label %gend
gend:
  %sdq = getelementptr float, ptr %sdb, i64 %g
  %sdf = load float, ptr %sdq, align 4
{_scale_and_finish(16, "%corr")}}}
"""


def sparse_rowx(kind: str) -> str:
    """float @zoo_sparsex_{kind}_avx512(mask, nwords, codes, gw, xq, sc, xd, xs, zc): one sparse row,
    like sparse_row but with the scales fused (sc the row's f16 scales, xd / xs as dense_q4x, zc the
    codes' zero point) and two mask words a step with two accumulators when the group allows."""
    if kind == "q4":
        fix = ""
        fill = "splat(i8 8)"
    else:
        fix = "xor"
        fill = "zeroinitializer"

    def word(i: str, acc: str, out: str, w: str, pp: str) -> str:
        s = (f"  %mp{i} = getelementptr i64, ptr %mask, i64 {w}\n  %m{i} = load i64, ptr %mp{i}, align 8\n"
             f"  %pf{i} = getelementptr i8, ptr %mp{i}, i64 {PREFETCH}\n"
             f"  call void @llvm.prefetch.p0(ptr %pf{i}, i32 0, i32 0, i32 1)\n"
             f"  %mk{i} = bitcast i64 %m{i} to <64 x i1>\n  %cp{i} = getelementptr i8, ptr %codes, i64 {pp}\n"
             f"  %cv{i} = load volatile <64 x i8>, ptr %cp{i}, align 1\n"
             f"  %e{i} = call <64 x i8> @llvm.x86.avx512.mask.expand.v64i8(<64 x i8> %cv{i}, <64 x i8> {fill}, <64 x i1> %mk{i})\n")
        s += f"  %u{i} = xor <64 x i8> %e{i}, splat(i8 -128)\n" if fix else f"  %u{i} = add <64 x i8> %e{i}, zeroinitializer\n"
        s += (f"  %xo{i} = mul i64 {w}, 64\n  %xp{i} = getelementptr i8, ptr %xq, i64 %xo{i}\n"
              f"  %xv{i} = load <64 x i8>, ptr %xp{i}, align 1\n"
              f"  {out} = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> {acc}, <64 x i8> %u{i}, <64 x i8> %xv{i})\n"
              f"  %pc{i} = call i64 @llvm.ctpop.i64(i64 %m{i})\n")
        return s

    return f"""define float @zoo_sparsex_{kind}_avx512(ptr %mask, i64 %nwords, ptr %codes, i64 %gw, ptr %xq, ptr %sc, ptr %xd, ptr %xs, float %zc) #0 {{
entry:
  %t0 = add i64 %nwords, %gw
  %t1 = sub i64 %t0, 1
  %ng = udiv i64 %t1, %gw
  br label %gloop
gloop:
  %g = phi i64 [0, %entry], [%g2, %gend]
  %accv = phi <16 x float> [zeroinitializer, %entry], [%accb, %gend]
  %accb = phi <16 x float> [zeroinitializer, %entry], [%accv2, %gend]
  %corr = phi float [0.0, %entry], [%corr2, %gend]
  %p = phi i64 [0, %entry], [%pe, %gend]
  %w0 = mul i64 %g, %gw
  %w1a = add i64 %w0, %gw
  %w1c = icmp ult i64 %w1a, %nwords
  %w1 = select i1 %w1c, i64 %w1a, i64 %nwords
  br label %pairs
pairs:
  %w = phi i64 [%w0, %gloop], [%wn, %pbody]
  %ia = phi <16 x i32> [zeroinitializer, %gloop], [%ia2, %pbody]
  %ib = phi <16 x i32> [zeroinitializer, %gloop], [%ib2, %pbody]
  %pp = phi i64 [%p, %gloop], [%ppn, %pbody]
  %wq = add i64 %w, 1
  %two = icmp ult i64 %wq, %w1
  br i1 %two, label %pbody, label %tail
pbody:
{word("a", "%ia", "%ia2", "%w", "%pp")}  %pq = add i64 %pp, %pca
{word("b", "%ib", "%ib2", "%wq", "%pq")}  %ppn = add i64 %pq, %pcb
  %wn = add i64 %w, 2
  br label %pairs
tail:
  %one = icmp ult i64 %w, %w1
  br i1 %one, label %tbody, label %tj
tbody:
{word("c", "%ia", "%ic2", "%w", "%pp")}  %ppc = add i64 %pp, %pcc
  br label %tj
tj:
  %iaf = phi <16 x i32> [%ia, %tail], [%ic2, %tbody]
  %pe = phi i64 [%pp, %tail], [%ppc, %tbody]
  %iacc2 = add <16 x i32> %iaf, %ib
  br label %gend
{_scaled_group_end(16, _ZERO_CONST)}}}
"""

"""LLVM IR text of the AVX-512 matmul tile kernels: one weight row against a tile of TT tokens.

Prefill is compute-bound, so each 64-byte step of weight codes is decoded once (q4: and / shift;
sparse: one vpexpandb) and then multiplied with the int8 activations of every token of the tile
(one VNNI vpdpbusd per token), which cuts the decode work per token by TT. Same arithmetic as the
matvec row kernels of x86_rows.py (int32 lanes per group, one FMA per group and token with
scale x activation scale, zero point removed once per group); see matmul/vnni.py for the callers.
"""

from __future__ import annotations

from .common import PREFETCH, load_chunk

TILE = 8  # tokens per tile; 16 int32 + 8 float accumulators fit the 32 zmm registers (4 measured slower)


def _phis(name: str, ty: str, init: str, back: str, tt: int, pred0: str, pred1: str) -> str:
    return "".join(f"  %{name}{t} = phi {ty} [{init}, %{pred0}], [%{back}{t}, %{pred1}]\n" for t in range(tt))


def _tile_fn(name: str, args: str, setup: str, step: str, tt: int, accs: tuple[str, ...]) -> str:
    """Shared frame: group loop, step loop (`step` text defines %{acc}n{t} for each acc), group end."""
    int_phis = "".join(_phis(a, "<16 x i32>", "zeroinitializer", f"{a}n", tt, "gloop", "kend") for a in accs)
    sums = ""
    for t in range(tt):
        prev = f"%{accs[0]}n{t}"
        for i, a in enumerate(accs[1:]):
            sums += f"  %isum{i}.{t} = add <16 x i32> {prev}, %{a}n{t}\n"
            prev = f"%isum{i}.{t}"
        sums += f"  %iacc{t} = add <16 x i32> {prev}, zeroinitializer\n"
    ends = ""
    for t in range(tt):
        ends += f"""  %xdp{t} = getelementptr float, ptr %xd, i64 %gi{t}
  %xdg{t} = load float, ptr %xdp{t}, align 4
  %sdf{t} = fmul float %s, %xdg{t}
  %xsp{t} = getelementptr float, ptr %xs, i64 %gi{t}
  %xsg{t} = load float, ptr %xsp{t}, align 4
  %zxs{t} = fmul float %z, %xsg{t}
  %corrn{t} = call float @llvm.fma.f32(float %s, float %zxs{t}, float %corr{t})
  %sdi{t} = insertelement <16 x float> poison, float %sdf{t}, i64 0
  %sdv{t} = shufflevector <16 x float> %sdi{t}, <16 x float> poison, <16 x i32> zeroinitializer
  %fv{t} = sitofp <16 x i32> %iacc{t} to <16 x float>
  %accn{t} = call <16 x float> @llvm.fma.v16f32(<16 x float> %fv{t}, <16 x float> %sdv{t}, <16 x float> %acc{t})
"""
    gidx = "".join(f"  %gio{t} = mul i64 %ngx, {t}\n  %gi{t} = add i64 %gio{t}, %g\n" for t in range(tt))
    rets = ""
    for t in range(tt):
        rets += (f"  %red{t} = call reassoc float @llvm.vector.reduce.fadd.v16f32(float 0.0, <16 x float> %accn{t})\n"
                 f"  %fin{t} = fsub float %red{t}, %corrn{t}\n  %rp{t} = getelementptr float, ptr %res, i64 {t}\n"
                 f"  store float %fin{t}, ptr %rp{t}, align 4\n")
    return f"""define void @{name}({args}, ptr %sc, ptr %xd, ptr %xs, i64 %ngx, ptr %zs, i64 %hz, float %zc, ptr %res) #0 {{
entry:
{setup}  br label %gloop
gloop:
  %g = phi i64 [0, %entry], [%g2, %zc2]
{_phis("acc", "<16 x float>", "zeroinitializer", "accn", tt, "entry", "zc2")}{_phis("corr", "float", "0.0", "corrn", tt, "entry", "zc2")}  %p = phi i64 [0, %entry], [%pe, %zc2]
  %k0 = mul i64 %g, %cpg
  %k1a = add i64 %k0, %cpg
  %k1c = icmp ult i64 %k1a, %nch
  %k1 = select i1 %k1c, i64 %k1a, i64 %nch
  br label %kloop
kloop:
  %k = phi i64 [%k0, %gloop], [%k2, %kend]
  %pp = phi i64 [%p, %gloop], [%ppn, %kend]
{int_phis}{step}  %k2 = add i64 %k, 1
  %kc = icmp ult i64 %k2, %k1
  br i1 %kc, label %kloop, label %gend
gend:
  %pe = add i64 %ppn, 0
{sums}  %scp = getelementptr i16, ptr %sc, i64 %g
  %sch = load half, ptr %scp, align 2
  %s = fpext half %sch to float
  %zp = getelementptr i8, ptr %zs, i64 %g
  %hasz = icmp ne i64 %hz, 0
  br i1 %hasz, label %zl, label %zc2
zl:
  %zb = load i8, ptr %zp, align 1
  %zf = uitofp i8 %zb to float
  br label %zc2
zc2:
  %z = phi float [%zf, %zl], [%zc, %gend]
{gidx}{ends}  %g2 = add i64 %g, 1
  %gc = icmp ult i64 %g2, %ng
  br i1 %gc, label %gloop, label %done
done:
{rets}  ret void
}}
"""


def _xloads(tt: int, off: str, tag: str) -> str:
    """Load the 64 int8 activations at byte `off` of each token's row (token t at xq + t*xstride)."""
    s = ""
    for t in range(tt):
        s += (f"  %xo{tag}{t} = add i64 {off}, %xso{t}\n  %xp{tag}{t} = getelementptr i8, ptr %xq, i64 %xo{tag}{t}\n"
              f"  %x{tag}{t} = load <64 x i8>, ptr %xp{tag}{t}, align 1\n")
    return s


def _dots(tt: int, acc: str, codes: str, tag: str) -> str:
    return "".join(f"  %{acc}n{t} = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %{acc}{t}, "
                   f"<64 x i8> {codes}, <64 x i8> %x{tag}{t})\n" for t in range(tt))


def _xstrides(tt: int) -> str:
    return "".join(f"  %xso{t} = mul i64 %xstride, {t}\n" for t in range(tt))


def q4_tile(tt: int) -> str:
    """void @zoo_mm_q4x_{tt}(qw, cols, gs, xq, xstride, sc, xd, xs, ngx, zs, hz, zc, res): one q4 row
    against tt tokens whose activations are permuted per 128 columns (see x86_scaled_rows.dense_q4x); token t's
    xq at xq + t*xstride, its xd / xs at + t*ngx; gs a multiple of 128; res float32 [tt] out."""
    setup = f"""  %t0 = add i64 %cols, 127
  %nch = udiv i64 %t0, 128
  %cpg = udiv i64 %gs, 128
  %t1 = add i64 %cols, 1
  %rowbytes = lshr i64 %t1, 1
  %t2 = add i64 %nch, %cpg
  %t3 = sub i64 %t2, 1
  %ng = udiv i64 %t3, %cpg
{_xstrides(tt)}"""
    step = f"""  %boff = mul i64 %k, 64
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
  %xoff2 = add i64 %xoff, 64
{_xloads(tt, "%xoff", "l")}{_dots(tt, "il", "%lo", "l")}{_xloads(tt, "%xoff2", "h")}{_dots(tt, "ih", "%hi", "h")}  %ppn = add i64 %pp, 0
  br label %kend
kend:
"""
    return _tile_fn(f"zoo_mm_q4x_{tt}", "ptr %qw, i64 %cols, i64 %gs, ptr %xq, i64 %xstride", setup, step, tt,
                    ("il", "ih"))


def sparse_tile(kind: str, tt: int) -> str:
    """void @zoo_mm_sparse_{kind}_{tt}(mask, nwords, codes, gw, xq, xstride, sc, xd, xs, ngx, zs, hz, zc,
    res): one sparse row (codes one a byte, staged as for the matvec) against tt tokens; one
    vpexpandb per mask word serves all tt tokens. zs / hz unused (zero point zc)."""
    setup = f"""  %cpg = add i64 %gw, 0
  %nch = add i64 %nwords, 0
  %t0 = add i64 %nwords, %gw
  %t1 = sub i64 %t0, 1
  %ng = udiv i64 %t1, %gw
{_xstrides(tt)}"""
    fill, fix = ("splat(i8 8)", "") if kind == "q4" else ("zeroinitializer", "xor")
    step = f"""  %mp = getelementptr i64, ptr %mask, i64 %k
  %m = load i64, ptr %mp, align 8
  %pf = getelementptr i8, ptr %mp, i64 {PREFETCH}
  call void @llvm.prefetch.p0(ptr %pf, i32 0, i32 0, i32 1)
  %mk = bitcast i64 %m to <64 x i1>
  %cp = getelementptr i8, ptr %codes, i64 %pp
  %cv = load volatile <64 x i8>, ptr %cp, align 1
  %e = call <64 x i8> @llvm.x86.avx512.mask.expand.v64i8(<64 x i8> %cv, <64 x i8> {fill}, <64 x i1> %mk)
  %u = {"xor" if fix else "add"} <64 x i8> %e, {"splat(i8 -128)" if fix else "zeroinitializer"}
  %xoff = mul i64 %k, 64
{_xloads(tt, "%xoff", "w")}{_dots(tt, "iw", "%u", "w")}  %pc = call i64 @llvm.ctpop.i64(i64 %m)
  %ppn = add i64 %pp, %pc
  br label %kend
kend:
"""
    return _tile_fn(f"zoo_mm_sparse_{kind}_{tt}",
                    "ptr %mask, i64 %nwords, ptr %codes, i64 %gw, ptr %xq, i64 %xstride", setup, step, tt, ("iw",))


def module_tiles() -> str:
    """The tile kernels for TILE tokens and for one token (the remainder of a block of tokens)."""
    tiles = [f(tt) for tt in (TILE, 1) for f in (q4_tile, lambda n: sparse_tile("q4", n), lambda n: sparse_tile("q8", n))]
    return "\n".join(tiles)

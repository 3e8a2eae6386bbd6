"""LLVM IR text of the AVX-512 matmul tile kernels: one weight row against a tile of TT tokens.

Prefill is compute-bound, so each 64-byte step of weight codes is decoded once (q4: and / shift;
sparse: one vpexpandb) and then multiplied with the int8 activations of every token of the tile
(one VNNI vpdpbusd per token), which cuts the decode work per token by TT. Same arithmetic as the
matvec row kernels of x86_rows.py (int32 lanes per group, one FMA per group and token with
scale x activation scale, zero point removed once per group); see matmul/vnni.py for the callers.
"""

from __future__ import annotations

from .common import PREFETCH, iota, load_chunk

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
    """The sparse tile kernels for TILE tokens and for one token (the remainder of a block of tokens), the q4
    one for one token (fewer than SMALL_TILE tokens) and the dense q4 and q8 tiles with VNNI (q4_tile_avx2, vnni=True)."""
    tiles = [f(tt) for tt in (TILE, 1) for f in (lambda n: sparse_tile("q4", n), lambda n: sparse_tile("q8", n))]
    dense = [q4_tile_avx2(tt, vnni=True, kind=kind) for tt in AVX2_TILES for kind in ("q4", "q8")]
    return "\n".join(tiles + [q4_tile(1)] + dense)


# tokens per AVX2 tile: 8 int32 + 2 float accumulators and 4 decoded code vectors in 16 ymm (the float ones spill
# once a group); measured against 4 in one process: 1.4x faster on 4096x11008, equal on SmolLM2's shapes
AVX2_TILE = 8
# tokens per tile from SMALL_TILE up to AVX2_TILE - 1 (batched decode of 4-7 sequences): the codes decoded once
# for 4 tokens instead of one call per token (SmolLM2 q4, 4 tokens, one thread: see docs/kernels.md)
SMALL_TILE = 4
AVX2_TILES = (AVX2_TILE, SMALL_TILE)


def _q4_codes() -> str:
    """64 code bytes (128 columns) of a q4 row at %wp, %rem bytes left in the row -> %lo0, %lo1, %hi0, %hi1."""
    return f"""  %rem = sub i64 %rowbytes, %boff
  %full = icmp uge i64 %rem, 64
  br i1 %full, label %wf, label %wt
wf:
  %w0f = load <32 x i8>, ptr %wp, align 1
  %wp1 = getelementptr i8, ptr %wp, i64 32
  %w1f = load <32 x i8>, ptr %wp1, align 1
  br label %wj
wt:
  %rm4 = and i64 %rem, 3
  %al = icmp eq i64 %rm4, 0
  br i1 %al, label %wd, label %wb
wd:
  %nd = lshr i64 %rem, 2
  %nd32 = trunc i64 %nd to i32
  %ndv = insertelement <8 x i32> poison, i32 %nd32, i64 0
  %nds = shufflevector <8 x i32> %ndv, <8 x i32> poison, <8 x i32> zeroinitializer
  %dk0 = icmp ult <8 x i32> <i32 0, i32 1, i32 2, i32 3, i32 4, i32 5, i32 6, i32 7>, %nds
  %dk1 = icmp ult <8 x i32> <i32 8, i32 9, i32 10, i32 11, i32 12, i32 13, i32 14, i32 15>, %nds
  %wd0 = call <8 x i32> @llvm.masked.load.v8i32.p0(ptr %wp, i32 1, <8 x i1> %dk0, <8 x i32> zeroinitializer)
  %wpd = getelementptr i8, ptr %wp, i64 32
  %wd1 = call <8 x i32> @llvm.masked.load.v8i32.p0(ptr %wpd, i32 1, <8 x i1> %dk1, <8 x i32> zeroinitializer)
  %w0d = bitcast <8 x i32> %wd0 to <32 x i8>
  %w1d = bitcast <8 x i32> %wd1 to <32 x i8>
  br label %wj
wb:
  %ri = trunc i64 %rem to i8
  %rv = insertelement <32 x i8> poison, i8 %ri, i64 0
  %rs = shufflevector <32 x i8> %rv, <32 x i8> poison, <32 x i32> zeroinitializer
  %mk0 = icmp ult <32 x i8> {iota(32)}, %rs
  %w0t = call <32 x i8> @llvm.masked.load.v32i8.p0(ptr %wp, i32 1, <32 x i1> %mk0, <32 x i8> zeroinitializer)
  %io32 = add <32 x i8> {iota(32)}, splat(i8 32)
  %mk1 = icmp ult <32 x i8> %io32, %rs
  %wpt = getelementptr i8, ptr %wp, i64 32
  %w1t = call <32 x i8> @llvm.masked.load.v32i8.p0(ptr %wpt, i32 1, <32 x i1> %mk1, <32 x i8> zeroinitializer)
  br label %wj
wj:
  %w0 = phi <32 x i8> [%w0f, %wf], [%w0d, %wd], [%w0t, %wb]
  %w1 = phi <32 x i8> [%w1f, %wf], [%w1d, %wd], [%w1t, %wb]
  %lo0 = and <32 x i8> %w0, splat(i8 15)
  %lo1 = and <32 x i8> %w1, splat(i8 15)
  %w016 = bitcast <32 x i8> %w0 to <16 x i16>
  %w116 = bitcast <32 x i8> %w1 to <16 x i16>
  %sh016 = lshr <16 x i16> %w016, splat(i16 4)
  %sh116 = lshr <16 x i16> %w116, splat(i16 4)
  %sh0 = bitcast <16 x i16> %sh016 to <32 x i8>
  %sh1 = bitcast <16 x i16> %sh116 to <32 x i8>
  %hi0 = and <32 x i8> %sh0, splat(i8 15)
  %hi1 = and <32 x i8> %sh1, splat(i8 15)
"""


def _q8_codes() -> str:
    """128 code bytes of a q8 row at %wp, %rem bytes left in the row -> %c0..%c3, unsigned (code + 128); bytes
    past the row load as 0x80 (code 0, so they add nothing whatever the activations there)."""
    full = "".join(f"  %wp{i}f = getelementptr i8, ptr %wp, i64 {32 * i}\n  %w{i}f = load <32 x i8>, ptr %wp{i}f, align 1\n"
                   for i in range(4))
    tail = "".join(f"""  %io{i} = add <32 x i8> {iota(32)}, splat(i8 {32 * i})
  %mk{i} = icmp ult <32 x i8> %io{i}, %rs
  %wp{i}t = getelementptr i8, ptr %wp, i64 {32 * i}
  %w{i}t = call <32 x i8> @llvm.masked.load.v32i8.p0(ptr %wp{i}t, i32 1, <32 x i1> %mk{i}, <32 x i8> splat(i8 -128))
""" for i in range(4))
    join = "".join(f"  %w{i} = phi <32 x i8> [%w{i}f, %wf], [%w{i}t, %wt]\n" for i in range(4))
    join += "".join(f"  %c{i} = xor <32 x i8> %w{i}, splat(i8 -128)\n" for i in range(4))
    return f"""  %rem = sub i64 %rowbytes, %boff
  %full = icmp uge i64 %rem, 128
  br i1 %full, label %wf, label %wt
wf:
{full}  br label %wj
wt:
  %ri = trunc i64 %rem to i8
  %rv = insertelement <32 x i8> poison, i8 %ri, i64 0
  %rs = shufflevector <32 x i8> %rv, <32 x i8> poison, <32 x i32> zeroinitializer
{tail}  br label %wj
wj:
{join}"""


def q4_tile_avx2(tt: int, vnni: bool = False, kind: str = "q4") -> str:
    """void @zoo_mm_q4x_avx2_{tt} (vnni: @zoo_mm_q4x_vnni_{tt}; kind q8: @zoo_mm_q8_vnni_{tt}) (qw, nr, qstride, sstride, cols, gs, xq, xstride, sc, xdt, xst, tstride, zs, hz, zc,
    out, ostride, skip, accum): nr q4 rows (qstride bytes and sstride scales / zeros apart) against tt tokens (a
    multiple of 4) on an AVX2-only CPU (no VNNI): activations permuted as for q4_tile. Token t >= skip of row i
    goes to out[t * ostride + i] (accum: added to it). The row loop and the stores are inside: a call per row,
    and numba storing each output, cost as much as the work of a 576-column row (0.8x numpy f32 on 1536x576).
    The last 128 columns of a row are read with a dword-masked load (`vpmaskmovd`) when the row's bytes are a
    multiple of 4, else a byte-masked load (scalarized on AVX2: slow, but only for odd column counts).

    Per 128 columns, the 64 code bytes are decoded once (and / shift / and: 4 ymm of unsigned codes) and
    each token does 4 `vpmaddubsw` (codes x int8, 16-bit pair sums, at most 2*15*127 each), adds them in
    16 bits (at most 4 * 3810: no overflow), one `vpmaddwd` by 1 into its int32 lanes. At a group's end,
    two rounds of `vphaddd` fold 4 tokens' int32 lanes into one ymm [t0..t3 | t0..t3], converted once and
    FMA'd with the 4 tokens' scale products (weight scale x activation scale) into one float accumulator; the
    zero-point correction s z X[g] goes into the same accumulator, half in each 128-bit lane (exact halving), so
    no correction registers are needed. A row's last 64 columns alone (576 = 4.5 x 128) take a half step.
    xdt / xst: activation scale and scale x sum of codes, [group, token] with tstride floats a group
    (pointers at this chunk's first group and the tile's first token).

    vnni (the AVX-512 module's dense q4 matmul): the same frame, each token's 4 quads are 4 ymm `vpdpbusd` (exact
    int32 sums, so the same numbers) in two dependency chains. It beat 8-token zmm tiles (q4_tile) by 1.2-1.7x,
    which did 16 zmm dots per 128 columns but then, with a group of 128, 8 converts + 8 broadcast FMAs + 8 scalar
    corrections (spilled) a group, plus a call, 8 horizontal sums and numba stores per row; zmm dots in this frame
    (a zmm -> ymm fold per token a group) measured 1.2x slower than these ymm ones.

    kind q8 (vnni only; the dense q8 matmul, e.g. SmolLM2's tied q8 head in batched decode): the same frame over
    128 code bytes per 128 columns (activations not permuted), signed codes made unsigned by xor 0x80 and the
    offset taken back with zc = 128 as q4's zero point (masked tail bytes load as 0x80, i.e. code 0).
    """
    q8 = kind == "q8"
    assert not q8 or vnni, "the q8 tile needs VNNI (vpmaddubsw pair sums of 255 x 127 saturate)"
    m = tt // 4
    phis_i = "".join(f"  %ia{t} = phi <8 x i32> [zeroinitializer, %gloop], [%ian{t}, %kj]\n" for t in range(tt))
    phis_f = "".join(f"  %fa{j} = phi <8 x float> [zeroinitializer, %rloop], [%fan{j}, %zc2]\n" for j in range(m))
    def token_steps(tag: str, quads: tuple[int, ...]) -> str:
        """Each token's dot with the decoded codes: quads of 32 columns (q4: 0, 1 low nibbles, 2, 3 high)."""
        codes = ("%c0", "%c1", "%c2", "%c3") if q8 else ("%lo0", "%lo1", "%hi0", "%hi1")
        text = ""
        for t in range(tt):
            text += f"  %xb{tag}{t} = add i64 %xoff, %xso{t}\n"
            chains = {0: f"%ia{t}", 1: "zeroinitializer"}  # vnni: two dependency chains (quads 0, 2 and 1, 3)
            for q in quads:
                v = f"{tag}{t}.{q}"
                text += (f"  %xo{v} = add i64 %xb{tag}{t}, {32 * q}\n  %xp{v} = getelementptr i8, ptr %xq, i64 %xo{v}\n"
                         f"  %x{v} = load <32 x i8>, ptr %xp{v}, align 1\n")
                if vnni:  # codes x int8 summed straight into int32 lanes
                    text += (f"  %p{v} = call <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32> {chains[q % 2]}, "
                             f"<32 x i8> {codes[q]}, <32 x i8> %x{v})\n")
                    chains[q % 2] = f"%p{v}"
                else:
                    text += (f"  %p{v} = call <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8> {codes[q]}, "
                             f"<32 x i8> %x{v})\n")
            if vnni:
                text += f"  %ian{tag}{t} = add <8 x i32> {chains[0]}, {chains[1]}\n"
                continue
            prev = f"%p{tag}{t}.{quads[0]}"
            for q in quads[1:]:
                text += f"  %s{tag}{t}.{q} = add <16 x i16> {prev}, %p{tag}{t}.{q}\n"
                prev = f"%s{tag}{t}.{q}"
            text += (f"  %d{tag}{t} = call <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16> {prev}, <16 x i16> splat(i16 1))\n"
                     f"  %ian{tag}{t} = add <8 x i32> %ia{t}, %d{tag}{t}\n")
        return text

    # a row's last 64 columns alone (576 = 4.5 x 128: SmolLM2) take the half step: 2 vpmaddubsw a token, not 4
    step = f"""  %half = icmp ule i64 %rem, {64 if q8 else 32}
  br i1 %half, label %kh, label %kf
kf:
{token_steps("f", (0, 1, 2, 3))}  br label %kj
kh:
{token_steps("h", (0, 1) if q8 else (0, 2))}  br label %kj
kj:
""" + "".join(f"  %ian{t} = phi <8 x i32> [%ianf{t}, %kf], [%ianh{t}, %kh]\n" for t in range(tt))
    ends = ""
    for j in range(m):
        a, b, c, d = (f"%ian{4 * j + i}" for i in range(4))
        ends += f"""  %hab{j} = call <8 x i32> @llvm.x86.avx2.phadd.d(<8 x i32> {a}, <8 x i32> {b})
  %hcd{j} = call <8 x i32> @llvm.x86.avx2.phadd.d(<8 x i32> {c}, <8 x i32> {d})
  %h{j} = call <8 x i32> @llvm.x86.avx2.phadd.d(<8 x i32> %hab{j}, <8 x i32> %hcd{j})
  %hf{j} = sitofp <8 x i32> %h{j} to <8 x float>
  %xdq{j} = getelementptr float, ptr %xdg, i64 {4 * j}
  %xd4{j} = load <4 x float>, ptr %xdq{j}, align 4
  %sd4{j} = fmul <4 x float> %xd4{j}, %sv
  %sd8{j} = shufflevector <4 x float> %sd4{j}, <4 x float> poison, <8 x i32> <i32 0, i32 1, i32 2, i32 3, i32 0, i32 1, i32 2, i32 3>
  %fam{j} = call <8 x float> @llvm.fma.v8f32(<8 x float> %hf{j}, <8 x float> %sd8{j}, <8 x float> %fa{j})
  %xsq{j} = getelementptr float, ptr %xsg, i64 {4 * j}
  %xs4{j} = load <4 x float>, ptr %xsq{j}, align 4
  %xs8{j} = shufflevector <4 x float> %xs4{j}, <4 x float> poison, <8 x i32> <i32 0, i32 1, i32 2, i32 3, i32 0, i32 1, i32 2, i32 3>
  %fan{j} = call <8 x float> @llvm.fma.v8f32(<8 x float> %xs8{j}, <8 x float> %szh, <8 x float> %fam{j})
"""
    rets = ""
    for j in range(m):
        rets += f"""  %rl{j} = shufflevector <8 x float> %fan{j}, <8 x float> poison, <4 x i32> <i32 0, i32 1, i32 2, i32 3>
  %rh{j} = shufflevector <8 x float> %fan{j}, <8 x float> poison, <4 x i32> <i32 4, i32 5, i32 6, i32 7>
  %rs{j} = fadd <4 x float> %rl{j}, %rh{j}
"""
        for i in range(4):
            t = 4 * j + i
            rets += f"""  %ok{t} = icmp uge i64 {t}, %skip
  br i1 %ok{t}, label %st{t}, label %nx{t}
st{t}:
  %v{t} = extractelement <4 x float> %rs{j}, i64 {i}
  %oo{t} = mul i64 %ostride, {t}
  %op{t} = getelementptr float, ptr %orow, i64 %oo{t}
  %old{t} = load float, ptr %op{t}, align 4
  %base{t} = select i1 %accb, float %old{t}, float 0.0
  %new{t} = fadd float %base{t}, %v{t}
  store float %new{t}, ptr %op{t}, align 4
  br label %nx{t}
nx{t}:
"""
    if q8:
        rowbytes = "  %rowbytes = add i64 %cols, 0\n"
        loads = _q8_codes()
    else:
        rowbytes = "  %t1 = add i64 %cols, 1\n  %rowbytes = lshr i64 %t1, 1\n"
        loads = _q4_codes()
    name = f"zoo_mm_q8_vnni_{tt}" if q8 else f"zoo_mm_q4x_{'vnni' if vnni else 'avx2'}_{tt}"
    return f"""define void @{name}(ptr %qw, i64 %nr, i64 %qstride, i64 %sstride, i64 %cols, i64 %gs, ptr %xq, i64 %xstride, ptr %sc, ptr %xdt, ptr %xst, i64 %tstride, ptr %zs, i64 %hz, float %zc, ptr %out, i64 %ostride, i64 %skip, i64 %accum) #0 {{
entry:
  %t0 = add i64 %cols, 127
  %nch = lshr i64 %t0, 7
  %cpg = lshr i64 %gs, 7
{rowbytes}  %t2 = add i64 %nch, %cpg
  %t3 = sub i64 %t2, 1
  %cpg1 = icmp eq i64 %cpg, 1
  br i1 %cpg1, label %ng1, label %ngd
ngd:
  %ngq = udiv i64 %t3, %cpg
  br label %ng1
ng1:
  %ng = phi i64 [%nch, %entry], [%ngq, %ngd]
  %nrow = add i64 %nr, 0
  %accb = icmp ne i64 %accum, 0
  br label %rloop
rloop:
  %row = phi i64 [0, %ng1], [%row2, %nx{tt - 1}]
  %qo = mul i64 %row, %qstride
  %qwr = getelementptr i8, ptr %qw, i64 %qo
  %so = mul i64 %row, %sstride
  %scr = getelementptr i16, ptr %sc, i64 %so
  %zsr = getelementptr i8, ptr %zs, i64 %so
  %orow = getelementptr float, ptr %out, i64 %row
{_xstrides(tt)}  br label %gloop
gloop:
  %g = phi i64 [0, %rloop], [%g2, %zc2]
{phis_f}  %k0 = mul i64 %g, %cpg
  %k1a = add i64 %k0, %cpg
  %k1c = icmp ult i64 %k1a, %nch
  %k1 = select i1 %k1c, i64 %k1a, i64 %nch
  br label %kloop
kloop:
  %k = phi i64 [%k0, %gloop], [%k2, %kj]
{phis_i}  %boff = mul i64 %k, {128 if q8 else 64}
  %wp = getelementptr i8, ptr %qwr, i64 %boff
  %pfp = getelementptr i8, ptr %wp, i64 {PREFETCH}
  call void @llvm.prefetch.p0(ptr %pfp, i32 0, i32 0, i32 1)
{loads}  %xoff = mul i64 %k, 128
{step}  %k2 = add i64 %k, 1
  %kc = icmp ult i64 %k2, %k1
  br i1 %kc, label %kloop, label %gend
gend:
  %scp = getelementptr i16, ptr %scr, i64 %g
  %sch = load half, ptr %scp, align 2
  %s = fpext half %sch to float
  %zp = getelementptr i8, ptr %zsr, i64 %g
  %hasz = icmp ne i64 %hz, 0
  br i1 %hasz, label %zl, label %zc2
zl:
  %zb = load i8, ptr %zp, align 1
  %zf = uitofp i8 %zb to float
  br label %zc2
zc2:
  %z = phi float [%zf, %zl], [%zc, %gend]
  %svi = insertelement <4 x float> poison, float %s, i64 0
  %sv = shufflevector <4 x float> %svi, <4 x float> poison, <4 x i32> zeroinitializer
  %sz = fmul float %s, %z
  %szn = fmul float %sz, -0.5
  %szhi = insertelement <8 x float> poison, float %szn, i64 0
  %szh = shufflevector <8 x float> %szhi, <8 x float> poison, <8 x i32> zeroinitializer
  %go = mul i64 %g, %tstride
  %xdg = getelementptr float, ptr %xdt, i64 %go
  %xsg = getelementptr float, ptr %xst, i64 %go
{ends}  %g2 = add i64 %g, 1
  %gc = icmp ult i64 %g2, %ng
  br i1 %gc, label %gloop, label %done
done:
{rets}  %row2 = add i64 %row, 1
  %rc = icmp ult i64 %row2, %nrow
  br i1 %rc, label %rloop, label %exit
exit:
  ret void
}}
"""

"""LLVM IR text of the SIMD matvec row kernels (AVX-512 VNNI/VBMI2 and AVX2), generated from one template.

Each function computes one output row: int4/int8 weight codes times int8 activations, summed in
int32 lanes per group and scaled once per group by sd[g] = weight scale x activation scale (the
caller precomputes sd for the row, and subtracts the zero-point correction, see matvec/x86.py).
Variants: `isa` ("avx512" | "avx2") picks the dot instruction, W (64 | 32) the bytes per chunk.
"""

from __future__ import annotations

from .common import PREFETCH, load_chunk, unpack_nibbles

def attrs(isa: str) -> str:
    if isa == "avx2":  # compile as a real AVX2 machine would, even on an AVX-512 host
        return '"target-features"="+avx2,+fma,+f16c,+popcnt,+bmi2,-avx512f,-avxvnni"'
    return '"target-features"="+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avx512vbmi2,+popcnt"'


def _dot(isa: str, w: int, out: str, acc: str, u: str, x: str, signed: bool) -> str:
    """IR lines: out = acc + sum over 4-byte lanes of u * x (u unsigned codes, or signed if `signed`)."""
    lanes = w // 4
    if isa == "avx512":
        assert not signed
        return (f"  {out} = call <{lanes} x i32> @llvm.x86.avx512.vpdpbusd.{w * 8}(<{lanes} x i32> {acc}, "
                f"<{w} x i8> {u}, <{w} x i8> {x})\n")
    pre = ""
    if signed:  # |w| * sign(w) x: pmaddubsw needs an unsigned left operand
        pre = (f"  {out}.a = call <32 x i8> @llvm.abs.v32i8(<32 x i8> {u}, i1 false)\n"
               f"  {out}.s = call <32 x i8> @llvm.x86.avx2.psign.b(<32 x i8> {x}, <32 x i8> {u})\n")
        u, x = f"{out}.a", f"{out}.s"
    return (pre + f"  {out}.p = call <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8> {u}, <32 x i8> {x})\n"
            f"  {out}.q = call <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16> {out}.p, <16 x i16> splat(i16 1))\n"
            f"  {out} = add <8 x i32> {acc}, {out}.q\n")


def _group_end(lanes: int) -> str:
    """Scale the group's int32 lanes by sd[g] (weight scale x activation scale) into the float sum."""
    return f"""gend:
  %sdp = getelementptr float, ptr %sd, i64 %g
  %sdf = load float, ptr %sdp, align 4
  %sdi = insertelement <{lanes} x float> poison, float %sdf, i64 0
  %sdv = shufflevector <{lanes} x float> %sdi, <{lanes} x float> poison, <{lanes} x i32> zeroinitializer
  %fv = sitofp <{lanes} x i32> %iacc2 to <{lanes} x float>
  %accv2 = call <{lanes} x float> @llvm.fma.v{lanes}f32(<{lanes} x float> %fv, <{lanes} x float> %sdv, <{lanes} x float> %accv)
  %g2 = add i64 %g, 1
  %gc = icmp ult i64 %g2, %ng
  br i1 %gc, label %gloop, label %done
done:
  %acct = fadd <{lanes} x float> %accv2, %accb
  %red = call reassoc float @llvm.vector.reduce.fadd.v{lanes}f32(float 0.0, <{lanes} x float> %acct)
  ret float %red
"""


def dense_row(isa: str, kind: str, w: int) -> str:
    """float @zoo_{kind}_{isa}_{w}(qw, cols, gs, xq, sd): sum_g sd[g] * (codes . xq) over one row.

    qw: the row's codes (q4: ceil(cols/2) bytes, unsigned; q8: cols int8, used as q + 128 on avx512,
    signed on avx2); gs: group size (a multiple of w); xq int8 activations zero-padded to a
    multiple of 64; sd float32 [n_groups].
    """
    h = w // 2 if kind == "q4" else w
    lanes = w // 4
    name = f"zoo_{kind}_{isa}_{w}"
    row_len = "%rowbytes = lshr i64 %t1, 1" if kind == "q4" else "%rowbytes = add i64 %cols, 0"
    if kind == "q4":
        codes = unpack_nibbles(h, "%v", "%u", minus8=False)
        dot = _dot(isa, w, "%iacc2", "%iacc", "%u", "%xv", signed=False)
    elif isa == "avx512":  # int8 + 128 is an unsigned code with zero point 128
        codes = f"  %u = xor <{w} x i8> %v, splat(i8 -128)\n"
        dot = _dot(isa, w, "%iacc2", "%iacc", "%u", "%xv", signed=False)
    else:
        codes = ""
        dot = _dot(isa, w, "%iacc2", "%iacc", "%v", "%xv", signed=True)
    return f"""define float @{name}(ptr %qw, i64 %cols, i64 %gs, ptr %xq, ptr %sd) #0 {{
entry:
  %t0 = add i64 %cols, {w - 1}
  %nch = udiv i64 %t0, {w}
  %cpg = udiv i64 %gs, {w}
  %t1 = add i64 %cols, 1
  {row_len}
  %t2 = add i64 %nch, %cpg
  %t3 = sub i64 %t2, 1
  %ng = udiv i64 %t3, %cpg
  br label %gloop
gloop:
  %g = phi i64 [0, %entry], [%g2, %gend]
  %accv = phi <{lanes} x float> [zeroinitializer, %entry], [%accb, %gend]
  %accb = phi <{lanes} x float> [zeroinitializer, %entry], [%accv2, %gend]
  %k0 = mul i64 %g, %cpg
  %k1a = add i64 %k0, %cpg
  %k1c = icmp ult i64 %k1a, %nch
  %k1 = select i1 %k1c, i64 %k1a, i64 %nch
  br label %kloop
kloop:
  %k = phi i64 [%k0, %gloop], [%k2, %v.j]
  %iacc = phi <{lanes} x i32> [zeroinitializer, %gloop], [%iacc2, %v.j]
  %boff = mul i64 %k, {h}
  %wp = getelementptr i8, ptr %qw, i64 %boff
  %pfp = getelementptr i8, ptr %wp, i64 {PREFETCH}
  call void @llvm.prefetch.p0(ptr %pfp, i32 0, i32 0, i32 1)
  %rem = sub i64 %rowbytes, %boff
{load_chunk(h, "%wp", "%rem", "%v")}{codes}  %xoff = mul i64 %k, {w}
  %xp = getelementptr i8, ptr %xq, i64 %xoff
  %xv = load <{w} x i8>, ptr %xp, align 1
{dot}  %k2 = add i64 %k, 1
  %kc = icmp ult i64 %k2, %k1
  br i1 %kc, label %kloop, label %gend
{_group_end(lanes)}}}
"""


def unpack_fn(isa: str, w: int) -> str:
    """void @zoo_unpack_{isa}_{w}(src, nbytes, dst): nibbles -> one code per byte (avx2: minus 8)."""
    h = w // 2
    return f"""define void @zoo_unpack_{isa}_{w}(ptr %src, i64 %nbytes, ptr %dst) #0 {{
entry:
  %e0 = icmp eq i64 %nbytes, 0
  br i1 %e0, label %done, label %loop
loop:
  %k = phi i64 [0, %entry], [%k2, %v.j]
  %sp = getelementptr i8, ptr %src, i64 %k
  %pfp = getelementptr i8, ptr %sp, i64 {PREFETCH}
  call void @llvm.prefetch.p0(ptr %pfp, i32 0, i32 0, i32 1)
  %rem = sub i64 %nbytes, %k
{load_chunk(h, "%sp", "%rem", "%v")}{unpack_nibbles(h, "%v", "%u", minus8=(isa == "avx2"))}  %do = shl i64 %k, 1
  %dp = getelementptr i8, ptr %dst, i64 %do
  store <{w} x i8> %u, ptr %dp, align 1
  %k2 = add i64 %k, {h}
  %c = icmp ult i64 %k2, %nbytes
  br i1 %c, label %loop, label %done
done:
  ret void
}}
"""


def expand_lut() -> str:
    """[256 x i64]: for a mask byte b, the pshufb indices that place its set bits' codes (0x80 = zero)."""
    entries = []
    for b in range(256):
        idx = [(bin(b & ((1 << j) - 1)).count("1") if b >> j & 1 else 0x80) for j in range(8)]
        value = int.from_bytes(bytes(idx), "little")
        entries.append(f"i64 {value - (1 << 64) if value >= 1 << 63 else value}")
    return "@zoo_expand_lut = internal constant [256 x i64] [" + ", ".join(entries) + "]\n"


def _expand_avx2(half: int) -> str:
    """IR: expand 32 mask bits (word bits 32*half..) of signed codes at %cp+%p{half}.0 into %e{half}."""
    s, names, luts = "", [], []
    for i in range(4):
        sh, n = 32 * half + 8 * i, f"%h{half}.{i}"
        s += (f"  {n}.m = lshr i64 %m, {sh}\n  {n}.b = and i64 {n}.m, 255\n"
              f"  {n}.sp = getelementptr i8, ptr %codes, i64 %p{half}.{i}\n  {n}.src = load i64, ptr {n}.sp, align 1\n"
              f"  {n}.lp = getelementptr i64, ptr @zoo_expand_lut, i64 {n}.b\n  {n}.l0 = load i64, ptr {n}.lp, align 8\n"
              f"  {n}.l = add i64 {n}.l0, {578721382704613384 if i % 2 else 0}\n"
              f"  {n}.c = call i64 @llvm.ctpop.i64(i64 {n}.b)\n  %p{half}.{i + 1} = add i64 %p{half}.{i}, {n}.c\n")
        names.append(f"{n}.src")
        luts.append(f"{n}.l")
    for vec, items in (("sv", names), ("iv", luts)):
        prev = "poison"
        for i, item in enumerate(items):
            s += f"  %{vec}{half}.{i} = insertelement <4 x i64> {prev}, i64 {item}, i64 {i}\n"
            prev = f"%{vec}{half}.{i}"
        s += f"  %{vec}{half} = bitcast <4 x i64> {prev} to <32 x i8>\n"
    s += f"  %e{half} = call <32 x i8> @llvm.x86.avx2.pshuf.b(<32 x i8> %sv{half}, <32 x i8> %iv{half})\n"
    return s


def sparse_row(isa: str, kind: str) -> str:
    """float @zoo_sparse_{kind}_{isa}(mask, nwords, codes, gw, xq, sd): one sparse row.

    mask: the row's uint64 words; codes: one byte per stored value in column order (sparse-q4: the
    row's nibbles unpacked, sparse-q8: the row's values copied, to a padded scratch);
    gw: mask words per group. AVX2 only: a pshufb lookup table places 8 codes per mask byte (the
    AVX-512 sparse rows are _ir_rows.sparse_rowx).
    """
    assert isa == "avx2", "avx512 sparse rows: x86_scaled_rows.sparse_rowx"
    lanes = 8
    body = "  %p0.0 = add i64 %pp, 0\n" + _expand_avx2(0) + "  %p1.0 = add i64 %p0.4, 0\n" + _expand_avx2(1)
    body += ("  %xv0 = load <32 x i8>, ptr %xp, align 1\n  %xp1 = getelementptr i8, ptr %xp, i64 32\n"
             "  %xv1 = load <32 x i8>, ptr %xp1, align 1\n"
             + _dot(isa, 32, "%ia", "%iacc", "%e0", "%xv0", True)
             + _dot(isa, 32, "%iacc2", "%ia", "%e1", "%xv1", True))
    return f"""define float @zoo_sparse_{kind}_{isa}(ptr %mask, i64 %nwords, ptr %codes, i64 %gw, ptr %xq, ptr %sd) #0 {{
entry:
  %t0 = add i64 %nwords, %gw
  %t1 = sub i64 %t0, 1
  %ng = udiv i64 %t1, %gw
  br label %gloop
gloop:
  %g = phi i64 [0, %entry], [%g2, %gend]
  %accv = phi <{lanes} x float> [zeroinitializer, %entry], [%accb, %gend]
  %accb = phi <{lanes} x float> [zeroinitializer, %entry], [%accv2, %gend]
  %p = phi i64 [0, %entry], [%pp2, %gend]
  %w0 = mul i64 %g, %gw
  %w1a = add i64 %w0, %gw
  %w1c = icmp ult i64 %w1a, %nwords
  %w1 = select i1 %w1c, i64 %w1a, i64 %nwords
  br label %wloop
wloop:
  %w = phi i64 [%w0, %gloop], [%w2, %wloop]
  %iacc = phi <{lanes} x i32> [zeroinitializer, %gloop], [%iacc2, %wloop]
  %pp = phi i64 [%p, %gloop], [%pp2, %wloop]
  %mp = getelementptr i64, ptr %mask, i64 %w
  %m = load i64, ptr %mp, align 8
  %pfp = getelementptr i8, ptr %mp, i64 {PREFETCH}
  call void @llvm.prefetch.p0(ptr %pfp, i32 0, i32 0, i32 1)
  %xo = mul i64 %w, 64
  %xp = getelementptr i8, ptr %xq, i64 %xo
{body}  %pc = call i64 @llvm.ctpop.i64(i64 %m)
  %pp2 = add i64 %pp, %pc
  %w2 = add i64 %w, 1
  %wc = icmp ult i64 %w2, %w1
  br i1 %wc, label %wloop, label %gend
{_group_end(lanes)}}}
"""

"""Target-independent LLVM IR of the portable tile4-q4 matvec (format/SPEC.md, tile4-q4): stage, then dot.

Only generic IR (vectors of float / i8 / i32, `llvm.masked.compressstore`, `llvm.fmuladd`, `llvm.ctpop`,
`fpext half`): no x86 intrinsics, so LLVM lowers it for any CPU it targets (SSE/AVX/AVX-512, NEON, ...).
Activations stay float32 (no int8 quantization), as on the other portable kernels.

`stage`: a tile's kept float32 activations, group g at g*K. Three formulations of the same result:
  - "compress": `llvm.masked.compressstore` of 16 floats at a time (AVX-512 `vcompressps`), used when
    the host has AVX-512F;
  - elsewhere LLVM would scalarize a compressstore into one branch per lane (random masks mispredict
    half of them), so branch-free code instead: "bits_K" (K <= 48), two fixed walks of K set bits
    (count trailing zeros, clear the lowest), one per mask word; "scalar" (K = 64), one
    unconditional store per column, the output position advancing by the column's mask bit.
`dot`: the 4 rows of a tile on the staged activations, one function per K (constant offsets): per
16 code bytes (= 16 lanes of the low nibbles and 16 of the high ones, SPEC lane layout), widen to
i32, minus the zero point 8, to float, multiply-add with the 16 staged activations those lanes
meet; per group and row one multiply-add by the row's scale into the row's accumulator.
"""

from __future__ import annotations

from .tile4_x86 import KEEPS, stage_loop
STAGES = ("compress", "scalar")


def _splat(ty: str, n: int, v) -> str:
    return "<" + ", ".join([f"{ty} {v}"] * n) + ">"


def _half(h: int) -> str:
    """IR: %m{h}, the group's mask word h, and %x{h}p, the start of its 64 activations."""
    return (f"  %m{h}p = getelementptr i64, ptr %mask, i64 %w{h}\n  %m{h} = load i64, ptr %m{h}p, align 8\n"
            f"  %x{h}p = getelementptr float, ptr %x, i64 %xo{h}\n")


def stage_fn(kind: str) -> str:
    """void @zoo_t4p_stage_{kind}(mask, x, ng, keep, cbuf): mask the tile's uint64 [2 ng]; x float32
    [128 ng] (zero padded); cbuf float32 [ng K + 1] ("scalar" stores one float past each group's K)."""
    if kind == "compress":  # 16 lanes a store (a 64-lane one does not compile in every LLVM backend)
        body, q = "", "%p"
        for h in range(2):
            body += _half(h)
            for j in range(4):
                n = f"%c{h}_{j}"
                body += (f"  {n}.s = lshr i64 %m{h}, {16 * j}\n  {n}.m = trunc i64 {n}.s to i16\n"
                         f"  {n}.k = bitcast i16 {n}.m to <16 x i1>\n"
                         f"  {n}.xp = getelementptr float, ptr %x{h}p, i64 {16 * j}\n"
                         f"  {n}.x = load <16 x float>, ptr {n}.xp, align 4\n"
                         f"  {n}.dp = getelementptr float, ptr %cbuf, i64 {q}\n"
                         f"  call void @llvm.masked.compressstore.v16f32(<16 x float> {n}.x, ptr {n}.dp, <16 x i1> {n}.k)\n"
                         f"  {n}.n = call i16 @llvm.ctpop.i16(i16 {n}.m)\n  {n}.nz = zext i16 {n}.n to i64\n"
                         f"  {n}.q = add i64 {q}, {n}.nz\n")
                q = f"{n}.q"
    else:
        body, q = "", "%p"
        for h in range(2):
            body += _half(h)
            for k in range(64):
                n = f"%c{h}_{k}"
                body += (f"  {n}.xp = getelementptr float, ptr %x{h}p, i64 {k}\n  {n}.x = load float, ptr {n}.xp, align 4\n"
                         f"  {n}.dp = getelementptr float, ptr %cbuf, i64 {q}\n  store float {n}.x, ptr {n}.dp, align 4\n"
                         f"  {n}.s = lshr i64 %m{h}, {k}\n  {n}.b = and i64 {n}.s, 1\n  {n}.q = add i64 {q}, {n}.b\n")
                q = f"{n}.q"
    return stage_loop(f"zoo_t4p_stage_{kind}", "%x", body)


def stage_bits_fn(keep: int) -> str:
    """void @zoo_t4p_stage_bits_{K}(mask, x, ng, keep, cbuf): as stage_fn, by two fixed-length walks of
    set bits (count trailing zeros, clear the lowest): K steps over word 0 store at p.., then K steps over
    word 1 at p + popcount(word 0).. (steps past a word's last bit store garbage the next stores
    overwrite or that lands past the group; x must be readable to 128 ng + 64, cbuf to ng K + K)."""
    body = ""
    for h in range(2):
        body += _half(h)
    body += ("  %d0 = getelementptr float, ptr %cbuf, i64 %p\n"
             "  %n0 = call i64 @llvm.ctpop.i64(i64 %m0)\n  %d1 = getelementptr float, ptr %d0, i64 %n0\n")
    for h in range(2):
        m = f"%m{h}"
        for i in range(keep):
            n = f"%b{h}_{i}"
            body += (f"  {n}.c = call i64 @llvm.cttz.i64(i64 {m}, i1 false)\n"
                     f"  {n}.xp = getelementptr float, ptr %x{h}p, i64 {n}.c\n  {n}.x = load float, ptr {n}.xp, align 4\n"
                     f"  {n}.dp = getelementptr float, ptr %d{h}, i64 {i}\n  store float {n}.x, ptr {n}.dp, align 4\n"
                     f"  {n}.m1 = sub i64 {m}, 1\n  {n}.m = and i64 {m}, {n}.m1\n")
            m = f"{n}.m"
    return stage_loop(f"zoo_t4p_stage_bits_{keep}", "%x", body)


def dot_fn(keep: int) -> str:
    """void @zoo_t4p_dot_{K}(codes, scales, cbuf, ng, out): codes the tile's uint8 [ng 2K], scales its f16
    bits [ng 4], cbuf the staged float32 activations [ng K], out float32 [4]."""
    f16 = "<16 x float>"
    body = f"  %cp = getelementptr float, ptr %cbuf, i64 %cpo\n"
    for i0 in range(0, keep, 16):
        body += f"  %xp{i0} = getelementptr float, ptr %cp, i64 {i0}\n  %x{i0} = load {f16}, ptr %xp{i0}, align 4\n"
    chains: dict[int, str] = {}  # row -> its running group sum
    for b in range(keep // 8):  # 16 code bytes a step
        o = 16 * b
        lane0 = 64 * (o // 32) + o % 32  # low nibbles: lanes lane0.., high nibbles lane0+32..
        body += (f"  %vp{b} = getelementptr i8, ptr %cb, i64 {o}\n  %v{b} = load <16 x i8>, ptr %vp{b}, align 1\n"
                 f"  %w{b} = zext <16 x i8> %v{b} to <16 x i32>\n")
        for half, lane in (("l", lane0), ("h", lane0 + 32)):
            n = f"%{half}{b}"
            if half == "l":
                body += f"  {n}.u = and <16 x i32> %w{b}, {_splat('i32', 16, 15)}\n"
            else:
                body += f"  {n}.u = lshr <16 x i32> %w{b}, {_splat('i32', 16, 4)}\n"
            r, i0 = lane // keep, lane % keep
            body += (f"  {n}.d = sub <16 x i32> {n}.u, {_splat('i32', 16, 8)}\n"
                     f"  {n}.f = sitofp <16 x i32> {n}.d to {f16}\n")
            if r in chains:
                body += f"  {n}.a = call {f16} @llvm.fmuladd.v16f32({f16} {n}.f, {f16} %x{i0}, {f16} {chains[r]})\n"
            else:
                body += f"  {n}.a = fmul {f16} {n}.f, %x{i0}\n"
            chains[r] = f"{n}.a"
    for r in range(4):
        body += (f"  %s{r} = extractelement <4 x float> %s4, i64 {r}\n"
                 f"  %s{r}i = insertelement {f16} poison, float %s{r}, i64 0\n"
                 f"  %s{r}v = shufflevector {f16} %s{r}i, {f16} poison, <16 x i32> zeroinitializer\n"
                 f"  %tot{r}.n = call {f16} @llvm.fmuladd.v16f32({f16} {chains[r]}, {f16} %s{r}v, {f16} %tot{r})\n")
    phis = "".join(f"  %tot{r} = phi {f16} [zeroinitializer, %entry], [%tot{r}.n, %loop]\n" for r in range(4))
    outs = "".join(f"  %row{r} = call reassoc float @llvm.vector.reduce.fadd.v16f32(float 0.0, {f16} %tot{r}.n)\n"
                   f"  %op{r} = getelementptr float, ptr %out, i64 {r}\n  store float %row{r}, ptr %op{r}, align 4\n"
                   for r in range(4))
    return f"""define void @zoo_t4p_dot_{keep}(ptr %codes, ptr %scales, ptr %cbuf, i64 %ng, ptr %out) #0 {{
entry:
  br label %loop
loop:
  %g = phi i64 [0, %entry], [%g2, %loop]
{phis}  %cbo = mul i64 %g, {2 * keep}
  %cb = getelementptr i8, ptr %codes, i64 %cbo
  %spo = mul i64 %g, 4
  %sp = getelementptr i16, ptr %scales, i64 %spo
  %s4h = load <4 x half>, ptr %sp, align 2
  %s4 = fpext <4 x half> %s4h to <4 x float>
  %cpo = mul i64 %g, {keep}
{body}  %g2 = add i64 %g, 1
  %gc = icmp ult i64 %g2, %ng
  br i1 %gc, label %loop, label %exit
exit:
{outs}  ret void
}}
"""


_DECLS = """
declare void @llvm.masked.compressstore.v16f32(<16 x float>, ptr, <16 x i1>)
declare i16 @llvm.ctpop.i16(i16)
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare float @llvm.vector.reduce.fadd.v16f32(float, <16 x float>)
declare i64 @llvm.ctpop.i64(i64)
declare i64 @llvm.cttz.i64(i64, i1)
attributes #0 = { nounwind "min-legal-vector-width"="512" }
"""


def module() -> str:
    """The stage functions and one dot function per K (no target features: the host's apply)."""
    return "\n".join([stage_fn(k) for k in STAGES] + [stage_bits_fn(k) for k in KEEPS] + [dot_fn(k) for k in KEEPS]) + _DECLS

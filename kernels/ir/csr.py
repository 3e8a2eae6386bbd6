"""Generic LLVM IR of the CSR matmul (matmul/csr.py): axpy over a row's nonzeros for 32- and 16-token
tiles, the row loops, and the expansion of a row's mask to columns and of its codes to scaled weights."""

from __future__ import annotations

UNROLL = 4  # nonzeros a step, each into its own accumulators (an FMA chain per 4 nonzeros)


def _axpy_ir(width: int) -> str:
    """void @zoo_csr_axpy_{width}(idx, wf, n, xt, res): res[0:width] += sum_i wf[i] * xt[idx[i]*width + 0:width].
    idx int32 [n] columns, wf float32 [n] weights, xt float32 [cols, width], res float32 [width]."""
    h = width // 16
    accs = [f"a{u}_{k}" for u in range(UNROLL) for k in range(h)]

    def fma(u: str, i: str, acc_of, tag: str) -> str:
        s = f"""  %ip{tag} = getelementptr i32, ptr %idx, i64 {i}
  %c{tag} = load i32, ptr %ip{tag}, align 4
  %cz{tag} = zext i32 %c{tag} to i64
  %co{tag} = mul i64 %cz{tag}, {width}
  %xp{tag} = getelementptr float, ptr %xt, i64 %co{tag}
  %wp{tag} = getelementptr float, ptr %wf, i64 {i}
  %w{tag} = load float, ptr %wp{tag}, align 4
  %wi{tag} = insertelement <16 x float> poison, float %w{tag}, i64 0
  %wv{tag} = shufflevector <16 x float> %wi{tag}, <16 x float> poison, <16 x i32> zeroinitializer
"""
        for k in range(h):
            s += f"""  %xq{tag}_{k} = getelementptr float, ptr %xp{tag}, i64 {16 * k}
  %x{tag}_{k} = load <16 x float>, ptr %xq{tag}_{k}, align 4
  %{acc_of(k)}n = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %wv{tag}, <16 x float> %x{tag}_{k}, <16 x float> %{acc_of(k)})
"""
        return s

    phis4 = "".join(f"  %{a} = phi <16 x float> [zeroinitializer, %entry], [%{a}n, %l4]\n" for a in accs)
    body4 = ""
    for u in range(UNROLL):
        body4 += f"  %i{u} = add i64 %i, {u}\n" + fma(str(u), f"%i{u}", lambda k, u=u: f"a{u}_{k}", f"m{u}")
    mids = "".join(f"  %{a}m = phi <16 x float> [zeroinitializer, %entry], [%{a}n, %l4]\n" for a in accs)
    tphis = "".join(f"  %t{k} = phi <16 x float> [%a0_{k}m, %mid], [%t{k}n, %tl]\n" for k in range(h))
    dphis = "".join(f"  %d{k} = phi <16 x float> [%a0_{k}m, %mid], [%t{k}n, %tl]\n" for k in range(h))
    sums = ""
    for k in range(h):
        terms = [f"%d{k}"] + [f"%a{u}_{k}m" for u in range(1, UNROLL)]
        prev = terms[0]
        for j, t in enumerate(terms[1:]):
            sums += f"  %s{k}_{j} = fadd <16 x float> {prev}, {t}\n"
            prev = f"%s{k}_{j}"
        sums += f"""  %rp{k} = getelementptr float, ptr %res, i64 {16 * k}
  %r{k} = load <16 x float>, ptr %rp{k}, align 4
  %rn{k} = fadd <16 x float> %r{k}, {prev}
  store <16 x float> %rn{k}, ptr %rp{k}, align 4
"""
    return f"""define void @zoo_csr_axpy_{width}(ptr %idx, ptr %wf, i64 %n, ptr %xt, ptr %res) #0 {{
entry:
  %n4 = and i64 %n, -{UNROLL}
  %has4 = icmp ne i64 %n4, 0
  br i1 %has4, label %l4, label %mid
l4:
  %i = phi i64 [0, %entry], [%inext, %l4]
{phis4}{body4}  %inext = add i64 %i, {UNROLL}
  %more = icmp ult i64 %inext, %n4
  br i1 %more, label %l4, label %mid
mid:
{mids}  %hast = icmp ult i64 %n4, %n
  br i1 %hast, label %tl, label %done
tl:
  %j = phi i64 [%n4, %mid], [%jn, %tl]
{tphis}{fma("t", "%j", lambda k: f"t{k}", "t")}  %jn = add i64 %j, 1
  %tmore = icmp ult i64 %jn, %n
  br i1 %tmore, label %tl, label %done
done:
{dphis}{sums}  ret void
}}
"""


def _cols_ir() -> str:
    """i64 @zoo_csr_cols(mask, nwords, lut, idx, p0, starts, cw): the column of every set bit of a
    row's mask, in order, into idx[p0:] (int32; 8 slots of slack), one byte of the mask at a time
    through lut (int32 [256, 8], set-bit positions of each byte value): a vector add and store per
    byte, no branch per bit. starts[k] = position of the first value of word k * cw (int64
    [nwords / cw + 1], the last entry the end). Returns the end position."""
    body = ""
    for k in range(8):
        body += f"""  %bs{k} = lshr i64 %m, {8 * k}
  %bb{k} = and i64 %bs{k}, 255
  %lo{k} = shl i64 %bb{k}, 3
  %lp{k} = getelementptr i32, ptr %lut, i64 %lo{k}
  %lv{k} = load <8 x i32>, ptr %lp{k}, align 4
  %ba{k} = add i32 %base, {8 * k}
  %bi{k} = insertelement <8 x i32> poison, i32 %ba{k}, i64 0
  %bv{k} = shufflevector <8 x i32> %bi{k}, <8 x i32> poison, <8 x i32> zeroinitializer
  %v{k} = add <8 x i32> %lv{k}, %bv{k}
  %dp{k} = getelementptr i32, ptr %idx, i64 %q{k}
  store <8 x i32> %v{k}, ptr %dp{k}, align 4
  %c{k} = call i64 @llvm.ctpop.i64(i64 %bb{k})
  %q{k + 1} = add i64 %q{k}, %c{k}
"""
    return f"""define i64 @zoo_csr_cols(ptr %mask, i64 %nwords, ptr %lut, ptr %idx, i64 %p0, ptr %starts, i64 %cw) #0 {{
entry:
  br label %wl
wl:
  %w = phi i64 [0, %entry], [%w2, %wb]
  %p = phi i64 [%p0, %entry], [%q8, %wb]
  %rem = urem i64 %w, %cw
  %first = icmp eq i64 %rem, 0
  br i1 %first, label %st, label %wb
st:
  %ci = udiv i64 %w, %cw
  %sp = getelementptr i64, ptr %starts, i64 %ci
  store i64 %p, ptr %sp, align 8
  br label %wb
wb:
  %mp = getelementptr i64, ptr %mask, i64 %w
  %m = load i64, ptr %mp, align 8
  %w64 = shl i64 %w, 6
  %base = trunc i64 %w64 to i32
  %q0 = add i64 %p, 0
{body}  %w2 = add i64 %w, 1
  %more = icmp ult i64 %w2, %nwords
  br i1 %more, label %wl, label %done
done:
  %t0 = add i64 %nwords, %cw
  %t1 = sub i64 %t0, 1
  %ce = udiv i64 %t1, %cw
  %ep = getelementptr i64, ptr %starts, i64 %ce
  store i64 %q8, ptr %ep, align 8
  ret i64 %q8
}}
"""


def _scale_ir() -> str:
    """void @zoo_csr_scale(mask, nwords, gw, sc, cf, wf): wf[i] = cf[i] * scale of its group for a
    row's stored values (cf float32 codes, 16 slots of slack; sc f16 [groups]; gw words a group),
    16 values a step, a group's run rounded up to 16 (the next group overwrites the excess)."""
    return """define void @zoo_csr_scale(ptr %mask, i64 %nwords, i64 %gw, ptr %sc, ptr %cf, ptr %wf) #0 {
entry:
  br label %gl
gl:
  %g = phi i64 [0, %entry], [%g2, %gdone]
  %p = phi i64 [0, %entry], [%pn, %gdone]
  %w0 = mul i64 %g, %gw
  %w1a = add i64 %w0, %gw
  %w1c = icmp ult i64 %w1a, %nwords
  %w1 = select i1 %w1c, i64 %w1a, i64 %nwords
  br label %cl
cl:
  %w = phi i64 [%w0, %gl], [%wn, %cl]
  %cnt = phi i64 [0, %gl], [%cntn, %cl]
  %mp = getelementptr i64, ptr %mask, i64 %w
  %m = load i64, ptr %mp, align 8
  %pc = call i64 @llvm.ctpop.i64(i64 %m)
  %cntn = add i64 %cnt, %pc
  %wn = add i64 %w, 1
  %cmore = icmp ult i64 %wn, %w1
  br i1 %cmore, label %cl, label %sg
sg:
  %scp = getelementptr i16, ptr %sc, i64 %g
  %sch = load half, ptr %scp, align 2
  %s = fpext half %sch to float
  %si = insertelement <16 x float> poison, float %s, i64 0
  %sv = shufflevector <16 x float> %si, <16 x float> poison, <16 x i32> zeroinitializer
  %pn = add i64 %p, %cntn
  %any = icmp ne i64 %cntn, 0
  br i1 %any, label %kl, label %gdone
kl:
  %k = phi i64 [%p, %sg], [%kn, %kl]
  %cp = getelementptr float, ptr %cf, i64 %k
  %cv = load <16 x float>, ptr %cp, align 4
  %wv = fmul <16 x float> %cv, %sv
  %wp = getelementptr float, ptr %wf, i64 %k
  store <16 x float> %wv, ptr %wp, align 4
  %kn = add i64 %k, 16
  %kmore = icmp ult i64 %kn, %pn
  br i1 %kmore, label %kl, label %gdone
gdone:
  %g2 = add i64 %g, 1
  %gmore = icmp ult i64 %w1, %nwords
  br i1 %gmore, label %gl, label %done
done:
  ret void
}
"""


def _rows_ir(width: int) -> str:
    """void @zoo_csr_rows_{width}(idx, wf, starts, sstride, nrows, xt, res, rstride): for each row r
    of a block, the axpy over its values starts[r*sstride] .. starts[r*sstride + 1] into
    res[r*rstride:][:width] (one column chunk of one token tile)."""
    return f"""define void @zoo_csr_rows_{width}(ptr %idx, ptr %wf, ptr %starts, i64 %sstride, i64 %nrows, ptr %xt, ptr %res, i64 %rstride) #0 {{
entry:
  br label %rl
rl:
  %r = phi i64 [0, %entry], [%r2, %rl]
  %so = mul i64 %r, %sstride
  %sp = getelementptr i64, ptr %starts, i64 %so
  %s = load i64, ptr %sp, align 8
  %ep = getelementptr i64, ptr %sp, i64 1
  %e = load i64, ptr %ep, align 8
  %n = sub i64 %e, %s
  %ip = getelementptr i32, ptr %idx, i64 %s
  %wp = getelementptr float, ptr %wf, i64 %s
  %ro = mul i64 %r, %rstride
  %rp = getelementptr float, ptr %res, i64 %ro
  call void @zoo_csr_axpy_{width}(ptr %ip, ptr %wp, i64 %n, ptr %xt, ptr %rp)
  %r2 = add i64 %r, 1
  %more = icmp ult i64 %r2, %nrows
  br i1 %more, label %rl, label %done
done:
  ret void
}}
"""


def module() -> str:
    """The CSR kernels (axpy for 32- and 16-token tiles, row loops, column and scale expansion):
    generic LLVM IR, no target-specific intrinsic or feature."""
    return (_axpy_ir(32) + _axpy_ir(16) + _rows_ir(32) + _rows_ir(16) + _cols_ir() + _scale_ir()
            + "declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)\n"
            + "declare i64 @llvm.ctpop.i64(i64)\n"
            + 'attributes #0 = { nounwind "min-legal-vector-width"="512" }\n')

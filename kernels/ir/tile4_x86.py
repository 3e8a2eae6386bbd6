"""LLVM IR text of the tile4-q4 kernels (format/SPEC.md, tile4-q4): stage, then dot, per tile of 4 rows.

A tile's 4 rows share one column mask per 128-column group and keep exactly K columns of it, so the
int8 activations are compacted once per tile and group (`stage`: AVX-512 `vpcompressb`, AVX2 `pext`)
and the 4 rows then do dense int4 work on K columns only (`dot`): the codes of a (tile, group) are 4K
lanes, row r in lanes rK..rK+K-1, 64 lanes per 32-byte chunk (low nibbles lanes 0-31, high 32-63), so
one chunk load unpacks with `and`/`shift` and meets the compacted activations replicated with period K.
Work and bytes scale with K, and the group end (scale x activation scale) is one FMA per chunk for
all 4 rows. One dot function per K (16, 32, 48, 64): every shuffle is a constant.
"""

from __future__ import annotations

KEEPS = (16, 32, 48, 64)
LANES = 64  # code lanes per 32-byte chunk


def _attrs(isa: str) -> str:
    if isa == "avx2":  # compiled as a real AVX2 machine would, even on an AVX-512 host
        return '"target-features"="+avx2,+fma,+f16c,+popcnt,+bmi,+bmi2,-avx512f,-avxvnni"'
    return '"target-features"="+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avx512vbmi,+avx512vbmi2,+popcnt,+f16c"'


def _vec(ty: str, values) -> str:
    return "<" + ", ".join(f"{ty} {v}" for v in values) + ">"


def _segments(offsets: list[int]) -> list[tuple[int, int]]:
    """16-byte pieces at `offsets` -> (offset, length) loads, consecutive pieces merged."""
    segs: list[tuple[int, int]] = []
    for o in offsets:
        if segs and segs[-1][0] + segs[-1][1] == o:
            segs[-1] = (segs[-1][0], segs[-1][1] + 16)
        else:
            segs.append((o, 16))
    return segs


def _window(name: str, offsets: list[int], loads: dict) -> tuple[str, str]:
    """(IR, value) building a <16*len(offsets) x i8> from 16-byte pieces of the staged group at %cp."""
    s = ""
    parts = []
    for o, n in _segments(offsets):
        key = (o, n)
        if key not in loads:
            ln = f"%ld{o}_{n}"
            s += f"  {ln}.p = getelementptr i8, ptr %cp, i64 {o}\n  {ln} = load <{n} x i8>, ptr {ln}.p, align 1\n"
            loads[key] = ln
        parts.append((loads[key], n))
    while len(parts) > 1:  # concatenate pairwise (equal or unequal widths: pad the shorter)
        (a, na), (b, nb) = parts[0], parts[1]
        out = f"{name}.c{len(parts)}"
        if na != nb:
            w = max(na, nb)
            if na < w:
                s += f"  {a}.w{w} = shufflevector <{na} x i8> {a}, <{na} x i8> poison, {_mask(list(range(na)) + ['poison'] * (w - na))}\n"
                a = f"{a}.w{w}"
            if nb < w:
                s += f"  {b}.w{w} = shufflevector <{nb} x i8> {b}, <{nb} x i8> poison, {_mask(list(range(nb)) + ['poison'] * (w - nb))}\n"
                b = f"{b}.w{w}"
            idx = list(range(na)) + [w + i for i in range(nb)]
            s += f"  {out} = shufflevector <{w} x i8> {a}, <{w} x i8> {b}, {_mask(idx)}\n"
        else:
            s += f"  {out} = shufflevector <{na} x i8> {a}, <{nb} x i8> {b}, {_mask(range(na + nb))}\n"
        parts = [(out, na + nb)] + parts[2:]
    return s, parts[0][0]


def _mask(idx) -> str:
    """A shufflevector mask operand."""
    idx = list(idx)
    return f"<{len(idx)} x i32> " + _vec("i32", idx)


def _rows_of(first_lane: int, n_dwords: int, keep: int) -> list[int]:
    """Row (0..3) of each int32 lane of a chunk starting at code lane `first_lane`."""
    return [(first_lane + 4 * d) // keep for d in range(n_dwords)]


def _row_sums(keep: int, chunk_lanes: int, width: int) -> str:
    """IR storing each row's sum of its float lanes (accumulators %acc{j}.n, `width` floats) to %out."""
    s = ""
    for r in range(4):
        pieces = []
        for lane in range(r * keep, (r + 1) * keep, 16):  # 4 int32 lanes (16 code lanes) at a time
            j, d = lane // chunk_lanes, (lane % chunk_lanes) // 4
            name = f"%rp{r}.{len(pieces)}"
            s += f"  {name} = shufflevector <{width} x float> %acc{j}.n, <{width} x float> poison, {_mask(range(d, d + 4))}\n"
            pieces.append(name)
        total = pieces[0]
        for i, p in enumerate(pieces[1:]):
            s += f"  %rs{r}.{i} = fadd reassoc <4 x float> {total}, {p}\n"
            total = f"%rs{r}.{i}"
        s += (f"  %row{r} = call reassoc float @llvm.vector.reduce.fadd.v4f32(float 0.0, <4 x float> {total})\n"
              f"  %op{r} = getelementptr float, ptr %out, i64 {r}\n  store float %row{r}, ptr %op{r}, align 4\n")
    return s


def dot_fn(isa: str, keep: int) -> str:
    """void @zoo_t4_dot_{isa}_{K}(codes, scales, cbuf, xd, ng, out): the 4 rows of one tile.

    codes: the tile's uint8 [ng * 2K]; scales: its f16 bits [ng * 4]; cbuf: the staged activations,
    int8 [ng * K] (group g at g*K); xd: float32 [ng] activation scales; out: float32 [4].
    """
    wide = isa == "avx512"
    chunk = LANES if wide else 32  # code lanes per dot instruction
    width = chunk // 4  # int32 / float lanes per accumulator
    n_chunks = 4 * keep // chunk
    vt, it, ft = f"<{chunk} x i8>", f"<{width} x i32>", f"<{width} x float>"
    windows: dict[tuple, str] = {}
    body, loads = "", {}
    for j in range(n_chunks):  # the staged activations each chunk meets, deduplicated
        offs = tuple((j * chunk + 16 * q) % keep for q in range(chunk // 16))
        if offs not in windows:
            ir, e = _window(f"%cr{len(windows)}", list(offs), loads)
            windows[offs] = e
            body += ir + _dot(wide, f"{e}.z", "zeroinitializer", "splat(i8 8)", e, chunk)
    for j in range(n_chunks):
        e = windows[tuple((j * chunk + 16 * q) % keep for q in range(chunk // 16))]
        if wide:
            body += (f"  %cb{j} = getelementptr i8, ptr %cb, i64 {32 * j}\n  %v{j} = load <32 x i8>, ptr %cb{j}, align 1\n"
                     f"  %lo{j} = and <32 x i8> %v{j}, splat(i8 15)\n  %hi{j} = lshr <32 x i8> %v{j}, splat(i8 4)\n"
                     f"  %u{j} = shufflevector <32 x i8> %lo{j}, <32 x i8> %hi{j}, {_mask(range(64))}\n")
        else:
            byte = 32 * (j // 2)
            if j % 2 == 0:
                body += (f"  %cb{j} = getelementptr i8, ptr %cb, i64 {byte}\n  %v{j} = load <32 x i8>, ptr %cb{j}, align 1\n"
                         f"  %u{j} = and <32 x i8> %v{j}, splat(i8 15)\n")
            else:
                body += f"  %u{j} = lshr <32 x i8> %v{j - 1}, splat(i8 4)\n"
        body += _dot(wide, f"%d{j}", "zeroinitializer", f"%u{j}", e, chunk)
        rows = _rows_of(j * chunk, width, keep)
        body += (f"  %e{j} = sub {it} %d{j}, {e}.z\n  %f{j} = sitofp {it} %e{j} to {ft}\n"
                 f"  %sv{j} = shufflevector <4 x float> %sc, <4 x float> poison, {_mask(rows)}\n"
                 f"  %acc{j}.n = call {ft} @llvm.fma.v{width}f32({ft} %f{j}, {ft} %sv{j}, {ft} %acc{j})\n")
    phis = "".join(f"  %acc{j} = phi {ft} [zeroinitializer, %entry], [%acc{j}.n, %loop]\n" for j in range(n_chunks))
    return f"""define void @zoo_t4_dot_{isa}_{keep}(ptr %codes, ptr %scales, ptr %cbuf, ptr %xd, i64 %ng, ptr %out) #0 {{
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
  %xdp = getelementptr float, ptr %xd, i64 %g
  %xdg = load float, ptr %xdp, align 4
  %xdi = insertelement <4 x float> poison, float %xdg, i64 0
  %xds = shufflevector <4 x float> %xdi, <4 x float> poison, <4 x i32> zeroinitializer
  %sc = fmul <4 x float> %s4, %xds
  %cpo = mul i64 %g, {keep}
  %cp = getelementptr i8, ptr %cbuf, i64 %cpo
{body}  %g2 = add i64 %g, 1
  %gc = icmp ult i64 %g2, %ng
  br i1 %gc, label %loop, label %exit
exit:
{_row_sums(keep, chunk, width)}  ret void
}}
"""


def _dot(wide: bool, out: str, acc: str, u: str, x: str, chunk: int) -> str:
    """out = acc + sum over 4-byte lanes of u (unsigned) * x (signed): VNNI, or pmaddubsw + pmaddwd."""
    if wide:
        return (f"  {out} = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> {acc}, <64 x i8> {u}, "
                f"<64 x i8> {x})\n")
    return (f"  {out}.p = call <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8> {u}, <32 x i8> {x})\n"
            f"  {out}.q = call <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16> {out}.p, <16 x i16> splat(i16 1))\n"
            f"  {out} = add <8 x i32> {acc}, {out}.q\n")


def stage_fn(isa: str) -> str:
    """void @zoo_t4_stage_{isa}(mask, xq, ng, keep, cbuf): the tile's kept int8 activations, group g at g*K.

    mask: the tile's uint64 [2 ng]; xq: int8 activations (readable up to 128 ng); cbuf: int8 [ng*K + 128].
    Stores write past each group's K bytes; the next group's stores overwrite them (groups in order).
    """
    if isa == "avx512":
        body = """  %m0p = getelementptr i64, ptr %mask, i64 %w0
  %m0 = load i64, ptr %m0p, align 8
  %m1p = getelementptr i64, ptr %mask, i64 %w1
  %m1 = load i64, ptr %m1p, align 8
  %x0p = getelementptr i8, ptr %xq, i64 %xo0
  %x0 = load <64 x i8>, ptr %x0p, align 1
  %x1p = getelementptr i8, ptr %xq, i64 %xo1
  %x1 = load <64 x i8>, ptr %x1p, align 1
  %k0 = bitcast i64 %m0 to <64 x i1>
  %k1 = bitcast i64 %m1 to <64 x i1>
  %c0 = call <64 x i8> @llvm.x86.avx512.mask.compress.v64i8(<64 x i8> %x0, <64 x i8> zeroinitializer, <64 x i1> %k0)
  %c1 = call <64 x i8> @llvm.x86.avx512.mask.compress.v64i8(<64 x i8> %x1, <64 x i8> zeroinitializer, <64 x i1> %k1)
  %d0 = getelementptr i8, ptr %cbuf, i64 %p
  store <64 x i8> %c0, ptr %d0, align 1
  %n0 = call i64 @llvm.ctpop.i64(i64 %m0)
  %d1 = getelementptr i8, ptr %d0, i64 %n0
  store <64 x i8> %c1, ptr %d1, align 1
"""
    else:  # per mask byte: pext gathers the byte's kept activations; 8-byte stores at the running offset
        body, q = "", "%p"
        for h in range(2):
            body += f"  %m{h}p = getelementptr i64, ptr %mask, i64 %w{h}\n  %m{h} = load i64, ptr %m{h}p, align 8\n"
            for i in range(8):
                n = f"%b{h}{i}"
                body += (f"  {n}.s = lshr i64 %m{h}, {8 * i}\n  {n} = and i64 {n}.s, 255\n"
                         f"  {n}.lp = getelementptr i64, ptr @zoo_t4_bytemask, i64 {n}\n  {n}.bm = load i64, ptr {n}.lp, align 8\n"
                         f"  {n}.xo = add i64 %xo{h}, {8 * i}\n  {n}.xp = getelementptr i8, ptr %xq, i64 {n}.xo\n"
                         f"  {n}.v = load i64, ptr {n}.xp, align 1\n"
                         f"  {n}.c = call i64 @llvm.x86.bmi.pext.64(i64 {n}.v, i64 {n}.bm)\n"
                         f"  {n}.dp = getelementptr i8, ptr %cbuf, i64 {q}\n  store i64 {n}.c, ptr {n}.dp, align 1\n"
                         f"  {n}.n = call i64 @llvm.ctpop.i64(i64 {n})\n  {n}.q = add i64 {q}, {n}.n\n")
                q = f"{n}.q"
    return stage_loop(f"zoo_t4_stage_{isa}", "%xq", body)


def stage_loop(name: str, x: str, body: str) -> str:
    """void @name(mask, x, ng, keep, cbuf): `body` once per 128-column group g, which may use %w0 / %w1 (the
    group's mask words), %xo0 / %xo1 (the element offsets of its two 64-column halves in x) and %p = g*K."""
    return f"""define void @{name}(ptr %mask, ptr {x}, i64 %ng, i64 %keep, ptr %cbuf) #0 {{
entry:
  %e = icmp eq i64 %ng, 0
  br i1 %e, label %exit, label %loop
loop:
  %g = phi i64 [0, %entry], [%g2, %loop]
  %w0 = mul i64 %g, 2
  %w1 = add i64 %w0, 1
  %xo0 = mul i64 %g, 128
  %xo1 = add i64 %xo0, 64
  %p = mul i64 %g, %keep
{body}  %g2 = add i64 %g, 1
  %gc = icmp ult i64 %g2, %ng
  br i1 %gc, label %loop, label %exit
exit:
  ret void
}}
"""


def _bytemask_table() -> str:
    """[256 x i64]: byte k of entry b is 0xFF where bit k of b is set (pext's selector for a mask byte)."""
    vals = []
    for b in range(256):
        v = sum(0xFF << (8 * k) for k in range(8) if b >> k & 1)
        vals.append(f"i64 {v - (1 << 64) if v >= 1 << 63 else v}")
    return "@zoo_t4_bytemask = internal constant [256 x i64] [" + ", ".join(vals) + "]\n"


_DECLS = """
declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <64 x i8>, <64 x i8>)
declare <64 x i8> @llvm.x86.avx512.mask.compress.v64i8(<64 x i8>, <64 x i8>, <64 x i1>)
declare <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8>, <32 x i8>)
declare <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16>, <16 x i16>)
declare i64 @llvm.x86.bmi.pext.64(i64, i64)
declare i64 @llvm.ctpop.i64(i64)
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare <8 x float> @llvm.fma.v8f32(<8 x float>, <8 x float>, <8 x float>)
declare float @llvm.vector.reduce.fadd.v4f32(float, <4 x float>)
"""


def module(isa: str) -> str:
    """The IR module of one instruction set: the stage function and one dot function per K."""
    table = _bytemask_table() if isa == "avx2" else ""
    fns = [stage_fn(isa)] + [dot_fn(isa, k) for k in KEEPS]
    return table + "\n".join(fns) + _DECLS + f"attributes #0 = {{ nounwind {_attrs(isa)} }}\n"

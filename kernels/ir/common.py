"""IR helpers shared by the x86 generators: the prefetch distance, masked chunk loads, nibble unpacking."""

from __future__ import annotations

PREFETCH = 768  # bytes ahead on the weight streams (longer distances measured no better)


def iota(n: int) -> str:
    return "<" + ", ".join(f"i8 {i}" for i in range(n)) + ">"


def load_chunk(h: int, ptr: str, rem: str, out: str) -> str:
    """Load h bytes at ptr; when fewer than h remain, a masked load (never reads past the row)."""
    return f"""  {out}.full = icmp uge i64 {rem}, {h}
  br i1 {out}.full, label %{out[1:]}.f, label %{out[1:]}.t
{out[1:]}.f:
  {out}.vf = load <{h} x i8>, ptr {ptr}, align 1
  br label %{out[1:]}.j
{out[1:]}.t:
  {out}.r8 = trunc i64 {rem} to i8
  {out}.ri = insertelement <{h} x i8> poison, i8 {out}.r8, i64 0
  {out}.rs = shufflevector <{h} x i8> {out}.ri, <{h} x i8> poison, <{h} x i32> zeroinitializer
  {out}.mk = icmp ult <{h} x i8> {iota(h)}, {out}.rs
  {out}.vt = call <{h} x i8> @llvm.masked.load.v{h}i8.p0(ptr {ptr}, i32 1, <{h} x i1> {out}.mk, <{h} x i8> zeroinitializer)
  br label %{out[1:]}.j
{out[1:]}.j:
  {out} = phi <{h} x i8> [{out}.vf, %{out[1:]}.f], [{out}.vt, %{out[1:]}.t]
"""


def unpack_nibbles(h: int, v: str, out: str, minus8: bool) -> str:
    """h packed bytes -> 2h codes in column order (low nibble first), optionally minus 8."""
    s = (f"  {out}.w = zext <{h} x i8> {v} to <{h} x i16>\n"
         f"  {out}.lo = and <{h} x i16> {out}.w, splat(i16 15)\n"
         f"  {out}.sh = shl <{h} x i16> {out}.w, splat(i16 4)\n"
         f"  {out}.hi = and <{h} x i16> {out}.sh, splat(i16 3840)\n"
         f"  {out}.or = or <{h} x i16> {out}.lo, {out}.hi\n")
    if minus8:
        s += (f"  {out}.b = bitcast <{h} x i16> {out}.or to <{2 * h} x i8>\n"
              f"  {out} = sub <{2 * h} x i8> {out}.b, splat(i8 8)\n")
    else:
        s += f"  {out} = bitcast <{h} x i16> {out}.or to <{2 * h} x i8>\n"
    return s

"""Target-independent LLVM helpers for numba: f16/bf16 loads, popcount, count-trailing-zeros.

numba has no float16 type and no popcount builtin; these intrinsics emit plain LLVM IR that every
backend lowers (F16C / NEON conversions, POPCNT / CNT), so the portable path stays portable.
`link` adds an IR module of ir/ (by its name in ir.module.MODULES) to the calling function's library;
numba's cache stores the linked object code, so a warm start does not rebuild it.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .ir.module import MODULES

_F32 = ir.FloatType()
_I64 = ir.IntType(64)


@intrinsic
def f16_to_f32(typingctx, bits):
    """IEEE binary16 raw bits (uint16) -> float32."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), _F32)

    return types.float32(bits), codegen


@intrinsic
def bf16_to_f32(typingctx, bits):
    """bfloat16 raw bits (uint16) -> float32 (exact: the top half of an f32)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, _F32)

    return types.float32(bits), codegen


@intrinsic
def popcount(typingctx, word):
    """Number of set bits of a uint64, as intp."""
    if word != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return types.intp(word), codegen


@intrinsic
def trailing_zeros(typingctx, word):
    """Index of the lowest set bit of a nonzero uint64, as intp (undefined for 0)."""
    if word != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.intp(word), codegen


_libraries: dict[str, object] = {}


def link(context, name: str) -> None:
    """Generate and parse IR module `name` (ir.module.MODULES) once per process and link it into the
    library being compiled."""
    lib = _libraries.get(name)
    if lib is None:
        lib = context.codegen().create_library(name)
        lib.add_llvm_module(llvm.parse_assembly(MODULES[name]()))
        lib.finalize()
        _libraries[name] = lib
    context.active_code_library.add_linking_library(lib)


def data_ptr(context, builder, arrty, arr, index):
    """Pointer to element `index` of a numba array value (no bounds check)."""
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.gep(builder, ary.data, index)


def declare(builder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """Declare (or find) an external function in the module being built."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def call_intrinsic(module: str, fname: str, spec: str, ret: str = "v"):
    """A numba intrinsic calling IR function `fname` of the IR module `module` (ir.module.MODULES,
    linked once per context). spec letters: p = (array, offset) -> pointer, i = int64. Returns void, or
    int64 when ret is "i"."""
    n_args = sum(2 if c == "p" else 1 for c in spec)
    irtypes = [ir.PointerType() if c == "p" else _I64 for c in spec]
    ret_ir = _I64 if ret == "i" else ir.VoidType()

    def typer(typingctx, *args):
        sig = (types.int64 if ret == "i" else types.void)(*args)

        def codegen(context, builder, sig, llargs):
            link(context, module)
            fn = declare(builder, fname, ret_ir, irtypes)
            vals, i = [], 0
            for c in spec:
                if c == "p":
                    vals.append(builder.bitcast(data_ptr(context, builder, sig.args[i], llargs[i], llargs[i + 1]),
                                                ir.PointerType()))
                    i += 2
                else:
                    vals.append(llargs[i])
                    i += 1
            result = builder.call(fn, vals)
            return result if ret == "i" else context.get_dummy_value()

        return sig, codegen

    # numba lowers an @intrinsic only with a fixed arity (no *args)
    names = ", ".join(f"a{i}" for i in range(n_args))
    scope = {"typer": typer}
    exec(f"def {fname}(typingctx, {names}):\n    return typer(typingctx, {names})", scope)  # noqa: S102
    return intrinsic(scope[fname])

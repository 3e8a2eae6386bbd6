"""One BLAS kernel table on every x86-64 machine, so that a card's recipe rebuilds its artifact byte for byte.

OpenBLAS picks its GEMM and LAPACK kernels by CPU model (SkylakeX on AVX-512 Intel and AMD Zen 4, Haswell's
on Zen 2/3/5 and AVX2 Intel), and the tables round differently. SparseGPT and GPTQ turn those roundings into
different weights: the catalog's sparse30-int4 built on a Zen 4 with SkylakeX kernels differed from its card
(built with Haswell's) in 158 bytes of 82 MB. OpenBLAS reads OPENBLAS_CORETYPE once, when numpy loads it, so
`pin()` runs from `zoo/__init__.py`, before any zoo module imports numpy. Measured on the catalog's default
recipe (docs/catalog.md): with the pin, AVX-512 and AVX2 numpy loops and both core tables give the card's bytes.
"""

from __future__ import annotations

import os
import sys

PINNED_CORETYPE = "Zen"  # OpenBLAS's Zen table: Haswell's AVX2+FMA kernels (threadpoolctl reports "Haswell")
PINNED_ARCHITECTURE = "Haswell"


def _has_avx2_fma() -> bool:
    """Whether this CPU runs the pinned kernels (Linux /proc/cpuinfo; elsewhere unknown, so no)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        pass
    return False


def pin() -> bool:
    """Set OPENBLAS_CORETYPE to the pinned table if numpy is not loaded yet and the CPU can run it.

    Returns whether the pin is (now) in the environment. A machine's own OPENBLAS_CORETYPE is
    overridden: reproducible compression is what zoo needs from BLAS, and the pinned table is a
    mainstream one that OpenBLAS runs on every AVX2 CPU.
    """
    return _pin_before_import({"OPENBLAS_CORETYPE": PINNED_CORETYPE}, "numpy")


def _pin_before_import(pins: dict[str, str], module: str) -> bool:
    """Put `pins` in the environment unless `module` is loaded already (too late: it has read them) or this is not
    an x86 CPU with AVX2+FMA; returns whether they are (now) in force."""
    if all(os.environ.get(k) == v for k, v in pins.items()):
        return True
    machine = os.uname().machine.lower() if hasattr(os, "uname") else ""
    if module in sys.modules or machine not in ("x86_64", "amd64") or not _has_avx2_fma():
        return False
    os.environ.update(pins)
    return True


# PyTorch (recovery training) dispatches by CPU twice: MKL picks its GEMM branch (AVX-512 here, AVX2 on Zen 3; on
# non-Intel CPUs only the COMPATIBLE branch can be forced), ATen its vectorized kernels. Measured on a tiny model's
# `--recover both` (Intel Xeon, AVX-512): MKL AUTO vs AVX2 vs COMPATIBLE give different bytes, and under COMPATIBLE
# ATen avx2 vs avx512 differ too. Both are read when torch first needs them, so they are set before it is imported.
TORCH_PINS = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}


def pin_torch() -> bool:
    """Set TORCH_PINS (one MKL branch and one ATen kernel table on every AVX2 x86 CPU, Intel or AMD) if torch is
    not loaded yet; returns whether they are (now) in force. Costs speed: a 2048x576x1536 f32 GEMM and its
    backward take ~3.7x longer in MKL's COMPATIBLE branch than in its AVX-512 one."""
    return _pin_before_import(TORCH_PINS, "torch")


def architecture() -> str | None:
    """The kernel table numpy's OpenBLAS runs in this process ("Haswell", "SkylakeX", ...), None if not OpenBLAS."""
    import numpy  # noqa: F401  (threadpoolctl reports only loaded libraries)
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("internal_api") == "openblas":
            return info.get("architecture")
    return None


def mismatch_hint() -> str:
    """Words for a digest mismatch when this process's BLAS is not the pinned one ('' when it is)."""
    arch = architecture()
    if arch in (None, PINNED_ARCHITECTURE):
        return ""
    return (f" (this process's OpenBLAS runs its {arch} kernels, not the {PINNED_ARCHITECTURE} ones zoo pins for "
            "reproducible builds: numpy was loaded before zoo, or this CPU lacks AVX2/FMA)")

"""CPU feature detection and the choice of kernel path (portable | avx2 | avx512).

The path is chosen once at import from the host's features (llvmlite reports what LLVM will
target), overridable with ZOO_KERNELS; an override the CPU cannot run is refused on first use.
"""

from __future__ import annotations

import functools
import os

import llvmlite.binding as llvm

from zoo.errors import KernelError

PATHS = ("portable", "avx2", "avx512")
NEEDS = {
    "portable": (),
    "avx2": ("avx2", "fma", "f16c", "popcnt", "bmi2"),  # bmi2: pext in the tile4-q4 staging
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi2", "popcnt"),
}


@functools.lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """Feature names LLVM enables for this CPU (e.g. 'avx2', 'avx512vnni'); asked once."""
    try:
        flat = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # some hosts (e.g. ARM under emulation) report nothing
        return frozenset()
    return frozenset(f[1:] for f in flat.split(",") if f.startswith("+"))


def supported_paths(features: set[str] | None = None) -> list[str]:
    """Paths this CPU can run, slowest first."""
    feats = host_features() if features is None else features
    return [p for p in PATHS if all(f in feats for f in NEEDS[p])]


def best_path(features: set[str] | None = None) -> str:
    return supported_paths(features)[-1]


def check_path(name: str, features: set[str] | None = None) -> str:
    """Return `name` if it is a known path this CPU (or `features`) runs; KernelError otherwise."""
    if name not in PATHS:
        raise KernelError(f"unknown kernel path {name!r} (ZOO_KERNELS must be one of: {', '.join(PATHS)})")
    feats = host_features() if features is None else features
    if name not in supported_paths(feats):
        missing = sorted(set(NEEDS[name]) - feats)
        raise KernelError(f"kernel path {name!r} needs CPU features this machine lacks: {', '.join(missing)}")
    return name


def requested_path() -> str:
    """ZOO_KERNELS if set (validated on use), else the best path for this CPU."""
    return os.environ.get("ZOO_KERNELS", "").strip().lower() or best_path()

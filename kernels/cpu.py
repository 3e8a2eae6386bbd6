"""CPU features and the active kernel path (portable | avx2 | avx512).

The path is chosen once at import from the host's features (llvmlite reports what LLVM will target),
overridable with ZOO_KERNELS or set_path; a path the CPU cannot run is refused on first use.
"""

from __future__ import annotations

import functools
import os

import llvmlite.binding as llvm

from zoo.errors import KernelError

from .layout import PATHS, Path

NEEDS = {
    Path.PORTABLE: (),
    Path.AVX2: ("avx2", "fma", "f16c", "popcnt", "bmi2"),  # bmi2: pext in the tile4-q4 staging
    Path.AVX512: ("avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi2", "popcnt"),
}
NAMES = tuple(p.label for p in PATHS)


@functools.lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """Feature names LLVM enables for this CPU (e.g. 'avx2', 'avx512vnni'); asked once."""
    try:
        flat = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # some hosts (e.g. ARM under emulation) report nothing
        return frozenset()
    return frozenset(f[1:] for f in flat.split(",") if f.startswith("+"))


def supported_paths(features: set[str] | None = None) -> list[str]:
    """Names of the paths this CPU (or `features`) runs, slowest first."""
    feats = host_features() if features is None else features
    return [p.label for p in PATHS if all(f in feats for f in NEEDS[p])]


def best_path(features: set[str] | None = None) -> str:
    return supported_paths(features)[-1]


def check_path(name: str, features: set[str] | None = None) -> Path:
    """The Path named `name` if this CPU (or `features`) runs it; KernelError otherwise."""
    if name not in NAMES:
        raise KernelError(f"unknown kernel path {name!r} (ZOO_KERNELS must be one of: {', '.join(NAMES)})")
    path = Path[name.upper()]
    feats = host_features() if features is None else features
    if name not in supported_paths(feats):
        missing = sorted(set(NEEDS[path]) - feats)
        raise KernelError(f"kernel path {name!r} needs CPU features this machine lacks: {', '.join(missing)}")
    return path


def requested_path() -> str:
    """ZOO_KERNELS if set (validated on use), else the best path for this CPU."""
    return os.environ.get("ZOO_KERNELS", "").strip().lower() or best_path()


_state = {"name": requested_path()}


def active_path() -> Path:
    """The path kernels run on; KernelError if ZOO_KERNELS asked for one this CPU cannot run."""
    if "checked" not in _state:
        _state["checked"] = check_path(_state["name"])
    return _state["checked"]


def set_path(name: str) -> str:
    """Switch path ('portable' | 'avx2' | 'avx512'); KernelError if unknown or unsupported here."""
    _state["checked"] = check_path(name.strip().lower())
    _state["name"] = _state["checked"].label
    return _state["name"]


def selected_path() -> str:
    """The requested path name (validated on use by active_path)."""
    return _state["name"]

"""The active kernel path: chosen at import (ZOO_KERNELS or the best the CPU runs), changeable."""

from __future__ import annotations

from ._cpu import check_path, requested_path

_state = {"path": requested_path()}


def active_path() -> str:
    """The path kernels run on; KernelError if ZOO_KERNELS asked for one this CPU cannot run."""
    if "checked" not in _state:
        _state["checked"] = check_path(_state["path"])
    return _state["checked"]


def set_path(name: str) -> str:
    """Switch path ('portable' | 'avx2' | 'avx512'); KernelError if unknown or unsupported here."""
    _state["path"] = _state["checked"] = check_path(name.strip().lower())
    return _state["path"]


def selected_path() -> str:
    """The requested path name (validated on use by active_path)."""
    return _state["path"]

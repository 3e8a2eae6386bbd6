"""Give back the resident pages of a memory-mapped source once the pipeline is done with them.

A zoo artifact source is read through read-only mmaps; every page a layer's decode touches stays
mapped (and counted in the process's RSS) until the mapping closes, so streaming a 7B source grew
RSS by the source's size over the run (≈ 0.1 GB a layer for a q4 7B). `madvise(MADV_DONTNEED)` on a
read-only shared file mapping only unmaps the pages: the data stays in the file (and usually the
page cache), and a later access faults it back in unchanged. Never applied to anything else:
on anonymous or copy-on-write memory the same call would discard data.
"""

from __future__ import annotations

import mmap
from typing import Iterable

import numpy as np


def _read_only_map(array: np.ndarray) -> mmap.mmap | None:
    """The mmap.mmap an array views, if it is a read-only (ACCESS_READ) mapping; else None."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap) or base.closed:
        return None
    with memoryview(base) as view:
        return base if view.readonly else None


def release_array(array: np.ndarray) -> int:
    """Drop the resident pages under `array` (a view of a read-only mmap); returns the bytes advised.

    The range is widened to whole pages, which may include a neighbouring tensor's first or last
    page: harmless, since it faults back in from the file when next read.
    """
    if array.nbytes == 0 or not hasattr(mmap, "MADV_DONTNEED"):
        return 0
    mm = _read_only_map(array)
    if mm is None:
        return 0
    map_start = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data  # address of the mapping's byte 0
    lo = array.ctypes.data - map_start
    hi = lo + array.nbytes
    lo -= lo % mmap.PAGESIZE
    hi = min(len(mm), -(-hi // mmap.PAGESIZE) * mmap.PAGESIZE)
    mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    return hi - lo


def release_source_pages(source, names: Iterable[str]) -> int:
    """Release the mapped pages of these tensors of a source that exposes its stored encodings.

    Sources without `encoded()` (GGUF via gguf-py, Hugging Face dirs) are left alone; returns bytes advised.
    """
    encoded = getattr(source, "encoded", None)
    if encoded is None:
        return 0
    return sum(release_array(part) for name in names for part in encoded(name).parts.values())

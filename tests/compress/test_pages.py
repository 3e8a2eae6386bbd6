"""Releasing a mmapped source's pages: resident pages go, the data stays, nothing but read-only maps is touched."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from zoo.compress.pages import release_array, release_source_pages
from zoo.convert.source import open_source

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists() or not hasattr(mmap, "MADV_DONTNEED"),
                                reason="needs Linux /proc/self/smaps and madvise")


def _resident_kb(address: int) -> int:
    """Rss (kB) of the mapping of this process that contains `address` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "Rss:":
            return int(line.split()[1])
    raise AssertionError("mapping not found")


def test_release_drops_resident_pages_and_keeps_the_data(tmp_path):
    data = np.arange(4 << 20, dtype=np.uint8) * np.uint8(7)  # 4 MiB, 1024 pages
    path = tmp_path / "blob"
    path.write_bytes(data.tobytes())
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = np.frombuffer(mm, dtype=np.uint8, count=2 << 20, offset=1 << 20).reshape(1024, 2048)
    assert int(view.astype(np.int64).sum()) == int(data[1 << 20:3 << 20].astype(np.int64).sum())  # fault it in
    before = _resident_kb(view.ctypes.data)
    assert before >= 2 << 10  # the 2 MiB just read are resident
    assert release_array(view) == 2 << 20  # page-aligned range: exactly the view here
    assert _resident_kb(view.ctypes.data) <= before - (2 << 10)
    np.testing.assert_array_equal(view.ravel(), data[1 << 20:3 << 20])  # faults back in, unchanged
    del view
    mm.close()


def test_anonymous_and_copy_on_write_memory_is_left_alone(tmp_path):
    anon = np.full(1 << 20, 5, np.uint8)
    assert release_array(anon) == 0
    assert int(anon.sum()) == 5 << 20
    path = tmp_path / "blob"
    path.write_bytes(bytes(1 << 20))
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # private: DONTNEED would lose writes
    arr = np.frombuffer(mm, dtype=np.uint8)
    arr[:10] = 9
    assert release_array(arr) == 0
    assert int(arr[:10].sum()) == 90
    del arr
    mm.close()


def test_release_source_pages_of_an_artifact_keeps_its_tensors(tiny_llama):
    src = open_source(tiny_llama)
    name = "blk.0.ffn_down.weight"
    before = src.tensor(name)
    assert release_source_pages(src, src.names) > 0
    np.testing.assert_array_equal(src.tensor(name), before)
    assert release_source_pages(object(), ["x"]) == 0  # a source without stored encodings: nothing to do

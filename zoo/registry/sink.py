"""Write a blob to disk while a worker thread hashes it: the two overlap on two cores.

sha256 (OpenSSL) and file writes both release the GIL, so hashing chunk i on a worker while the
caller writes chunk i and fetches chunk i+1 roughly halves the time of a verified download. The
hash always covers exactly the bytes that reached the file: chunks handed to write(), or ranges
re-read from the file after an in-kernel copy (copied()).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .base import CHUNK


class HashingSink:
    """Append to an open file descriptor from `offset`; hash everything from byte 0."""

    def __init__(self, fd: int, offset: int, progress: Callable[[int], None] | None = None) -> None:
        self.fd = fd
        self.pos = offset
        self.written = 0
        self.digest = hashlib.sha256()
        self.progress = progress
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="zoo-sha256")
        self._pending: Future | None = None
        if offset:  # resume: hash what is already on disk first
            self._hash_range(0, offset)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def _hash_range(self, start: int, length: int) -> None:
        end = start + length
        while start < end:
            data = os.pread(self.fd, min(CHUNK, end - start), start)
            if not data:
                raise OSError(f"short read while hashing at byte {start}")
            self.digest.update(data)
            start += len(data)

    def write(self, chunk: bytes) -> None:
        """Write one immutable chunk at the current position; hash it in the background."""
        self._wait()
        self._pending = self._pool.submit(self.digest.update, chunk)
        view = memoryview(chunk)
        while view:
            n = os.pwrite(self.fd, view, self.pos)
            self.pos += n
            self.written += n
            view = view[n:]
        if self.progress:
            self.progress(len(chunk))

    def copied(self, n: int) -> None:
        """`n` bytes were copied into the file at the current position (in-kernel); hash them from the file."""
        self._wait()
        self._pending = self._pool.submit(self._hash_range, self.pos, n)
        self.pos += n
        self.written += n
        if self.progress:
            self.progress(n)

    def finish(self) -> str:
        """Wait for the hash, fsync the file, return the hex digest of the whole file."""
        self._wait()
        self._pool.shutdown()
        os.fsync(self.fd)
        return self.digest.hexdigest()

    def abort(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()

"""Write a blob to disk while worker threads write and hash it: fetch, write and sha256 overlap.

Socket reads, file writes and OpenSSL's sha256 all release the GIL, so a three-stage pipeline
(caller fetches chunk i+1, a writer thread writes chunk i, a hasher thread hashes chunk i) keeps
both cores busy. The hash always covers exactly the bytes that reach the file: chunks handed to
write(), or ranges re-read from the file after an in-kernel copy (copied()). Every SYNC_EVERY bytes
a third thread starts an fdatasync, so the disk writes overlap the download and the final fsync
waits only for the tail; the writer never waits for the disk (it did: each flush stalled the
whole pipeline, so a pull took download time plus disk time, bench/pull.py).
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .base import CHUNK

DEPTH = 1  # chunks queued beyond the one being worked on: pieces stay in cache (4 measured ~0.3-0.5 CPU s/GB dearer)
SYNC_EVERY = 64 << 20  # bytes written before the next background fdatasync starts (one runs at a time)


class HashingSink:
    """Write into an open file descriptor from `offset`; hash the whole file from byte 0."""

    def __init__(self, fd: int, offset: int, progress: Callable[[int], None] | None = None) -> None:
        self.fd = fd
        self.pos = offset
        self.written = 0
        self.digest = hashlib.sha256()
        self.progress = progress
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="zoo-sha256")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="zoo-write")
        self._inflight: collections.deque[tuple[Future, Future]] = collections.deque()
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="zoo-sync")
        self._sync: Future | None = None  # the running background fdatasync (started by the writer thread only)
        self._unsynced = 0
        if offset:  # resume: hash what is already on disk first (in order, on the hasher)
            self._inflight.append((self._hasher.submit(self._hash_range, 0, offset), self._writer.submit(int)))

    def _throttle(self, depth: int) -> None:
        while len(self._inflight) > depth:
            for future in self._inflight.popleft():
                future.result()  # re-raises a write or read error here

    def _hash_range(self, start: int, length: int) -> None:
        end = start + length
        while start < end:
            data = os.pread(self.fd, min(CHUNK, end - start), start)
            if not data:
                raise OSError(f"short read while hashing at byte {start}")
            self.digest.update(data)
            start += len(data)

    def _landed(self, n: int) -> None:
        """On the writer thread: `n` more bytes are in the file; start writing them to disk now, not at the end."""
        self._unsynced += n
        if self._unsynced >= SYNC_EVERY and (self._sync is None or self._sync.done()):
            if self._sync is not None:
                self._sync.result()  # a write-back error (EIO, ENOSPC of delayed allocation) surfaces here
            self._sync = self._syncer.submit(os.fdatasync, self.fd)
            self._unsynced = 0

    def _pwrite(self, chunk: bytes, pos: int) -> None:
        view = memoryview(chunk)
        while view:
            n = os.pwrite(self.fd, view, pos)
            pos += n
            view = view[n:]
        self._landed(len(chunk))

    def write(self, chunk: bytes) -> None:
        """Queue one immutable chunk at the current position (written and hashed by the workers)."""
        self._throttle(DEPTH)
        self._inflight.append((self._hasher.submit(self.digest.update, chunk),
                               self._writer.submit(self._pwrite, chunk, self.pos)))
        self.pos += len(chunk)
        self.written += len(chunk)
        if self.progress:
            self.progress(len(chunk))

    def copied(self, n: int) -> None:
        """`n` bytes were copied into the file at the current position (in-kernel); hash them from the file."""
        self._throttle(DEPTH)
        self._inflight.append((self._hasher.submit(self._hash_range, self.pos, n), self._writer.submit(self._landed, n)))
        self.pos += n
        self.written += n
        if self.progress:
            self.progress(n)

    def finish(self) -> str:
        """Drain the pipeline, fsync, return the hex sha256 of the whole file."""
        try:
            self._throttle(0)
            if self._sync is not None:
                self._sync.result()
        finally:
            self._shutdown()
        os.fsync(self.fd)
        return self.digest.hexdigest()

    def abort(self) -> None:
        """Let queued writes land (a resumable partial keeps them), then stop the workers."""
        try:
            self._throttle(0)
        except Exception:
            pass
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._hasher.shutdown()
        self._writer.shutdown()
        self._syncer.shutdown()  # after the writer: it is the one that starts syncs

"""A registry in a local directory: the embedded default, and the source a static HTTP mirror serves.

Layout (the same as the store): `blobs/sha256/<hex>`, `manifests/<name>/<tag>.json`, and
`index.json` (every name, tag, manifest digest and card) so a plain web server can offer listing.
Every write goes to a temporary file and is renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from zoo.errors import ChecksumError, NotFoundError, RegistryError
from zoo.workdirs import BLOB_STAGING, sweep

from .base import CHUNK, FileEntry, Registry, blob_key, check_name, check_tag, manifest_bytes, manifest_digest, \
    manifest_key, parse_manifest
from .sink import HashingSink

INDEX_FILE = "index.json"
COPY_STEP = 16 << 20  # bytes per copy_file_range call: the hash thread follows one step behind
INDEX_VERSION = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to a temporary sibling, fsync, then rename over `path` (world-readable, 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600: a published registry is read by a web server's own user
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_steps(src: int, dst: int, offset: int) -> Iterator[int]:
    """Copy src to dst from `offset` to the end of src, in the kernel (like cp); yield bytes per step."""
    pos = offset
    while True:
        try:
            n = os.copy_file_range(src, dst, COPY_STEP, pos, pos)
        except OSError:  # e.g. across filesystems on old kernels: plain read/write
            data = os.pread(src, COPY_STEP, pos)
            n = os.pwrite(dst, data, pos) if data else 0
        if n == 0:
            return
        pos += n
        yield n


def build_index(entries: list[tuple[str, str, dict]]) -> bytes:
    """index.json: every (name, tag) with its manifest digest and card."""
    models = [{"name": n, "tag": t, "digest": manifest_digest(m), "card": m["card"]} for n, t, m in entries]
    return json.dumps({"index_version": INDEX_VERSION, "models": models}, sort_keys=True, indent=1).encode()


class LocalRegistry(Registry):
    """A directory registry (`/path/to/dir` or `file:///path/to/dir`)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"{self.root}: registry path exists and is not a directory")

    def _manifest_path(self, name: str, tag: str) -> Path:
        return self.root / manifest_key(name, tag)

    def list_manifests(self) -> list[tuple[str, str]]:
        base = self.root / "manifests"
        if not base.is_dir():
            return []
        out = []
        for path in base.rglob("*.json"):
            if path.is_symlink() or path.name.startswith("."):
                continue
            rel = path.relative_to(base)
            name, tag = "/".join(rel.parts[:-1]), rel.name[: -len(".json")]
            try:
                out.append((check_name(name), check_tag(tag)))
            except RegistryError:
                continue  # not ours; never followed
        return sorted(out)

    def get_manifest(self, name: str, tag: str) -> dict:
        path = self._manifest_path(name, tag)
        if path.is_symlink():
            raise RegistryError(f"{path}: manifest is a symlink; refused")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{name}:{tag}: not found in registry {self.url}") from None
        return parse_manifest(data, f"{name}:{tag}")

    def _blob(self, entry: FileEntry) -> Path:
        return self.root / blob_key(entry.sha256)

    def read_blob(self, entry: FileEntry, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        path = self._blob(entry)
        if path.is_symlink():
            raise RegistryError(f"{entry.path}: blob is a symlink in {self.url}; refused")
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"{entry.path}: blob sha256:{entry.sha256[:12]} missing from {self.url}") from None

        def chunks() -> Iterator[bytes]:
            with f:
                f.seek(offset)
                while chunk := f.read(CHUNK):
                    yield chunk

        return offset, chunks()

    def copy_blob(self, entry: FileEntry, offset: int, out_fd: int) -> Iterator[int]:
        """Copy a blob from `offset` into `out_fd` (same offset) in the kernel (copy_file_range, like cp);
        yields the bytes copied per step. The store hashes what lands in its file."""
        path = self._blob(entry)
        if path.is_symlink():
            raise RegistryError(f"{entry.path}: blob is a symlink in {self.url}; refused")
        try:
            src = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFoundError(f"{entry.path}: blob sha256:{entry.sha256[:12]} missing from {self.url}") from None
        try:
            yield from _copy_steps(src, out_fd, offset)
        finally:
            os.close(src)

    def blob_path(self, entry: FileEntry) -> Path:
        """Where a blob lives on disk (the store copies from here without another layer)."""
        return self._blob(entry)

    def has_blob(self, entry: FileEntry) -> bool:
        path = self._blob(entry)
        return path.is_file() and not path.is_symlink() and path.stat().st_size == entry.size

    def put_blob(self, entry: FileEntry, source: Path) -> None:
        """Copy a file in as a blob, hashing as it goes: a file that changed since it was checked is refused."""
        dest = self._blob(entry)
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep(dest.parent, BLOB_STAGING)  # what a killed push left (the owner's pid is in the name)
        fd, tmp = tempfile.mkstemp(prefix=f".{entry.sha256}.{os.getpid()}-", suffix=".tmp", dir=dest.parent)
        try:
            try:
                src = os.open(source, os.O_RDONLY)
                try:  # in-kernel copy; the sink hashes what landed, one step behind
                    sink = HashingSink(fd, 0)
                    try:
                        for n in _copy_steps(src, fd, 0):
                            sink.copied(n)
                        digest = sink.finish()
                    except BaseException:
                        sink.abort()
                        raise
                finally:
                    os.close(src)
            finally:
                os.close(fd)
            if digest != entry.sha256:
                raise ChecksumError(f"{entry.path}: changed while being pushed (sha256 {digest[:12]}, "
                                    f"expected {entry.sha256[:12]})")
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise RegistryError(f"{entry.path}: cannot store blob in {self.url} ({err.strerror or err})") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_manifest(self, name: str, tag: str, manifest: dict) -> None:
        try:
            atomic_write(self._manifest_path(name, tag), manifest_bytes(manifest))
        except OSError as err:
            raise RegistryError(f"{name}:{tag}: cannot write manifest in {self.url} ({err.strerror or err})") from None
        self.write_index()

    def delete_manifest(self, name: str, tag: str) -> None:
        path = self._manifest_path(name, tag)
        if not path.exists():
            raise NotFoundError(f"{name}:{tag}: not found in registry {self.url}")
        path.unlink()
        self.write_index()

    def write_index(self) -> None:
        """Rebuild index.json from the manifests, under a lock so concurrent pushes do not lose entries."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".index.lock")):
            entries = []
            for name, tag in self.list_manifests():
                try:
                    entries.append((name, tag, self.get_manifest(name, tag)))
                except (NotFoundError, RegistryError):
                    continue
            atomic_write(self.root / INDEX_FILE, build_index(entries))

"""The local store under ZOO_HOME: content-addressed blobs, manifests, and ready-to-open snapshots.

    blobs/sha256/<hex>             verified, read-only; `<hex>.partial` while downloading (resumable)
    manifests/<name>/<tag>.json    written last, by atomic rename: a manifest never names a missing blob
    snapshots/<manifest-digest>/   the artifact directory, files hard-linked to their blobs (never to a registry's)
    inflight/<pid>-<n>.json        digests a running pull needs (gc keeps them)
    locks/                         one lock file per blob being downloaded, gc.lock

A blob becomes visible only after its sha256 is verified; locks (filelock) make concurrent pulls
of one model download each blob once. `resolve(name_or_path)` is what `zoo run` calls.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from zoo.errors import ChecksumError, DiskFullError, NotFoundError, RegistryError
from zoo.workdirs import BUILD_STAGING, INFLIGHT_MARKER, SNAPSHOT_STAGING, pid_alive, sweep

from .registry.base import CHUNK, FileEntry, Registry, check_manifest, check_name, check_tag, manifest_bytes, \
    manifest_digest, parse_manifest
from .registry.local import atomic_write
from .registry.sink import HashingSink

FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over the file size limit
DOWNLOAD_ATTEMPTS = 4  # a blob whose body ends early is resumed (Range) this many times in all
RETRY_PAUSE = 0.5  # seconds before the first resume, doubled each time


class _CutShort(Exception):
    """A blob body ended before its size: resumable from `pos` (`written` bytes arrived this attempt)."""

    def __init__(self, pos: int, written: int) -> None:
        super().__init__(pos)
        self.pos, self.written = pos, written

if TYPE_CHECKING:
    from zoo.build.estimate import BuildEstimate

Progress = Callable[[int], None]  # called with the number of bytes just transferred (from any thread)
PARALLEL_BLOBS = 4  # blobs fetched at once


def _interruptible_result(future: Future, poll: float = 0.2):
    """future.result(), waking every `poll` seconds so the main thread sees Ctrl-C.

    The kernel may hand SIGINT to any thread; Python only raises KeyboardInterrupt once the main
    thread runs bytecode again, which an untimed wait delays until the whole blob has arrived.
    """
    while not wait([future], timeout=poll).done:
        pass
    return future.result()


class _Cancelled(Exception):
    """Raised inside a download thread when the pull it belongs to is being abandoned."""


@dataclass
class PullResult:
    """What a pull did: where the artifact is, how many bytes came over the wire, how many were reused."""

    name: str
    tag: str
    path: Path
    digest: str
    downloaded_bytes: int = 0
    reused_bytes: int = 0
    files: list[FileEntry] = field(default_factory=list)
    built: bool = False  # built from a catalog recipe rather than downloaded


class Store:
    """The local store at `root` (default: config.zoo_home())."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        from zoo.config import zoo_home

        self.root = Path(root).expanduser() if root is not None else zoo_home()
        self.blobs = self.root / "blobs" / "sha256"
        self.manifests = self.root / "manifests"
        self.snapshots = self.root / "snapshots"
        self.inflight = self.root / "inflight"
        self.verify_cache = self.root / "verified.json"  # zoo.verify's cache (ZOO_HOME/verified.json by default)

    # ---- reading ---------------------------------------------------------------------------
    def _manifest_path(self, name: str, tag: str) -> Path:
        return self.manifests / check_name(name) / f"{check_tag(tag)}.json"

    def get_manifest(self, name: str, tag: str) -> dict:
        path = self._manifest_path(name, tag)
        try:
            return parse_manifest(path.read_bytes(), f"{name}:{tag}")
        except FileNotFoundError:
            raise NotFoundError(f"{name}:{tag}: not in the local store ({self.root}); pull it first") from None

    def has(self, name: str, tag: str) -> bool:
        return self._manifest_path(name, tag).is_file()

    def list(self) -> list[dict]:
        """Every stored model: name, tag, digest, size in bytes, card, modified (manifest mtime, POSIX seconds)."""
        out = []
        if not self.manifests.is_dir():
            return out
        for path in sorted(self.manifests.rglob("*.json")):
            rel = path.relative_to(self.manifests)
            name, tag = "/".join(rel.parts[:-1]), rel.name[:-5]
            try:
                manifest = self.get_manifest(name, tag)
            except RegistryError:
                continue
            out.append({"name": name, "tag": tag, "digest": manifest_digest(manifest),
                        "size": sum(f["size"] for f in manifest["files"]), "card": manifest["card"],
                        "modified": path.stat().st_mtime})
        return out

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest

    def path(self, name: str, tag: str) -> Path:
        """The artifact directory of a stored model (rebuilt from blobs if its snapshot was removed)."""
        manifest = self.get_manifest(name, tag)
        return self._snapshot(manifest, check_manifest(manifest))

    # ---- pulling ---------------------------------------------------------------------------
    def pull(self, registry: Registry, name: str, tag: str, *, store_name: str | None = None,
             progress: Progress | None = None, on_total: Callable[[int], None] | None = None) -> PullResult:
        """Download name:tag from `registry` into the store: missing blobs only, resuming partial ones.

        `store_name` stores it under another name (full references keep their short name).
        """
        manifest = registry.get_manifest(name, tag)
        entries = check_manifest(manifest, f"{name}:{tag}")
        local_name = store_name or name
        result = PullResult(local_name, tag, Path(), manifest_digest(manifest), files=entries)
        if on_total:
            on_total(sum(e.size for e in entries))
        marker = self._register_inflight(entries, manifest_digest(manifest))
        try:
            # blobs in parallel, largest first: a small file's latency hides behind the big one
            order = sorted(entries, key=lambda e: -e.size)
            cancel = threading.Event()

            def tick(n: int) -> None:  # called per chunk by every download: the place to stop promptly
                if cancel.is_set():
                    raise _Cancelled()
                if progress:
                    progress(n)

            with ThreadPoolExecutor(min(PARALLEL_BLOBS, len(order)), thread_name_prefix="zoo-pull") as pool:
                futures = [pool.submit(self._fetch_blob, registry, entry, tick) for entry in order]
                try:
                    for entry, future in zip(order, futures):
                        got = _interruptible_result(future)
                        if got:
                            result.downloaded_bytes += got
                        else:
                            result.reused_bytes += entry.size
                            if progress:
                                progress(entry.size)
                except BaseException:  # an error or Ctrl-C: the other downloads stop at their next chunk
                    cancel.set()
                    for future in futures:
                        future.cancel()
                    raise
            result.path = self._snapshot(manifest, entries)
            self._remember(result.path, entries)
            atomic_write(self._manifest_path(local_name, tag), manifest_bytes(manifest))
        finally:
            marker.unlink(missing_ok=True)
        return result

    def add(self, artifact: str | os.PathLike, name: str, tag: str) -> PullResult:
        """Import a local artifact directory (validated and hashed like a push) as name:tag.

        Each file becomes a read-only blob (hard-linked when the artifact is on the store's filesystem,
        copied otherwise) and is re-hashed there; the manifest is written last.
        """
        from zoo.registry.transfer import build_manifest

        manifest, _ = build_manifest(artifact, check_name(name), check_tag(tag))
        entries = check_manifest(manifest, f"{name}:{tag}")
        marker = self._register_inflight(entries, manifest_digest(manifest))
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            for entry in entries:
                final = self.blob_path(entry.sha256)
                if self._present(entry, final):
                    continue
                tmp = final.with_name(f"{final.name}.add-{os.getpid()}")
                try:
                    os.link(Path(artifact) / entry.path, tmp)
                except OSError:  # another filesystem, or links not allowed
                    shutil.copyfile(Path(artifact) / entry.path, tmp)
                digest, size = sha256_path(tmp)
                if digest != entry.sha256 or size != entry.size:
                    tmp.unlink(missing_ok=True)
                    raise ChecksumError(f"{entry.path}: changed while it was being stored; nothing was stored")
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
            path = self._snapshot(manifest, entries)
            atomic_write(self._manifest_path(name, tag), manifest_bytes(manifest))
        finally:
            marker.unlink(missing_ok=True)
        return PullResult(name, tag, path, manifest_digest(manifest), files=entries)

    def _register_inflight(self, entries: list[FileEntry], snapshot: str) -> Path:
        """Record the digests this pull needs (its blobs and the snapshot it will make), under the gc lock,
        so a concurrent gc keeps them."""
        self.inflight.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / "gc.lock")):
            sweep(self.inflight, INFLIGHT_MARKER)  # what killed pulls left (dead owners), not kept until `zoo gc`
            fd, tmp = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".json", dir=self.inflight)
            with os.fdopen(fd, "w") as f:
                json.dump([e.sha256 for e in entries] + [snapshot], f)
        return Path(tmp)

    def _fetch_blob(self, registry: Registry, entry: FileEntry, progress: Progress | None) -> int:
        """Make blob `entry` present and verified; return bytes downloaded (0 if it was already there)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        final = self.blob_path(entry.sha256)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / "locks" / f"{entry.sha256}.lock")):
            if self._present(entry, final):  # already stored (or another process finished it while we waited)
                return 0
            # Always a copy of its own (a local registry's copy_file_range may share extents copy-on-write, a
            # reflink): a store never shares an inode with a registry, whose blob could be changed in place.
            return self._download(registry, entry, final, progress)

    def _present(self, entry: FileEntry, final: Path) -> bool:
        """Is the blob stored and intact? A blob is re-verified before a pull trusts it (the verify cache
        spares the hash when the file is unchanged since it was last hashed); a corrupted one is deleted
        so the pull fetches it again."""
        from zoo.verify import file_matches

        if not final.is_file():
            return False
        if final.stat().st_size == entry.size and file_matches(final, entry.sha256, self.verify_cache):
            return True
        final.unlink(missing_ok=True)
        return False

    def _remember(self, snapshot: Path, entries: list[FileEntry]) -> None:
        """Enter the blobs this pull verified, and the snapshot files linked to them, in the verify cache:
        the first `zoo run` after a pull does not hash them again."""
        from zoo.verify import remember

        verified = []
        for entry in entries:
            blob, linked = self.blob_path(entry.sha256), snapshot / entry.path
            verified.append((blob, entry.sha256))
            if same_file(blob, linked):
                verified.append((linked, entry.sha256))
        remember(verified, self.verify_cache)

    def _download(self, registry: Registry, entry: FileEntry, final: Path, progress: Progress | None) -> int:
        """Fetch into `<hex>.partial` (resuming it), hash on a second thread, verify, then rename into place.

        A body that ends early (the server or a proxy dropped the connection) keeps its partial and is
        resumed from where it stopped (Range), up to DOWNLOAD_ATTEMPTS times with a growing pause."""
        written = 0
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                return written + self._download_once(registry, entry, final, progress, resumed=attempt > 0)
            except _CutShort as cut:
                written += cut.written
                if attempt == DOWNLOAD_ATTEMPTS - 1:
                    raise RegistryError(f"{entry.path}: the registry closed the connection early {DOWNLOAD_ATTEMPTS} "
                                        f"times (last at byte {cut.pos} of {entry.size}); the partial download is "
                                        f"kept: pull again to resume") from None
                time.sleep(RETRY_PAUSE * 2 ** attempt)
        raise AssertionError("unreachable")

    def _download_once(self, registry: Registry, entry: FileEntry, final: Path, progress: Progress | None,
                       resumed: bool) -> int:
        partial = final.with_name(final.name + ".partial")
        have = partial.stat().st_size if partial.is_file() else 0
        if have > entry.size:
            have = 0
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            copy = getattr(registry, "copy_blob", None)  # in-kernel copy from a local directory
            if have < entry.size and copy is None:
                start, chunks = registry.read_blob(entry, have)
            else:
                start, chunks = have, iter(())
            os.ftruncate(fd, start)  # a backend that cannot seek restarts at 0
            sink = HashingSink(fd, start, progress)
            if start and progress and not resumed:  # a retry's prefix was counted by the attempt that wrote it
                progress(start)
            try:
                if copy is not None and have < entry.size:
                    for n in copy(entry, start, fd):
                        sink.copied(n)
                        if sink.pos > entry.size:
                            break
                for chunk in chunks:  # a network error raises here and leaves the partial for resume
                    sink.write(chunk)
                    if sink.pos > entry.size:
                        break  # longer than promised: the check below fails
                digest = sink.finish()
            except BaseException as err:
                sink.abort()
                if isinstance(err, OSError) and err.errno in FULL_DISK:
                    raise DiskFullError(f"{partial}: {err.strerror.lower()} writing {entry.path} "
                                        f"(free some space, then pull again: the download resumes)") from None
                raise
            total, written = sink.pos, sink.written
        finally:
            os.close(fd)
        if total < entry.size and copy is None:
            raise _CutShort(total, written)
        if total != entry.size or digest != entry.sha256:
            partial.unlink(missing_ok=True)
            what = f"{total} bytes, expected {entry.size}" if total != entry.size else \
                f"sha256 {digest[:16]}…, expected {entry.sha256[:16]}…"
            raise ChecksumError(f"{entry.path}: downloaded blob does not match the manifest ({what}); "
                                f"nothing was stored")
        os.chmod(partial, 0o444)
        os.replace(partial, final)
        return written

    def _snapshot(self, manifest: dict, entries: list[FileEntry]) -> Path:
        """snapshots/<digest>/: every file hard-linked to its blob (copied if links are impossible)."""
        target = self.snapshots / manifest_digest(manifest)
        if target.is_dir() and self._snapshot_intact(target, entries):
            return target
        self.snapshots.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=self.snapshots))
        try:
            for entry in entries:
                blob = self.blob_path(entry.sha256)
                if not blob.is_file():
                    raise RegistryError(f"{entry.path}: blob sha256:{entry.sha256[:12]} missing from the store; "
                                        f"pull again")
                dest = tmp / entry.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(blob, dest)
                except OSError:
                    shutil.copyfile(blob, dest)
            if target.is_dir():  # a snapshot whose files are no longer its blobs: swap in the rebuilt one
                stale = target.with_name(f".stale-{target.name}-{os.getpid()}")
                with contextlib.suppress(OSError):
                    os.rename(target, stale)
                    shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:  # a concurrent pull built it first
                if not target.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _snapshot_intact(self, target: Path, entries: list[FileEntry]) -> bool:
        """Every file of the snapshot is still its blob (a hard link), or a copy that matches the digest."""
        from zoo.verify import file_matches

        for entry in entries:
            linked, blob = target / entry.path, self.blob_path(entry.sha256)
            if same_file(linked, blob):
                continue
            if linked.is_symlink() or not linked.is_file() or linked.stat().st_size != entry.size \
                    or not file_matches(linked, entry.sha256, self.verify_cache):
                return False
        return True

    def copy(self, name: str, tag: str, new_name: str, new_tag: str) -> str:
        """Store name:tag's manifest again as new_name:new_tag (no blob is copied); returns its digest.

        Like `ollama cp`: a target that already names the same manifest is left as is; any other
        existing target is refused (remove it first).
        """
        manifest = self.get_manifest(name, tag)
        digest = manifest_digest(manifest)
        target = self._manifest_path(new_name, new_tag)
        if target.is_file():
            try:
                existing = manifest_digest(parse_manifest(target.read_bytes(), f"{new_name}:{new_tag}"))
            except RegistryError:
                existing = None
            if existing == digest:
                return digest
            raise RegistryError(f"{new_name}:{new_tag}: already in the local store as another model; "
                                f"`zoo rm {new_name}:{new_tag}` first")
        atomic_write(target, manifest_bytes(manifest))
        return digest

    # ---- removing --------------------------------------------------------------------------
    def remove(self, name: str, tag: str) -> None:
        """Forget name:tag (its blobs stay until `gc`)."""
        path = self._manifest_path(name, tag)
        if not path.is_file():
            raise NotFoundError(f"{name}:{tag}: not in the local store ({self.root})")
        path.unlink()
        parent = path.parent
        while parent != self.manifests and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def gc(self) -> dict:
        """Delete blobs, partial downloads and snapshots no manifest or running pull refers to."""
        freed, blobs_removed, snaps_removed = 0, 0, 0
        if not self.root.is_dir():
            return {"blobs_removed": 0, "snapshots_removed": 0, "bytes_freed": 0}
        self.inflight.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / "gc.lock")):
            keep_blobs: set[str] = set()
            keep_snaps: set[str] = set()
            # running pulls' markers first, then the manifests: a pull writes its manifest before it drops its
            # marker, so one finishing meanwhile is seen in one or the other (the other order lost its snapshot)
            for marker in self.inflight.glob("*.json"):
                named = INFLIGHT_MARKER.fullmatch(marker.name)
                pid = int(named.group("pid")) if named else -1
                if pid > 0 and pid_alive(pid):
                    try:
                        needed = json.loads(marker.read_text())
                    except (OSError, ValueError):
                        continue
                    keep_blobs.update(needed)  # blob digests, and the digest of the snapshot it will make
                    keep_snaps.update(needed)
                else:
                    marker.unlink(missing_ok=True)
            for item in self.list():
                manifest = self.get_manifest(item["name"], item["tag"])
                keep_blobs.update(f["sha256"] for f in manifest["files"])
                keep_snaps.add(item["digest"])
            for path in _entries(self.blobs):
                digest = path.name.split(".", 1)[0]
                if digest in keep_blobs:
                    continue
                freed += path.stat().st_size
                path.unlink(missing_ok=True)
                blobs_removed += not path.name.endswith(".partial")
            for path in _entries(self.snapshots):
                if path.name in keep_snaps or SNAPSHOT_STAGING.fullmatch(path.name):
                    continue  # staging snapshots: only a dead owner's are removed, by the sweep below
                shutil.rmtree(path, ignore_errors=True)
                snaps_removed += 1
            sweep(self.snapshots, SNAPSHOT_STAGING)
            sweep(self.root / "tmp", BUILD_STAGING)
        return {"blobs_removed": blobs_removed, "snapshots_removed": snaps_removed, "bytes_freed": freed}


def sha256_path(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """(hex sha256, size) of a file, read in CHUNK pieces (OpenSSL releases the GIL while hashing)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest(), size


def same_file(a: Path, b: Path) -> bool:
    """Are `a` and `b` the same file (a hard link)? False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _entries(directory: Path) -> Iterator[Path]:
    if directory.is_dir():
        yield from sorted(directory.iterdir())


def resolve(name_or_path: str | os.PathLike, *, registry: str | None = None, progress: Progress | None = None,
            on_total: Callable[[int], None] | None = None, log: Callable[[str], None] | None = None,
            steps: Callable[[str], None] | None = None, confirm: Callable[[BuildEstimate], None] | None = None) -> Path:
    """The artifact directory for a path, a stored name, or a name to pull (pulled when missing).

    This is what `zoo run NAME` calls: a directory is returned as is; `name[:tag]` (or a full
    s3://, hf://, http(s):// reference) is looked up in the store and pulled from its registry
    (or `registry`, else the default one) only when absent, or built from its catalog recipe
    when no registry has it (`log` is told so; `confirm` and `steps` as zoo.registry.transfer.pull's).
    """
    from zoo.registry import parse_ref
    from zoo.registry.transfer import pull

    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        return candidate
    if text.startswith((".", "/", "~")) or (os.sep in text and "://" not in text and not _looks_namespaced(text)):
        raise NotFoundError(f"{text}: no such artifact directory")
    ref = parse_ref(text)
    store = Store()
    if store.has(ref.store_name, ref.tag):
        return store.path(ref.store_name, ref.tag)
    return pull(text, registry=registry, store=store, progress=progress, on_total=on_total, log=log, steps=steps,
                confirm=confirm).path


def _looks_namespaced(text: str) -> bool:
    """'org/name[:tag]' is a name, not a path, when no such directory exists."""
    try:
        from zoo.registry import parse_ref

        parse_ref(text)
        return True
    except RegistryError:
        return False

"""Verify artifact files against the sha256 their card or manifest promises, hashing each file once.

A model comes from strangers and a size check misses a flipped byte, so `zoo run`, `zoo bench` and
`zoo inspect` check every file the card lists (issue 18). Hashing gigabytes on every start would cost
seconds, so the digest of each file that verified is cached in ZOO_HOME/verified.json, keyed by the
file's resolved path, inode, size and mtime_ns: a warm start only stats the files, and any rewrite of
a file (new size, mtime or inode) sends it through sha256 again. The cache is only an optimisation:
an unreadable or corrupt one is ignored (and rewritten), an unwritable one means hashing next time.
`zoo verify` (verify_files) hashes everything regardless of the cache and refreshes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ChecksumError

if TYPE_CHECKING:
    from zoo.format import Artifact
    from zoo.store import Store

CACHE_FILE = "verified.json"
CACHE_VERSION = 1
CARD_FILE = "zoo.yaml"  # zoo.format.constants.CARD_FILE, repeated: importing zoo.format loads numpy
TOKENIZER_FILE = "tokenizer.json"  # read by the runtime, so it must be listed like the shards
MAX_CACHE_BYTES = 64 << 20  # a cache entry is ~150 bytes: hundreds of thousands of files
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (OpenSSL releases the GIL while it hashes). Not zoo.registry's: importing the
    registry package would cost `zoo run` ~30 ms of start-up."""
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_path() -> Path:
    """Where verified digests are kept: ZOO_HOME/verified.json."""
    from zoo.config import zoo_home

    return zoo_home() / CACHE_FILE


def verify_artifact(art: Artifact, cache: Path | None = None) -> list[str]:
    """Check every file the card lists against its sha256; return the files that had to be hashed
    (empty on a warm start). Raises ChecksumError naming the first file that does not match, or when
    the card gives nothing to check against."""
    listed = listed_digests(art.card, art.path)
    cache = cache or cache_path()
    known = _read_cache(cache)
    pending: dict[str, tuple[Path, dict | None, OSError | None]] = {}  # rel -> (file, stamp, why it has none)
    for rel, expected in listed.items():
        target = (art.path / rel).resolve()
        try:
            stamp = _stamp(target, expected)
        except OSError as err:  # raised below in listed order, as if the files were checked one by one
            pending[rel] = (target, None, err)
            continue
        if known.get(str(target)) != stamp:
            pending[rel] = (target, stamp, None)
    digests = _hash_in_parallel([target for target, stamp, _ in pending.values() if stamp is not None])
    verified: dict[str, dict] = {}
    hashed = []
    for rel, (target, stamp, err) in pending.items():
        if err is not None:
            raise err
        actual, expected = digests[target], listed[rel]
        if isinstance(actual, OSError):
            raise actual
        if actual != expected:
            raise ChecksumError(f"{rel}: sha256 {actual[:12]}... does not match {expected[:12]}... in {CARD_FILE} "
                                f"(the file is corrupted or was altered)")
        verified[str(target)] = stamp
        hashed.append(rel)
    if verified:
        _write_cache(cache, verified)
    return hashed


def _hash_in_parallel(paths: list[Path]) -> dict[Path, str | OSError]:
    """sha256 of each file, one file per thread on up to os.cpu_count() threads (hashlib releases the GIL
    while it hashes, so a cold multi-shard artifact verifies at the speed of several cores); a file that
    cannot be read maps to its OSError, for the caller to raise in its own order."""
    def digest(path: Path) -> str | OSError:
        try:
            return sha256_file(path)
        except OSError as err:
            return err

    workers = min(len(paths), os.cpu_count() or 1)
    if workers <= 1:
        return {path: digest(path) for path in paths}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-verify") as pool:
        return dict(zip(paths, pool.map(digest, paths)))


def listed_digests(card: object, root: Path, need_tokenizer: bool = True) -> dict[str, str]:
    """{relative path: sha256} from a card; every entry needs a path and a digest, and tokenizer.json,
    when present, must be listed. Raises ChecksumError when the card gives nothing to verify against."""
    files = card.get("files") if isinstance(card, dict) else None
    if not isinstance(files, list) or not files:
        raise ChecksumError(f"{root}: {CARD_FILE} is missing or lists no files with sha256, so nothing can be "
                            f"verified (--no-verify skips the check)")
    listed = {}
    for item in files:
        rel = item.get("path") if isinstance(item, dict) else None
        if not isinstance(rel, str) or not rel:
            raise ChecksumError(f"{CARD_FILE}: a files entry has no path")
        digest = item.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ChecksumError(f"{rel[:200]}: {CARD_FILE} gives no valid sha256 for it")
        listed[rel] = digest
    if need_tokenizer and (root / TOKENIZER_FILE).is_file() and TOKENIZER_FILE not in listed:
        raise ChecksumError(f"{TOKENIZER_FILE}: not listed in {CARD_FILE}, so it cannot be verified")
    return listed


@dataclass
class Report:
    """What an explicit verification found: files checked, bytes hashed, one (path, reason) per failure."""

    checked: int = 0
    bytes: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def verify_files(root: Path, listed: Mapping[str, str], cache: Path | None = None,
                 on_file: Callable[[str], None] | None = None) -> Report:
    """Hash every listed file under `root` (no cache shortcut, several files at once), collecting every
    failure instead of stopping at the first: missing, not a regular file, outside `root`, or a different
    sha256. Files that pass are (re)entered in the cache; files that fail are dropped from it. `on_file`
    hears each file as its result is reported, in the card's order."""
    report, verified, failed = Report(), {}, []
    base = root.resolve()
    targets = {rel: (root / rel).resolve() for rel in listed}
    hashable = [t for t in targets.values() if t.is_relative_to(base) and t.is_file()]
    digests = _hash_in_parallel(hashable)
    for rel, expected in listed.items():
        if on_file:
            on_file(rel)
        report.checked += 1
        target = targets[rel]
        if not target.is_relative_to(base):
            report.failures.append((rel, "outside the artifact directory (a symlink or a .. path)"))
            continue
        if target not in digests:
            report.failures.append((rel, "missing" if not target.exists() else "not a regular file"))
            failed.append(str(target))
            continue
        actual = digests[target]
        if isinstance(actual, OSError):
            report.failures.append((rel, f"unreadable ({actual.strerror or actual})"))
            continue
        report.bytes += target.stat().st_size
        if actual != expected:
            report.failures.append((rel, f"sha256 {actual[:12]}... does not match {expected[:12]}..."))
            failed.append(str(target))
        else:
            verified[str(target)] = _stamp(target, expected)
    _write_cache(cache or cache_path(), verified, forget=failed)
    return report


def file_matches(path: Path, expected: str, cache: Path | None = None) -> bool:
    """Does `path` hash to `expected`? A cache entry with the file's current stamp answers without
    hashing; a file that matches is (re)entered in the cache."""
    cache = cache or cache_path()
    target = path.resolve()
    stamp = _stamp(target, expected)
    if _read_cache(cache).get(str(target)) == stamp:
        return True
    if sha256_file(target) != expected:
        return False
    _write_cache(cache, {str(target): stamp})
    return True


def remember(files: Iterable[tuple[Path, str]], cache: Path | None = None) -> None:
    """Enter files just verified by other means (a pull hashes what it downloads) in the cache, so the
    first `zoo run` after a pull does not hash them again."""
    verified = {}
    for path, digest in files:
        with contextlib.suppress(OSError):
            target = path.resolve()
            verified[str(target)] = _stamp(target, digest)
    if verified:
        _write_cache(cache or cache_path(), verified)


def _stamp(path: Path, sha256: str) -> dict:
    """What a cache entry must equal for the file to count as verified without hashing it."""
    st = path.stat()
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _read_cache(path: Path) -> dict[str, dict]:
    """The cached entries; {} when the cache is missing, unreadable or not what this version writes."""
    from zoo.untrusted import loads_json
    from zoo.errors import ZooError

    try:
        doc = loads_json(path.read_bytes(), str(path), max_bytes=MAX_CACHE_BYTES)
    except (OSError, ZooError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or not isinstance(doc.get("files"), dict):
        return {}
    return doc["files"]


def _write_cache(path: Path, verified: dict[str, dict], forget: Iterable[str] = ()) -> None:
    """Merge `verified` into the cache (re-read now, so concurrent writers lose little), drop entries
    for files in `forget` or that no longer exist, and replace the file atomically. Failure to write is
    not an error."""
    import json

    gone = set(forget)
    if not verified and not gone:
        return
    files = {key: stamp for key, stamp in _read_cache(path).items() if key not in gone and os.path.exists(key)}
    files.update(verified)
    with contextlib.suppress(OSError):  # a read-only home: the files are hashed again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".verified-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": CACHE_VERSION, "files": files}, f)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def read_card(root: Path) -> dict:
    """The card of an artifact directory, parsed within the readers' limits (CardError when missing,
    malformed or not a mapping)."""
    from zoo.errors import CardError
    from zoo.untrusted import MAX_YAML_BYTES, load_yaml

    path = root / CARD_FILE
    if path.is_symlink() or not path.is_file():
        raise CardError(f"{CARD_FILE}: missing (or not a regular file), so nothing can be verified")
    with open(path, "rb") as f:
        card = load_yaml(f.read(MAX_YAML_BYTES + 1), CARD_FILE, CardError)
    if not isinstance(card, dict):
        raise CardError(f"{CARD_FILE}: not a YAML mapping")
    return card


def verify_dir(root: Path, cache: Path | None = None, on_file: Callable[[str], None] | None = None) -> Report:
    """`zoo verify DIR`: hash every file the card lists; a missing or inconsistent card, and shards or a
    tokenizer the card does not list, are failures too."""
    from zoo.errors import ZooError

    try:
        listed = listed_digests(read_card(root), root, need_tokenizer=False)  # unlisted files: reported below
    except ZooError as err:
        return Report(failures=[(CARD_FILE, str(err).removeprefix(f"{CARD_FILE}: "))])
    unlisted = sorted(p.name for p in root.iterdir()
                      if (p.suffix == ".safetensors" or p.name == TOKENIZER_FILE) and p.name not in listed)
    report = verify_files(root, listed, cache, on_file)
    report.failures += [(name, f"not listed in {CARD_FILE}") for name in unlisted]
    return report


def verify_stored(store: Store, name: str, tag: str, on_file: Callable[[str], None] | None = None
                  ) -> tuple[Path, Report]:
    """`zoo verify NAME`: hash every file of the stored snapshot, and any blob that is not the same file,
    against the manifest, and check the snapshot's card is the manifest's and lists its digests. A
    snapshot that is gone is rebuilt from the blobs first (one whose blobs are gone is a failure)."""
    from zoo.errors import ZooError
    from zoo.registry.base import check_manifest, manifest_digest
    from zoo.store import same_file

    manifest = store.get_manifest(name, tag)
    entries = check_manifest(manifest, f"{name}:{tag}")
    target = store.snapshots / manifest_digest(manifest)
    if not target.is_dir():
        missing = [e for e in entries if not store.blob_path(e.sha256).is_file()]
        if missing:
            return target, Report(len(entries), 0, [(e.path, f"blob sha256:{e.sha256[:12]} missing from the store "
                                                             f"(pull again)") for e in missing])
        target = store.path(name, tag)
    report = verify_files(target, {e.path: e.sha256 for e in entries}, store.verify_cache, on_file)
    for entry in entries:
        blob = store.blob_path(entry.sha256)
        if not blob.is_file():
            report.failures.append((entry.path, f"blob sha256:{entry.sha256[:12]} missing from the store"))
        elif not same_file(blob, target / entry.path) and sha256_file(blob) != entry.sha256:
            report.failures.append((entry.path, f"blob sha256:{entry.sha256[:12]} in the store is corrupted"))
    try:
        card = read_card(target)
        if card != manifest["card"]:
            report.failures.append((CARD_FILE, "differs from the card in the manifest"))
        shipped = {e.path: e.sha256 for e in entries}
        wrong = sorted(p for p, digest in listed_digests(card, target).items() if shipped.get(p) != digest)
        if wrong:
            report.failures.append((CARD_FILE, f"lists {wrong[0]} with a digest the manifest does not have"))
    except ZooError as err:
        report.failures.append((CARD_FILE, str(err).removeprefix(f"{CARD_FILE}: ")))
    return target, report

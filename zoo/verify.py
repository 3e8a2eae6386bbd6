"""Verify an artifact directory against its card's sha256 before first use, hashing each file once.

A model comes from strangers and a size check misses a flipped byte, so `zoo run`, `zoo bench` and
`zoo inspect` check every file the card lists (issue 18). Hashing gigabytes on every start would cost
seconds, so the digest of each file that verified is cached in ZOO_HOME/verified.json, keyed by the
file's resolved path, inode, size and mtime_ns: a warm start only stats the files, and any rewrite of
a file (new size, mtime or inode) sends it through sha256 again. The cache is only an optimisation:
an unreadable or corrupt one is ignored (and rewritten), an unwritable one means hashing next time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ChecksumError
from zoo.registry.transfer import sha256_file
from zoo.format.constants import CARD_FILE

if TYPE_CHECKING:
    from zoo.format import Artifact

CACHE_FILE = "verified.json"
CACHE_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"  # read by the runtime, so it must be listed like the shards
_HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_path() -> Path:
    """Where verified digests are kept: ZOO_HOME/verified.json."""
    from zoo.config import zoo_home

    return zoo_home() / CACHE_FILE


def verify_artifact(art: Artifact, cache: Path | None = None) -> list[str]:
    """Check every file the card lists against its sha256; return the files that had to be hashed
    (empty on a warm start). Raises ChecksumError naming the first file that does not match, or when
    the card gives nothing to check against."""
    listed = _listed(art)
    cache = cache or cache_path()
    known = _read_cache(cache)
    verified: dict[str, dict] = {}
    hashed = []
    for rel, expected in listed.items():
        target = (art.path / rel).resolve()
        key, stamp = str(target), _stamp(target, expected)
        if known.get(key) == stamp:
            continue
        actual = sha256_file(target)
        if actual != expected:
            raise ChecksumError(f"{rel}: sha256 {actual[:12]}... does not match {expected[:12]}... in {CARD_FILE} "
                                f"(the file is corrupted or was altered)")
        verified[key] = stamp
        hashed.append(rel)
    if verified:
        _write_cache(cache, verified)
    return hashed


def _listed(art: Artifact) -> dict[str, str]:
    """{relative path: sha256} from the card; every entry needs a digest and the tokenizer must be listed.
    (Opening the artifact already checked the paths stay inside it, the sizes and that every shard is listed.)"""
    files = (art.card or {}).get("files")
    if not isinstance(files, list) or not files:
        raise ChecksumError(f"{art.path}: {CARD_FILE} lists no files with sha256, so nothing can be verified "
                            f"(--no-verify skips the check)")
    listed = {}
    for item in files:
        digest = item.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ChecksumError(f"{item['path']}: {CARD_FILE} gives no valid sha256 for it")
        listed[item["path"]] = digest
    if (art.path / TOKENIZER_FILE).is_file() and TOKENIZER_FILE not in listed:
        raise ChecksumError(f"{TOKENIZER_FILE}: not listed in {CARD_FILE}, so it cannot be verified")
    return listed


def _stamp(path: Path, sha256: str) -> dict:
    """What a cache entry must equal for the file to count as verified without hashing it."""
    st = path.stat()
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _read_cache(path: Path) -> dict[str, dict]:
    """The cached entries; {} when the cache is missing, unreadable or not what this version writes."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or not isinstance(doc.get("files"), dict):
        return {}
    return doc["files"]


def _write_cache(path: Path, verified: dict[str, dict]) -> None:
    """Merge `verified` into the cache (re-read now, so concurrent writers lose little), drop entries
    for files that no longer exist, and replace the file atomically. Failure to write is not an error."""
    files = {key: stamp for key, stamp in _read_cache(path).items() if os.path.exists(key)}
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

"""Stream an artifact to disk one tensor at a time, deterministically, and publish it atomically.

Each add() spills the tensor's parts to the current shard's body file; closing a shard writes the
header and copies the body in the SPEC order (decreasing itemsize, then name). Everything happens
in a temporary sibling directory that finish() renames into place, so a failure leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from zoo.errors import FormatError

from .architectures import check_config, expected_tensors, is_shared
from .constants import (CARD_FILE, DEFAULT_SHARD_BYTES, DTYPES, METADATA_KEY, MODEL_SHARD, NUMPY_TO_DTYPE,
                        SHARED_SHARD, part_name, version_for)
from .encode import EncodedTensor
from .envelope import build_header

_COPY_CHUNK = 8 << 20


@dataclass
class _Shard:
    """A shard being written: its body spill file and what is in it."""

    name: str
    body: Path
    entries: list[tuple[str, str, tuple[int, ...], int, int]] = field(default_factory=list)  # name, dtype, shape, spill offset, nbytes
    logical: dict[str, dict] = field(default_factory=dict)
    size: int = 0


def _dtype_name(name: str, array: np.ndarray, encoded: EncodedTensor) -> str:
    if array.dtype == np.uint16 and encoded.encoding == "dense":
        return "BF16"
    dtype = NUMPY_TO_DTYPE.get(array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype)
    if dtype is None:
        raise FormatError(f"{name}: cannot store numpy dtype {array.dtype}")
    return dtype


class ArtifactWriter:
    """Write an artifact directory: add() tensors one at a time, add_file() extras, finish(card)."""

    def __init__(self, out_dir: str | os.PathLike, config: dict, *, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                 overwrite: bool = False) -> None:
        check_config(config)
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise FormatError(f"{self.out_dir}: already exists (choose another path or overwrite)")
        self.config = config
        self.max_shard_bytes = max_shard_bytes
        self.overwrite = overwrite
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        self._spill = self._tmp / ".spill"
        self._spill.mkdir()
        self._open: dict[bool, _Shard | None] = {False: None, True: None}
        self._count = {False: 0, True: 0}
        self._files: list[str] = []
        self._names: set[str] = set()
        self._done = False

    def __enter__(self) -> "ArtifactWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()

    def abort(self) -> None:
        """Remove everything written so far."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._done = True

    def add(self, name: str, encoded: EncodedTensor) -> None:
        """Append one logical tensor (all its parts) to the current shard of its kind."""
        if name in self._names:
            raise FormatError(f"{name}: added twice")
        self._names.add(name)
        shared = is_shared(name, tuple(encoded.shape), encoded.encoding)
        nbytes = encoded.nbytes
        shard = self._open[shared]
        if shard is None or (shard.size and shard.size + nbytes > self.max_shard_bytes):
            if shard is not None:
                self._close_shard(shard)
            self._count[shared] += 1
            fname = (SHARED_SHARD if shared else MODEL_SHARD).format(self._count[shared])
            shard = _Shard(fname, self._spill / fname)
            self._open[shared] = shard
        with open(shard.body, "ab") as f:
            for suffix in sorted(encoded.parts):
                array = np.ascontiguousarray(encoded.parts[suffix])
                physical = part_name(name, suffix)
                dtype = _dtype_name(physical, array, encoded)
                array = array.astype(DTYPES[dtype], copy=False)
                shard.entries.append((physical, dtype, tuple(array.shape), f.tell(), array.nbytes))
                f.write(array.reshape(-1).view(np.uint8).data)
        shard.logical[name] = encoded.metadata()
        shard.size += nbytes

    def add_file(self, name: str, data: bytes | str | os.PathLike) -> None:
        """Copy an extra file (tokenizer.json) into the artifact."""
        if name == CARD_FILE or "/" in name or name.endswith(".safetensors"):
            raise FormatError(f"{name}: not allowed as an extra file")
        target = self._tmp / name
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            shutil.copyfile(data, target)
        self._files.append(name)

    def _close_shard(self, shard: _Shard) -> None:
        order = sorted(shard.entries, key=lambda e: (-DTYPES[e[1]].itemsize, e[0]))
        # each file says the oldest version that has its encodings: 1.0 files stay byte-identical (SPEC.md 2)
        version = version_for(info["encoding"] for info in shard.logical.values())
        meta = {"format_version": version, "config": self.config, "tensors": shard.logical}
        header = build_header({METADATA_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))},
                              [(n, d, s, b) for n, d, s, _, b in order])
        with open(self._tmp / shard.name, "wb") as out, open(shard.body, "rb") as body:
            out.write(header)
            for _, _, _, offset, nbytes in order:
                body.seek(offset)
                remaining = nbytes
                while remaining:
                    chunk = body.read(min(remaining, _COPY_CHUNK))
                    out.write(chunk)
                    remaining -= len(chunk)
        shard.body.unlink()
        self._files.append(shard.name)

    def finish(self, card: dict | None = None) -> Path:
        """Close shards, check completeness, write zoo.yaml with every file's size and sha256, publish."""
        for shared in (False, True):
            if self._open[shared] is not None:
                self._close_shard(self._open[shared])
                self._open[shared] = None
        missing = sorted(set(expected_tensors(self.config)) - self._names)
        if missing:
            raise FormatError(f"{missing[0]}: missing (required by arch {self.config['arch']})")
        self._spill.rmdir()
        card = dict(card or {})
        card["files"] = [{"path": n, "size": (self._tmp / n).stat().st_size, "sha256": _sha256(self._tmp / n)}
                         for n in sorted(self._files)]
        (self._tmp / CARD_FILE).write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")
        if self.out_dir.exists() and self.overwrite:
            trash = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.old-", dir=self.out_dir.parent))
            os.replace(self.out_dir, trash / "old")
            os.replace(self._tmp, self.out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self._tmp, self.out_dir)
        self._done = True
        return self.out_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_COPY_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()

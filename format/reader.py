"""Open an artifact lazily: headers only, memory-mapped, zero-copy views, every header check run.

Opening never reads tensor data; `Artifact.validate()` reads it and runs the data invariants
(format/checks.py). Both must pass before a kernel touches a tensor.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.errors import ChecksumError, FormatError, VersionError
from zoo.untrusted import MAX_YAML_BYTES, load_yaml, loads_json

from .architectures import check_config, expected_tensors
from .constants import (CARD_FILE, DTYPES, ENCODINGS, FORMAT_MAJOR, FORMAT_MINOR, FORMAT_VERSION, MAX_GROUP_SIZE,
                        METADATA_KEY, TOKENIZER_FILE, part_name, part_shape, tile4_problem)
from .encode import EncodedTensor, decode
from .envelope import TensorEntry, parse_header


@dataclass
class Artifact:
    """An opened artifact: config, logical tensors as zero-copy views, the raw card, the files."""

    path: Path
    config: dict
    tensors: dict[str, EncodedTensor]
    files: list[Path]
    card: dict | None
    format_version: str
    _maps: list[mmap.mmap] = field(default_factory=list, repr=False)

    def validate(self) -> None:
        """Check every data invariant of SPEC.md section 4 (and finite norm weights); raises FormatError
        naming tensor and check."""
        from .checks import check_tensor

        for name, tensor in self.tensors.items():
            check_tensor(name, tensor)
            if tensor.encoding == "dense" and len(tensor.shape) == 1 and not np.isfinite(decode(tensor)).all():
                raise FormatError(f"{name}: norm weights not finite (NaN or infinity)")

    def verify_checksums(self) -> None:
        """Compare every file listed in the card with its size and sha256 (reads everything)."""
        for item in (self.card or {}).get("files", []):
            path = self.path / item["path"]
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != item.get("sha256"):
                raise ChecksumError(f"{item['path']}: sha256 {digest.hexdigest()} does not match the card")


def _read_card(path: Path) -> dict | None:
    card_path = path / CARD_FILE
    if not card_path.exists():
        return None
    _check_inside(path, card_path)
    with open(card_path, "rb") as f:
        card = load_yaml(f.read(MAX_YAML_BYTES + 1), CARD_FILE)  # one byte more than allowed: refused, not read whole
    if not isinstance(card, dict):
        raise FormatError(f"{CARD_FILE}: not a YAML mapping")
    return card


def _check_card_files(path: Path, card: dict | None, shards: list[Path]) -> None:
    """The card's file list must name every shard, and every listed file must have its size."""
    if card is None or "files" not in card:
        return
    listed = {}
    for item in card["files"] if isinstance(card["files"], list) else [None]:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not isinstance(item.get("size"), int):
            raise FormatError(f"{CARD_FILE}: files must be a list of {{path, size, sha256}}")
        rel = item["path"]
        if rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
            raise FormatError(f"{CARD_FILE}: file path {rel!r} escapes the artifact")
        listed[rel] = item["size"]
    for rel, size in listed.items():
        target = path / rel
        _check_inside(path, target)
        if not target.is_file():
            raise FormatError(f"{rel}: listed in {CARD_FILE} but missing")
        if target.stat().st_size != size:
            raise FormatError(f"{rel}: {target.stat().st_size} bytes on disk, {size} in {CARD_FILE} (truncated or changed)")
    for shard in shards:
        if shard.name not in listed:
            raise FormatError(f"{shard.name}: not listed in {CARD_FILE}")


def _check_inside(root: Path, target: Path) -> None:
    """Refuse a file that is, or goes through, a symlink resolving outside the artifact directory."""
    base = root.resolve()
    if not target.resolve().is_relative_to(base):
        raise FormatError(f"{target.name}: a symlink leading outside the artifact directory")


def _read_head(path: Path) -> tuple[bytes, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) == 8:
            n = int.from_bytes(first, "little")
            if 2 <= n <= min(size - 8, 100_000_000):
                return first + f.read(n), size
        return first, size


def _zoo_metadata(metadata: dict[str, str], where: str) -> dict:
    if METADATA_KEY not in metadata:
        raise FormatError(f"{where}: no zoo metadata (__metadata__[\"{METADATA_KEY}\"]); not a zoo artifact")
    zoo_meta = loads_json(metadata[METADATA_KEY], f"{where}: zoo metadata")
    if not isinstance(zoo_meta, dict) or not isinstance(zoo_meta.get("tensors"), dict):
        raise FormatError(f"{where}: zoo metadata must be an object with a tensors object")
    version = zoo_meta.get("format_version")
    if not isinstance(version, str) or not _version_ok(version):
        raise FormatError(f"{where}: bad format_version {version!r}")
    if int(version.split(".")[0]) > FORMAT_MAJOR:
        raise VersionError(f"{where}: written in zoo format {version}; this zoo reads {FORMAT_VERSION} "
                           f"(major {FORMAT_MAJOR}) — upgrade zoo")
    return zoo_meta


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def _version_ok(version: str) -> bool:
    pieces = version.split(".")
    return len(pieces) == 2 and all(p.isdigit() for p in pieces)


def _view(mm: mmap.mmap, entry: TensorEntry) -> np.ndarray:
    dtype = DTYPES[entry.dtype]
    count = entry.nbytes // dtype.itemsize
    if count == 0:
        array = np.empty(entry.shape, dtype)
        array.flags.writeable = False
        return array
    return np.frombuffer(mm, dtype=dtype, count=count, offset=entry.offset).reshape(entry.shape)


def _logical(name: str, info: object, entries: dict[str, TensorEntry], where: str,
             version: tuple[int, int]) -> tuple[dict, list[str]]:
    """Check one logical tensor's metadata and parts; return (info, physical part names)."""
    if not isinstance(info, dict) or not isinstance(info.get("encoding"), str):
        raise FormatError(f"{name}: metadata entry needs an encoding")
    if info["encoding"] not in ENCODINGS:
        newer = (f" (the file is format {version[0]}.{version[1]}, this zoo reads {FORMAT_VERSION}: upgrade zoo)"
                 if version[1] > FORMAT_MINOR else "")
        raise FormatError(f"{name}: unknown encoding {info['encoding']!r}{newer}")
    spec = ENCODINGS[info["encoding"]]
    if version < spec.since:
        raise FormatError(f"{name}: encoding {spec.name} needs format_version {spec.since[0]}.{spec.since[1]} "
                          f"or later, the file says {version[0]}.{version[1]}")
    shape = info.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise FormatError(f"{name}: bad shape {shape!r}")
    if spec.matrix_only and len(shape) != 2:
        raise FormatError(f"{name}: {spec.name} needs a 2-D shape, got {shape}")
    group = info.get("group_size")
    if spec.grouped:
        if (not isinstance(group, int) or isinstance(group, bool) or not 0 < group <= MAX_GROUP_SIZE
                or group % spec.group_multiple):
            raise FormatError(f"{name}: group_size must be a positive multiple of {spec.group_multiple} up to "
                              f"{MAX_GROUP_SIZE}, got {group!r}")
    elif group is not None:
        raise FormatError(f"{name}: {spec.name} takes no group_size")
    extra = set(info) - {"encoding", "shape", "group_size", *spec.meta_keys}
    if extra:
        raise FormatError(f"{name}: unknown metadata keys {sorted(extra)}")
    missing = [key for key in spec.meta_keys if key not in info]
    if missing:
        raise FormatError(f"{name}: {spec.name} needs metadata key {missing[0]!r}")
    if spec.name == "tile4-q4":
        problem = tile4_problem(tuple(shape), group, info["keep"])
        if problem:
            raise FormatError(f"{name}: {problem}")
    names = []
    for part in spec.parts:
        physical = part_name(name, part.suffix)
        entry = entries.get(physical)
        if entry is None:
            if part.optional:
                continue
            raise FormatError(f"{name}: missing part {physical} in {where}")
        if entry.dtype not in part.dtypes:
            raise FormatError(f"{physical}: dtype {entry.dtype}, expected {' or '.join(part.dtypes)}")
        want = part_shape(spec.name, part.suffix, tuple(shape), group, info.get("keep"))
        if want is None:
            if len(entry.shape) != 1:
                raise FormatError(f"{physical}: values must be 1-D, got shape {list(entry.shape)}")
        elif entry.shape != want:
            raise FormatError(f"{physical}: shape {list(entry.shape)}, expected {list(want)}")
        names.append(physical)
    return info, names


def open_artifact(path: str | os.PathLike) -> Artifact:
    """Open an artifact directory (or one .safetensors file); reads headers only."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        shards, root = [path], path.parent
    elif path.is_dir():
        root = path
        shards = sorted(p for p in path.iterdir() if p.suffix == ".safetensors")
    else:
        raise FormatError(f"{path}: no such artifact directory")
    if not shards:
        raise FormatError(f"{path}: no .safetensors files")
    if path.is_dir():
        for inside in shards + [root / TOKENIZER_FILE]:
            _check_inside(root, inside)
    card = _read_card(root)
    if path.is_dir():
        _check_card_files(root, card, shards)
    config, version = None, None
    tensors: dict[str, EncodedTensor] = {}
    maps: list[mmap.mmap] = []
    for shard in shards:
        head, size = _read_head(shard)
        metadata, entries = parse_header(head, size, shard.name)
        zoo_meta = _zoo_metadata(metadata, shard.name)
        file_version = _version_tuple(zoo_meta["format_version"])
        if version is None or file_version > _version_tuple(version):
            version = zoo_meta["format_version"]  # the artifact's version: the newest of its files'
        if config is None:
            check_config(zoo_meta.get("config"))
            config = zoo_meta["config"]
        elif zoo_meta.get("config") != config:
            raise FormatError(f"{shard.name}: config differs from {shards[0].name}")
        with open(shard, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        if mm is not None:
            maps.append(mm)
        claimed: set[str] = set()
        for name, info in zoo_meta["tensors"].items():
            if name in tensors:
                raise FormatError(f"{name}: stored in more than one file")
            info, names = _logical(name, info, entries, shard.name, file_version)
            claimed.update(names)
            parts = {}
            for physical in names:
                suffix = physical[len(name) + 1:] if physical != name else ""
                parts[suffix] = _view(mm, entries[physical])
            meta = {key: info[key] for key in ENCODINGS[info["encoding"]].meta_keys}
            tensors[name] = EncodedTensor(info["encoding"], tuple(info["shape"]), parts, info.get("group_size"), meta)
        stray = set(entries) - claimed
        if stray:
            raise FormatError(f"{shard.name}: tensor {sorted(stray)[0]} belongs to no logical tensor")
    _check_architecture(config, tensors)
    return Artifact(root, config, tensors, shards, card, version, maps)


def _check_architecture(config: dict, tensors: dict[str, EncodedTensor]) -> None:
    expected = expected_tensors(config)
    for name, shape in expected.items():
        if name not in tensors:
            raise FormatError(f"{name}: missing (required by arch {config['arch']})")
        if tensors[name].shape != shape:
            raise FormatError(f"{name}: shape {list(tensors[name].shape)} disagrees with the config ({list(shape)})")
    for name in tensors:
        if name not in expected:
            raise FormatError(f"{name}: not a tensor of arch {config['arch']}")

"""push, pull and search: the verbs' logic, between an artifact directory, the store and a registry.

push validates the artifact (zoo.format) and its card (zoo.card) before anything is uploaded,
hashes every file, and lets the backend upload blobs first and the manifest last.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import card as cards
from zoo.config import default_registry
from zoo.errors import CardError, ChecksumError, NotFoundError, RegistryError

from . import Ref, Registry, open_registry, parse_ref
from .base import CHUNK, MANIFEST_VERSION, FileEntry, check_manifest, check_path, manifest_digest

if TYPE_CHECKING:
    from zoo.build.estimate import BuildEstimate

CARD_FILE = "zoo.yaml"


def registry_for(ref: Ref, override: str | None = None) -> Registry:
    """The registry a reference points at: its own (full refs) or the default one."""
    if ref.registry and override:
        raise RegistryError("give either a full reference (s3://, hf://, http(s)://) or --registry, not both")
    return open_registry(ref.registry or default_registry(override))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(artifact: str | os.PathLike, name: str, tag: str) -> tuple[dict, list[str]]:
    """Validate an artifact and its card, hash every file; return (manifest, card warnings).

    Refuses: format violations (FormatError), a missing or invalid card (CardError), files the card
    does not list or lists wrongly (ChecksumError), symlinks and paths outside the directory.
    """
    from zoo.format import open_artifact

    root = Path(artifact)
    if not root.is_dir():
        raise NotFoundError(f"{root}: not an artifact directory")
    art = open_artifact(root)
    art.validate()
    card_path = root / CARD_FILE
    if art.card is None:
        raise CardError(f"{card_path}: missing; write artifacts with zoo.format.ArtifactWriter")
    warnings = cards.validate(art.card, source=str(card_path))
    listed = art.card.get("files")
    if not listed:
        raise CardError(f"{card_path}: lists no files (the format requires files: [{{path, size, sha256}}])")
    files = []
    for item in listed:
        path = check_path(item["path"])
        target = root / path
        if target.is_symlink() or not target.is_file():
            raise RegistryError(f"{path}: not a regular file in {root} (symlinks are refused)")
        digest = sha256_file(target)
        if digest != item["sha256"] or target.stat().st_size != item["size"]:
            raise ChecksumError(f"{path}: sha256/size on disk do not match {CARD_FILE} (file changed after writing)")
        files.append(FileEntry(path, item["size"], digest))
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    extra = sorted(on_disk - {f.path for f in files} - {CARD_FILE})
    if extra:
        raise CardError(f"{extra[0]}: in the artifact but not listed in {CARD_FILE}")
    if card_path.is_symlink():
        raise RegistryError(f"{card_path}: is a symlink; refused")
    files.append(FileEntry(CARD_FILE, card_path.stat().st_size, sha256_file(card_path)))
    manifest = {"manifest_version": MANIFEST_VERSION, "name": name, "tag": tag,
                "files": [vars(f) for f in sorted(files, key=lambda f: f.path)], "card": art.card}
    check_manifest(manifest)
    return manifest, warnings


def _artifact_dir(artifact: str | os.PathLike) -> Path:
    """A directory as given, else the snapshot of a model in the local store (never pulled here)."""
    from zoo.store import Store

    path = Path(artifact).expanduser()
    if path.is_dir():
        return path
    try:
        stored = parse_ref(os.fspath(artifact))
    except RegistryError:
        stored = None
    store = Store()
    if stored is not None and stored.registry is None and store.has(stored.store_name, stored.tag):
        return store.path(stored.store_name, stored.tag)
    raise NotFoundError(f"{artifact}: neither an artifact directory nor a model in the local store")


def push(artifact: str | os.PathLike, ref: str, *, registry: str | None = None, force: bool = False,
         progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None) -> dict:
    """Validate `artifact` (a directory or a stored NAME[:TAG]) and publish it as `ref`; returns a summary.

    A tag that already holds exactly these files (same paths and sha256, e.g. a retry after a killed push
    whose manifest landed) is left as it is, nothing uploaded (`unchanged`); other content under an existing
    tag is refused unless force."""
    parsed = parse_ref(ref)
    artifact = _artifact_dir(artifact)
    reg = registry_for(parsed, registry)
    manifest, warnings = build_manifest(artifact, parsed.name, parsed.tag)
    total = sum(f["size"] for f in manifest["files"])
    summary = {"name": parsed.name, "tag": parsed.tag, "registry": reg.url, "digest": manifest_digest(manifest),
               "files": len(manifest["files"]), "size": total, "warnings": warnings, "unchanged": False}
    if not force and reg.has_manifest(parsed.name, parsed.tag):
        if _files(reg.get_manifest(parsed.name, parsed.tag)) == _files(manifest):
            return {**summary, "unchanged": True}
        raise RegistryError(f"{parsed.name}:{parsed.tag} already exists in {reg.url} with other files; "
                            "use --force to replace it")
    if on_total:
        on_total(total)
    reg.push(parsed.name, parsed.tag, manifest, Path(artifact), progress)
    return summary


def _files(manifest: dict) -> list[tuple[str, str]]:
    """(path, sha256) of every file a manifest lists, in order: what makes two pushes the same content."""
    return sorted((f["path"], f["sha256"]) for f in manifest.get("files", []))


def pull(ref: str, *, registry: str | None = None, store=None, progress: Callable[[int], None] | None = None,
         on_total: Callable[[int], None] | None = None, log: Callable[[str], None] | None = None,
         steps: Callable[[str], None] | None = None, confirm: Callable[[BuildEstimate], None] | None = None):
    """Pull `ref` into the local store; returns a zoo.store.PullResult.

    A plain name that the registry lacks but the built-in catalog has with a recipe is built from
    that recipe instead (zoo.build), verified against the card's digests; `log` is told so, `confirm`
    is shown the build's zoo.build.BuildEstimate first (and raises to stop it), `steps` hears its
    "layer i/N" progress (default: `log`).
    """
    from zoo.store import Store

    parsed = parse_ref(ref)
    reg = registry_for(parsed, registry)
    store = store or Store()
    try:
        return store.pull(reg, parsed.name, parsed.tag, store_name=parsed.store_name,
                          progress=progress, on_total=on_total)
    except NotFoundError as missing:
        if parsed.registry is not None or reg.has_manifest(parsed.name, parsed.tag):
            raise  # a full reference, or a manifest whose blob is missing: not a case for building
        return _build_instead(parsed, reg.url, store, missing, log, steps or log, confirm)
    finally:
        reg.close()


def _build_instead(parsed: Ref, registry_url: str, store, missing: NotFoundError, log, steps, confirm):
    """Build a catalog card with a recipe when the registry does not have the model."""
    from zoo.build import build, buildable, estimate_build
    from zoo.build.base import describe
    from zoo.errors import ZooError
    from zoo.store import PullResult

    if store.has(parsed.store_name, parsed.tag):  # built (or pulled) before: nothing to do
        manifest = store.get_manifest(parsed.store_name, parsed.tag)
        entries = check_manifest(manifest)
        return PullResult(parsed.store_name, parsed.tag, store.path(parsed.store_name, parsed.tag),
                          manifest_digest(manifest), reused_bytes=sum(e.size for e in entries), files=entries)
    card = buildable(parsed.name)
    if card is None:
        raise missing
    if log:
        log(f"{parsed.name}:{parsed.tag} is not in {registry_url}; building it from its catalog recipe "
            f"({describe(card['recipe']['base'])})")
    if confirm is not None:  # outside the try: declining is not a failed build
        confirm(estimate_build(card, store.root / "bases"))
    try:
        built = build(parsed.name, tag=parsed.tag, store=store, log=log, progress=steps)
    except ZooError as err:
        raise type(err)(f"{parsed.name}:{parsed.tag} is not in {registry_url}, and building it from its "
                        f"recipe failed: {err}") from None
    entries = check_manifest(store.get_manifest(built.name, built.tag))
    return PullResult(built.name, built.tag, built.path, built.digest, files=entries, built=True)


def catalog_dir() -> Path:
    """The built-in catalog of cards (`cards/`), or ZOO_CATALOG."""
    env = os.environ.get("ZOO_CATALOG")
    if env:
        return Path(env)
    try:
        from importlib.resources import files

        return Path(str(files("zoo.cards")))
    except (ImportError, ModuleNotFoundError, TypeError):
        return Path(__file__).resolve().parents[2] / "cards"


def catalog_cards() -> list[tuple[str, dict]]:
    """(name, card) for every card of the built-in catalog, validated."""
    out = []
    directory = catalog_dir()
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        card = cards.load(path)
        out.append((card.get("name") or path.stem, card))
    return out


def catalog_card(name: str) -> dict | None:
    """The built-in catalog's card named `name`, or None."""
    return next((card for catalog_name, card in catalog_cards() if catalog_name == name), None)


def search(query: str | None = None, *, registry: str | None = None, include_catalog: bool = True,
           **filters: Any) -> list[dict]:
    """Cards matching query and filters, from the registry (if it exists) and the built-in catalog."""
    results = []
    reg = open_registry(default_registry(registry))
    try:
        for name, tag, card in _cards_of(reg, explicit=registry is not None):
            if cards.matches(card, query, **filters):
                results.append({"name": name, "tag": tag, "source": reg.url, **_fields(card), "card": card})
    finally:
        reg.close()
    if include_catalog:
        seen = {r["name"] for r in results}
        for name, card in catalog_cards():
            if name not in seen and cards.matches(card, query, **filters):
                results.append({"name": name, "tag": None, "source": "catalog", **_fields(card), "card": card})
    return results


def _cards_of(reg: Registry, explicit: bool):
    from .local import LocalRegistry

    if isinstance(reg, LocalRegistry) and not reg.root.exists() and not explicit:
        return []  # the default registry has never been pushed to
    return list(reg.list_cards())


def _fields(card: dict) -> dict:
    f = cards.search_fields(card)
    f.pop("name", None)
    return f


def show(ref: str, *, registry: str | None = None) -> dict:
    """The card of a model: from the local store if pulled, else the registry, else the catalog."""
    from zoo.store import Store

    parsed = parse_ref(ref)
    store = Store()
    if parsed.registry is None and registry is None and store.has(parsed.store_name, parsed.tag):
        m = store.get_manifest(parsed.store_name, parsed.tag)
        return {"name": parsed.name, "tag": parsed.tag, "source": "store", "card": m["card"],
                "files": m["files"]}
    reg = registry_for(parsed, registry)
    try:
        m = reg.get_manifest(parsed.name, parsed.tag)
        return {"name": parsed.name, "tag": parsed.tag, "source": reg.url, "card": m["card"], "files": m["files"]}
    except NotFoundError:
        card = catalog_card(parsed.name)
        if card is None:
            raise
        return {"name": parsed.name, "tag": None, "source": "catalog", "card": card, "files": card.get("files", [])}
    finally:
        reg.close()

"""`zoo build`: rebuild a card's artifact from its recipe and check every file against the card's digests.

Steps: find the card (a YAML file or a catalog name), fetch the base and check its sha256, run
`zoo compress` with the recipe's options into a staging directory inside ZOO_HOME, compare every
produced file with the card's `files` (size and sha256), then import the artifact into the store with
the card as its zoo.yaml. Any mismatch raises ChecksumError naming the file and leaves the store as it
was; the staging directory is always removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from zoo import card as cards
from zoo.errors import BuildError, ChecksumError, NotFoundError
from zoo.format.constants import CARD_FILE
from zoo.workdirs import BUILD_STAGING, sweep

from . import base as bases
from .estimate import BuildEstimate, estimate_build

Log = Callable[[str], None]


@dataclass
class BuildResult:
    """Where the built model is, under which name, and what was checked."""

    name: str
    tag: str
    path: Path
    digest: str
    files: int
    size: int
    verified: bool  # every file matched a digest of the card (False only for cards that list none)
    base: str


def find_card(target: str | os.PathLike) -> tuple[dict, str]:
    """(card, where): a card file path, or the name of a built-in catalog card."""
    from zoo.registry.transfer import catalog_card

    path = Path(os.fspath(target)).expanduser()
    if path.is_file():
        return cards.load(path), str(path)
    if path.is_dir() and (path / CARD_FILE).is_file():
        return cards.load(path / CARD_FILE), str(path / CARD_FILE)
    name = os.fspath(target).split(":", 1)[0]
    card = catalog_card(name)
    if card is not None:
        return card, f"catalog card {name}"
    raise NotFoundError(f"{target}: no such card file and no catalog card of that name (see `zoo search`)")


def compress_recipe(card: dict, where: str):
    """The zoo.compress.Recipe of a card's recipe; BuildError for a missing recipe or an unknown option."""
    from zoo.compress import Recipe

    recipe = card.get("recipe")
    if not recipe:
        raise BuildError(f"{where}: has no recipe, so it cannot be built (only pulled)")
    options = dict(recipe["compress"])
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BuildError(f"{where}: recipe option {unknown[0]!r} is not a zoo compress option "
                         f"(known: {', '.join(sorted(known))})")
    return Recipe(**options).validated()


def calibration_text(card: dict, where: str) -> list[Path]:
    """The calibration texts the recipe names (Austen when it names none), each checked against its digest.

    A recipe names one text (`calibration: {text, sha256}`) or several (`calibration: {texts: [{text,
    sha256}, ...]}`, the windows split evenly between them); a name is a shipped text (builtin,
    smollm2-written) or a path. A recipe without one was calibrated on Austen alone (compress's default
    before session 16), so it still is.
    """
    from zoo.compress.calibration import calibration_path

    spec = (card.get("recipe") or {}).get("calibration") or {}
    entries = spec.get("texts") or [spec]
    paths = []
    for entry in entries:
        text = entry.get("text", "builtin")
        path = calibration_path(text)
        expected = entry.get("sha256")
        if expected is not None:
            try:
                actual = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as err:
                raise NotFoundError(f"{path}: calibration text unreadable ({err.strerror})") from None
            if actual != expected:
                raise ChecksumError(f"{path}: calibration text sha256 {actual[:16]}… differs from the recipe's "
                                    f"{expected[:16]}… ({where})")
        paths.append(path)
    return paths


def build(target: str | os.PathLike, *, tag: str = "latest", store=None, log: Log | None = None,
          progress: Callable[[str], None] | None = None,
          confirm: Callable[[BuildEstimate], None] | None = None) -> BuildResult:
    """Build the card `target` into the store as name:tag, verifying every file's digest.

    `confirm`, when given, is shown the build's cost (zoo.build.estimate) before anything is fetched and
    raises to stop it; `progress` hears the compression's "layer i/N" steps."""
    from zoo.compress import compress
    from zoo.convert.source import open_source
    from zoo.registry.base import check_name, check_tag
    from zoo.store import Store

    card, where = find_card(target)
    name = check_name(card.get("name") or "")
    check_tag(tag)
    recipe = compress_recipe(card, where)
    calib = calibration_text(card, where)
    store = store or Store()
    if confirm is not None:
        confirm(estimate_build(card, store.root / "bases"))
    spec = card["recipe"]["base"]
    base_path = bases.fetch(spec, store.root / "bases", log)
    source = open_source(base_path)
    if log:
        log(f"base: {bases.describe(spec)}")
    bases.check_digest(source.sha256, spec, log)
    work = store.root / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    sweep(work, BUILD_STAGING)  # what a killed build left (the owner's pid is in the name)
    staging = Path(tempfile.mkdtemp(prefix=f"build-{name.replace('/', '_')}-{os.getpid()}-", dir=work))
    try:
        out = staging / "artifact"
        made = compress(source, out, recipe, calib_text=calib, evaluate=False, name=card["base_model"]["name"]
                        if card.get("base_model") else None, progress=progress)
        verified = _check_files(made["files"], card, where)
        stored = card if verified else {**card, "files": made["files"]}  # the format needs every file listed
        (out / CARD_FILE).write_text(yaml.safe_dump(stored, sort_keys=False, allow_unicode=True), encoding="utf-8")
        pulled = store.add(out, name, tag)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(e.size for e in pulled.files)
    return BuildResult(name, tag, pulled.path, pulled.digest, len(pulled.files), size, verified,
                       bases.describe(spec))


def _check_files(built: list[dict], card: dict, where: str) -> bool:
    """Compare the built files (as the artifact writer hashed them) with the card's list; ChecksumError names
    the first file that differs. False when the card lists no files (nothing to verify against)."""
    from zoo import __version__
    from zoo.blas import mismatch_hint

    produced = {f["path"]: f for f in built}
    listed = {f["path"]: f for f in card.get("files") or []}
    if not listed:
        return False
    hint = "" if card.get("zoo_version") in (None, __version__) else \
        f" (the card was made by zoo {card['zoo_version']}, this is zoo {__version__})"
    hint += mismatch_hint()
    for path in sorted(set(listed) | set(produced)):
        if path not in produced:
            raise ChecksumError(f"{path}: listed in {where} but the build did not produce it{hint}")
        if path not in listed:
            raise ChecksumError(f"{path}: produced by the build but not listed in {where}{hint}")
        got, want = produced[path], listed[path]
        if got["size"] != want["size"] or got["sha256"] != want["sha256"]:
            raise ChecksumError(f"{path}: built sha256 {got['sha256'][:16]}… ({got['size']} bytes) does not match "
                                f"{where}'s {want['sha256'][:16]}… ({want['size']} bytes){hint}; nothing was stored")
    return True


def buildable(name: str) -> dict | None:
    """The built-in catalog card of `name` when it carries a recipe (what `zoo pull` falls back to)."""
    from zoo.registry.transfer import catalog_card

    card = catalog_card(name)
    return card if card is not None and card.get("recipe") else None

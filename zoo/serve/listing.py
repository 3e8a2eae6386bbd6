"""What the server can answer with, read from cards only: the local store's models and --models directories."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from zoo.card import search_fields
from zoo.errors import CardError

from .manager import ModelManager


@dataclass
class ModelInfo:
    """One servable model as the listing routes show it."""

    name: str  # "name:tag", what a request names
    size: int  # bytes
    digest: str  # sha256 of the manifest (store) or of the card (a directory)
    created: int  # Unix time the manifest or card was written
    card: dict

    @property
    def metrics(self) -> dict:
        """The card's key fields: architecture, parameters, sparsity, bits, size, perplexity, decode tok/s."""
        fields = search_fields(self.card)
        return {k: fields[k] for k in ("architecture", "parameters", "sparsity", "bits", "size_bytes",
                                       "perplexity", "decode_tps", "method")}


def available(manager: ModelManager) -> list[ModelInfo]:
    """Every model in the local store, then every directory given with --models (sorted by name)."""
    from zoo.store import Store

    store = Store()
    out = []
    for m in store.list():
        manifest = store.manifests / m["name"] / f"{m['tag']}.json"
        out.append(ModelInfo(f"{m['name']}:{m['tag']}", m["size"], m["digest"], int(manifest.stat().st_mtime),
                             m["card"] or {}))
    for name, path in sorted(manager.paths.items()):
        out.append(_directory_info(name, path))
    return out


def find(manager: ModelManager, name: str) -> ModelInfo | None:
    """The listing entry of a requested name (without pulling), or None."""
    key = manager.canonical(name)
    return next((m for m in available(manager) if m.name == key), None)


def _directory_info(name: str, path: Path) -> ModelInfo:
    card_path = path / "zoo.yaml"
    text = card_path.read_bytes() if card_path.is_file() else b""
    from zoo.untrusted import load_yaml  # bounded: a hostile card is a CardError, not a hang

    card = load_yaml(text, str(card_path), CardError) if text else {}
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    created = int(card_path.stat().st_mtime) if text else 0
    return ModelInfo(name, size, hashlib.sha256(text).hexdigest(), created, card if isinstance(card, dict) else {})

"""The catalog page's data (`GET /api/zoo/cards`): every card the server knows, shaped for the page.

Cards come from the built-in catalog, the local store and `--models` directories, and the configured
registry when listing it is one cheap read (a directory, or a static HTTP mirror's index). The page's
table rows, card panels and per-base-model trade-off charts (with their Pareto fronts) are computed
here, so the page's JavaScript only draws and filters, and this shaping is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from zoo.card import search_fields
from zoo.errors import ZooError

from .listing import available
from .manager import ModelManager


class Source(str, Enum):
    """Where the page learned of a card (a model can be in several)."""

    CATALOG = "catalog"  # the built-in catalog (cards/): buildable or pullable on first request
    REGISTRY = "registry"  # the configured registry: pulled on first request
    LOCAL = "local"  # the local store or a --models directory: servable at once


class Better(str, Enum):
    """Which way an axis improves."""

    LOWER = "lower"
    HIGHER = "higher"


@dataclass(frozen=True)
class Chart:
    """One trade-off chart: a row field on x against perplexity (lower is better) on y."""

    id: str
    x_field: str
    x_label: str
    x_better: Better


CHARTS = (
    Chart("size", "size_bytes", "size", Better.LOWER),
    Chart("speed", "decode_tps", "decode tok/s", Better.HIGHER),
)
Y_FIELD, Y_LABEL = "perplexity", "perplexity"
DEFAULT_TAG = "latest"  # a catalog name is served as name:latest, as `zoo run name` does


def pareto_front(points: list[tuple[float, float]], x_better: Better) -> list[bool]:
    """For each (x, y) point, whether no other point is at least as good on both axes and better on one
    (y is always lower-is-better). Equal points are all on the front."""

    def at_least(a: tuple[float, float], b: tuple[float, float]) -> bool:  # a no worse than b on both axes
        x_ok = a[0] <= b[0] if x_better is Better.LOWER else a[0] >= b[0]
        return x_ok and a[1] <= b[1]

    return [not any(at_least(q, p) and q != p for q in points) for p in points]


def charts(rows: list[dict]) -> list[dict]:
    """Per base model (sorted), each Chart's measured points with their Pareto flags; bases and charts
    without a measured point are left out."""
    bases = sorted({r["base_model"] for r in rows})
    out = []
    for base in bases:
        drawn = []
        for chart in CHARTS:
            measured = [r for r in rows if r["base_model"] == base
                        and _number(r[chart.x_field]) and _number(r[Y_FIELD])]
            if not measured:
                continue
            front = pareto_front([(r[chart.x_field], r[Y_FIELD]) for r in measured], chart.x_better)
            drawn.append({"id": chart.id, "x_label": chart.x_label, "y_label": Y_LABEL,
                          "x_better": chart.x_better.value, "y_better": Better.LOWER.value,
                          "points": [{"id": r["id"], "x": r[chart.x_field], "y": r[Y_FIELD], "front": f}
                                     for r, f in zip(measured, front)]})
        if drawn:
            out.append({"base_model": base, "charts": drawn})
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def base_model(card: dict) -> str:
    """The base model a card derives from (its own name when the card does not say)."""
    base = card.get("base_model")
    if isinstance(base, dict) and base.get("name"):
        return str(base["name"])
    return str(card.get("name") or "(unnamed)")


def measurements(card: dict) -> list[dict]:
    """The card's measured metrics, one entry each: value plus how and where it was measured (machine,
    threads, protocol, and the base's value for perplexities). Per-layer lists are left out."""
    metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    out = []
    for key, measure in metrics.items():
        if isinstance(measure, dict):
            if measure.get("value") is not None:
                out.append({"metric": key, **{k: v for k, v in measure.items() if v is not None}})
        elif _number(measure):
            out.append({"metric": key, "value": measure})
    return out


def card_detail(card: dict) -> dict:
    """The card panel: provenance (base model, compression, calibration), recipe, files, measurements."""
    compression = card.get("compression") if isinstance(card.get("compression"), dict) else None
    recipe = card.get("recipe") if isinstance(card.get("recipe"), dict) else None
    calibration = (compression or {}).get("calibration") or (recipe or {}).get("calibration")
    return {
        "description": card.get("description") or "",
        "license": card.get("license"),
        "zoo_version": card.get("zoo_version"),
        "tags": list(card.get("tags") or []),
        "base_model": card.get("base_model"),
        "compression": {k: v for k, v in compression.items() if k != "calibration"} if compression else None,
        "calibration": calibration,
        "recipe": recipe,
        "conversion": card.get("conversion"),
        "files": [f for f in card.get("files") or [] if isinstance(f, dict)],
        "measurements": measurements(card),
    }


def card_row(name: str, tag: str, card: dict, sources: Iterable[Source]) -> dict:
    """One table row: the filterable fields, where the model is, and its card panel."""
    f = search_fields(card)
    sources = sorted(set(sources), key=list(Source).index)
    return {
        "id": f"{name}:{tag}", "name": name, "tag": tag, "sources": [s.value for s in sources],
        "local": Source.LOCAL in sources, "base_model": base_model(card),
        **{k: f[k] for k in ("architecture", "parameters", "sparsity", "bits", "size_bytes", "perplexity",
                             "decode_tps", "method")},
        "machine": ((card.get("metrics") or {}).get("decode_tps") or {}).get("machine"),
        "detail": card_detail(card),
    }


@dataclass
class _Entry:
    card: dict
    sources: set[Source] = field(default_factory=set)


def page_data(found: Iterable[tuple[str, str, dict, Source]], problems: Iterable[dict] = ()) -> dict:
    """Rows and charts from (name, tag, card, source) in ascending authority: a later source's card wins
    for the same name:tag (the local copy is what the server runs)."""
    entries: dict[tuple[str, str], _Entry] = {}
    for name, tag, card, source in found:
        entry = entries.setdefault((name, tag), _Entry(card))
        entry.card = card
        entry.sources.add(source)
    rows = [card_row(name, tag, e.card, e.sources) for (name, tag), e in sorted(entries.items())]
    return {"models": rows, "charts": charts(rows), "sources": list(problems)}


def gather(manager: ModelManager) -> dict:
    """Every card the server knows (catalog, cheap registry, local), shaped by page_data; a source that
    fails or is too costly to list becomes a note in "sources" instead of failing the page."""
    from zoo.config import default_registry
    from zoo.registry.transfer import catalog_cards, catalog_dir

    found: list[tuple[str, str, dict, Source]] = []
    notes: list[dict] = []

    def read(source: Source, where: str, listing) -> None:
        try:
            items = list(listing())
        except ZooError as err:
            notes.append({"source": source.value, "where": where, "ok": False, "message": str(err)})
            return
        found.extend((name, tag, card, source) for name, tag, card in items)
        notes.append({"source": source.value, "where": where, "ok": True, "count": len(items)})

    read(Source.CATALOG, str(catalog_dir()), lambda: ((n, DEFAULT_TAG, c) for n, c in catalog_cards()))
    url = default_registry()
    read(Source.REGISTRY, url, lambda: _cheap_registry_cards(url))
    read(Source.LOCAL, "store and --models", lambda: (
        (*m.name.rsplit(":", 1), m.card) for m in available(manager)))
    return page_data(found, notes)


def _cheap_registry_cards(url: str) -> list[tuple[str, str, dict]]:
    """The registry's cards if listing them is one read (a directory; a static mirror's index); else a
    RegistryError saying why it is not listed (S3, the Hub and OCI registries cost a request per model)."""
    from zoo.errors import RegistryError
    from zoo.registry import open_registry
    from zoo.registry.http import HttpRegistry
    from zoo.registry.local import LocalRegistry

    reg = open_registry(url)
    try:
        if isinstance(reg, LocalRegistry):
            return list(reg.list_cards()) if reg.root.exists() else []
        if isinstance(reg, HttpRegistry):
            return list(reg.list_cards())
        raise RegistryError(f"{url}: not listed here (a request per model); `zoo search` lists it")
    finally:
        reg.close()

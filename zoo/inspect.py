"""The data behind `zoo inspect`: validation, per-tensor statistics and totals of an artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.format import open_artifact
from zoo.format.stats import decoded_zeros, is_linear, tensor_stats


def inspect_artifact(path: str | Path, verify: bool = False) -> dict:
    """Open and fully validate `path`; return card, config, tensors (name, encoding, shape, sparsity,
    bits_per_weight, bytes, stored) and totals. Raises FormatError on a broken artifact; with verify=True,
    ChecksumError when a directory's file does not match the card's sha256 (zoo.verify, cached)."""
    art = open_artifact(path)
    if verify and Path(path).is_dir():
        from zoo.verify import verify_artifact

        verify_artifact(art)
    art.validate()
    rows = []
    tot = {"parameters": 0, "stored": 0, "bytes": 0, "linear_parameters": 0, "linear_stored": 0, "linear_bytes": 0}
    for name in sorted(art.tensors, key=_natural):
        t = art.tensors[name]
        s = tensor_stats(t)
        zeros = zero_codes(t)
        rows.append({"name": name, "encoding": t.encoding, "shape": list(t.shape), "sparsity": s["sparsity"],
                     "bits_per_weight": s["bits_per_weight"], "bytes": s["bytes"], "stored": s["stored"],
                     "group_size": t.group_size, "zero_codes": zeros, "why": layout_note(t.encoding, zeros)})
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


def zero_codes(t) -> float | None:
    """Fraction of a q4/q8 weight's positions that decode to exactly 0 (pruned weights kept dense, with or without
    zero points); None for other encodings, whose zeros are structural (`sparsity`)."""
    zeros = decoded_zeros(t)
    return None if zeros is None else zeros / max(int(np.prod(t.shape)), 1)


def layout_note(encoding: str, zeros: float | None) -> str:
    """Why a linear weight is stored this way, for `zoo inspect` (the rule zoo compress applies, docs/kernels.md)."""
    if encoding == "tile4-q4":
        return "tile pattern: 4 rows keep K of 128 columns; decode work and bytes scale with K"
    if encoding == "q4" and zeros is not None and zeros >= 0.05:
        return "pruned below 50% without a tile pattern: zeros as int4 codes (q4 decodes faster than a mask)"
    if encoding in ("sparse-q4", "sparse-q8"):
        return "format 1.0 bitmask: decodes slower than q4 below ~90% sparsity; recompress with --pattern tile4"
    return ""


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))

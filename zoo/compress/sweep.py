"""Try compression levels and keep the best trade-offs: compress + evaluate each (sparsity, bits) point,
mark the Pareto front (no other point is both smaller and better), write CSV, JSON and a PNG chart."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from zoo.errors import CompressError

from .pipeline import compress
from .recipe import Recipe

Progress = Callable[[str], None]
FIELDS = ("pattern", "peer", "sparsity", "bits", "perplexity", "ratio", "technical_ratio", "size_bytes", "bits_per_weight", "decode_tps", "pareto", "path")


def pareto_front(points: list[dict], x: str = "size_bytes", y: str = "perplexity") -> list[bool]:
    """For each point, whether no other point is ≤ in both x and y and < in one (lower is better)."""
    flags = []
    for p in points:
        dominated = any(q[x] <= p[x] and q[y] <= p[y] and (q[x] < p[x] or q[y] < p[y]) for q in points)
        flags.append(not dominated)
    return flags


def _decode_tps(path: Path) -> float:
    from zoo.runtime import load
    from zoo.runtime.bench import measure

    model, tok = load(path)
    return round(measure(model, tok, prompt_tokens=32, gen_tokens=32)["decode_tps"], 2)


def sweep(src, recipe: Recipe, sparsities: list[float], bits: list[int], out_dir: str | Path | None = None, *,
          calib_text=None, eval_text=None, eval_ctx: int = 512, eval_windows: int | None = 64,
          speed: bool = False, peers: list | None = None, progress: Progress | None = None) -> dict:
    """Compress and evaluate every (sparsity, bits) point, plus llama.cpp's quantizations of the same base as peer
    points (`peers`, zoo.compress.peers.PeerType); returns {base, points} and writes the reports."""
    from zoo.convert.source import open_source
    from zoo.evaluate import TECHNICAL_TEXT, perplexity, text_path

    if not sparsities or not bits:
        raise CompressError("sweep needs at least one sparsity and one bits value")
    if peers:
        from .peers import require_llama_cpp

        require_llama_cpp()  # before any work
    source = open_source(src)
    keep = out_dir is not None
    root = Path(out_dir) if keep else Path(tempfile.mkdtemp(prefix="zoo-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        base = perplexity(source, eval_text, eval_ctx, eval_windows, progress)
        technical = text_path(eval_text) != TECHNICAL_TEXT
        base_tech = perplexity(source, TECHNICAL_TEXT, eval_ctx, eval_windows, progress) if technical else None
        points = []
        for s in sparsities:
            for b in bits:
                r = recipe.at_point(recipe.pattern, s, b)
                target = root / f"{r.method}-{r.pattern.replace(':', 'of')}-s{s:g}-b{b}"
                if progress:
                    progress(f"sweep point sparsity {s:g}, {b} bits -> {target.name}")
                card = compress(source, target, r, calib_text=calib_text, eval_text=eval_text, eval_ctx=eval_ctx,
                                eval_windows=eval_windows, base_perplexity=base, base_technical=base_tech,
                                overwrite=True, progress=progress)
                m = card["metrics"]
                tech = m.get("perplexity_technical")
                points.append({"pattern": r.pattern, "sparsity": s, "bits": b, "perplexity": m["perplexity"]["value"],
                               "ratio": round(m["perplexity"]["value"] / base["perplexity"], 4),
                               "technical_ratio": round(tech["value"] / tech["base"], 4) if tech else None,
                               "size_bytes": m["size_bytes"], "bits_per_weight": m["bits_per_weight"],
                               "decode_tps": _decode_tps(target) if speed else None,
                               "path": str(target) if keep else None})
                if not keep:
                    shutil.rmtree(target, ignore_errors=True)
        if peers:
            from zoo.kernels import get_threads

            from .peers import peer_points

            points += peer_points(source, peers, root, base, base_tech, eval_text=eval_text, eval_ctx=eval_ctx,
                                  eval_windows=eval_windows, speed=speed, threads=get_threads(), keep=keep,
                                  progress=progress)
        for p, front in zip(points, pareto_front(points)):
            p["pareto"] = front
        result = {"source": str(src), "method": recipe.method, "pattern": recipe.pattern, "profile": recipe.profile,
                  "base_perplexity": base["perplexity"], "protocol": base["protocol"], "points": points}
        write_reports(result, root)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


def write_reports(result: dict, root: Path, stem: str = "sweep") -> None:
    """STEM.json, STEM.csv and STEM.png (perplexity against size, and against decode tokens/s if measured)."""
    (root / f"{stem}.json").write_text(json.dumps(result, indent=2))
    with open(root / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for p in result["points"]:
            w.writerow({k: p.get(k) for k in FIELDS})
    plot(result, root / f"{stem}.png")


def plot(result: dict, path: Path) -> None:
    """A PNG chart; Pareto points are joined by a line, llama.cpp's peers drawn as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    speed = all(p.get("decode_tps") for p in pts)
    fig, axes = plt.subplots(1, 2 if speed else 1, figsize=(11 if speed else 6, 4.5), squeeze=False)
    panels = [("size_bytes", "size (MB)", 1e-6)] + ([("decode_tps", "decode tokens/s", 1.0)] if speed else [])
    for ax, (key, label, scale) in zip(axes[0], panels):
        for p in pts:
            ax.scatter(p[key] * scale, p["perplexity"], c="tab:red" if p["pareto"] else "tab:gray", zorder=3,
                       marker="s" if p.get("peer") else "o")
            if p.get("peer"):
                text = f"llama.cpp {p['peer']}"
            else:
                prefix = f"{p['pattern']} " if p.get("pattern") and p["pattern"] != result["pattern"] else ""
                text = f"{prefix}s{p['sparsity']:g}/{p['bits']}b"
            ax.annotate(text, (p[key] * scale, p["perplexity"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted((p for p in pts if p["pareto"]), key=lambda p: p[key])
        ax.plot([p[key] * scale for p in front], [p["perplexity"] for p in front], c="tab:red", lw=1, label="Pareto front")
        ax.axhline(result["base_perplexity"], ls="--", c="tab:blue", lw=1, label="base")
        ax.set_xlabel(label)
        ax.set_ylabel("perplexity")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(f"{Path(result['source']).name}: {result['method']} {result['pattern']} ({result['profile']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

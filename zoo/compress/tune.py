"""`zoo tune`: find the best compression within a perplexity budget by trying levels and measuring them.

Families are (pattern, bits) pairs. Within a family the sparsity rises until a level breaks the budget
(perplexity grows with sparsity), and for unstructured pruning the search then bisects between the last
level inside and the first outside. Each measured point (perplexity on the evaluation text and the
technical text, size, decode speed when the objective is decode) is written to WORK/tune-state.json as
soon as it is known, so an interrupted tune resumes where it stopped. The chosen model is the fastest
at decode (objective decode) or the smallest (objective size) among the points within budget.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import yaml

from zoo.errors import CompressError
from zoo.untrusted import loads_json

from .calibration import DEFAULT_TEXTS
from .masks import TILE4_KEEP, parse_nm
from .pipeline import compress
from .recipe import Recipe
from .sweep import pareto_front, write_reports

Progress = Callable[[str], None]
OBJECTIVES = ("decode", "size")
COARSE = (0.3, 0.5, 0.7, 0.9)  # unstructured / neurons: the first pass
REFINE = 0.05  # unstructured / neurons: bisect until inside and outside the budget are this close
SPEED_TIE = 0.08  # decode speeds this close are one speed: five points stored as the same q4 measured 98.2-105.7
# tok/s in one quiet SmolLM2 tune (7.7% apart), so a 3% tie let noise pick a pruned q4 as "faster than q4"
STATE = "tune-state.json"  # the measured points (tune.json, .csv, .png: the report)


@dataclass(frozen=True)
class Point:
    """One candidate: a pattern at a sparsity, stored at `bits`."""

    pattern: str
    sparsity: float
    bits: int

    @property
    def key(self) -> str:
        return f"{self.pattern.replace(':', 'of')}-s{self.sparsity:g}-b{self.bits}"


def levels(pattern: str) -> list[float]:
    """The sparsities the first pass tries for `pattern`, ascending."""
    if pattern == "tile4":
        return sorted(TILE4_KEEP)
    nm = parse_nm(pattern)
    if nm is not None:
        return [1 - nm[0] / nm[1]]
    return list(COARSE)


def _measure_speed(path: Path) -> float:
    from zoo.runtime import load
    from zoo.runtime.bench import measure

    model, tok = load(path)
    return round(measure(model, tok, prompt_tokens=32, gen_tokens=64, repeats=3)["decode_tps"], 2)


class _Tuner:
    """The search's state: measured points (persisted), the work directory, the budget."""

    def __init__(self, src, recipe: Recipe, work: Path, max_ratio: float, objective: str, eval_ctx: int,
                 eval_windows: int | None, calib_text, progress: Progress | None):
        from zoo.convert.source import open_source
        from zoo.evaluate import TECHNICAL_TEXT, perplexity

        self.source = open_source(src)
        self.recipe, self.work, self.max_ratio, self.objective = recipe, work, max_ratio, objective
        self.eval_ctx, self.eval_windows, self.calib_text, self.progress = eval_ctx, eval_windows, calib_text, progress
        work.mkdir(parents=True, exist_ok=True)
        settings = {"source_sha256": self.source.sha256, "eval_ctx": eval_ctx, "eval_windows": eval_windows,
                    "calibration": [str(t) for t in calib_text] if isinstance(calib_text, (list, tuple)) else
                    str(calib_text) if calib_text else list(DEFAULT_TEXTS),
                    "recipe": {k: v for k, v in asdict(recipe).items() if k not in ("sparsity", "bits", "pattern")}}
        self.state_path = work / STATE
        state = (loads_json(self.state_path.read_bytes(), str(self.state_path), CompressError)
                 if self.state_path.exists() else None)
        if state is not None and state.get("settings") != settings:
            raise CompressError(f"{work}: holds a tune of another model or recipe; choose another --work or remove it")
        if state is None:
            self._log("base perplexity on both texts")
            state = {"settings": settings,
                     "base": {"perplexity": perplexity(self.source, None, eval_ctx, eval_windows, progress)["perplexity"],
                              "technical": perplexity(self.source, TECHNICAL_TEXT, eval_ctx, eval_windows,
                                                      progress)["perplexity"]},
                     "points": {}}
        self.state = state
        self._save()

    def _log(self, msg: str) -> None:
        if self.progress:
            self.progress(f"tune: {msg}")

    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    def build(self, p: Point) -> tuple[Path, dict]:
        """Compress `p` into WORK/<key> (evaluated on both texts); returns (path, card)."""
        base = self.state["base"]
        target = self.work / p.key
        recipe = self.recipe.at_point(p.pattern, p.sparsity, p.bits)
        card = compress(self.source, target, recipe, calib_text=self.calib_text, eval_ctx=self.eval_ctx,
                        eval_windows=self.eval_windows,
                        base_perplexity={"perplexity": base["perplexity"]},
                        base_technical={"perplexity": base["technical"]}, overwrite=True, progress=self.progress)
        return target, card

    def measure(self, p: Point) -> dict:
        """The point's measurements, from the state when an earlier run has them."""
        if p.key in self.state["points"]:
            return self.state["points"][p.key]
        self._log(f"{p.key}: compress and evaluate ({len(self.state['points']) + 1} measured so far)")
        t0 = time.monotonic()
        target, card = self.build(p)
        m = card["metrics"]
        ratio = m["perplexity"]["value"] / self.state["base"]["perplexity"]
        row = {**asdict(p), "key": p.key, "perplexity": m["perplexity"]["value"], "ratio": round(ratio, 4),
               "technical_ratio": round(m["perplexity_technical"]["value"] / self.state["base"]["technical"], 4),
               "size_bytes": m["size_bytes"], "bits_per_weight": m["bits_per_weight"],
               "encodings": card["compression"]["encodings"], "within_budget": None, "decode_tps": None,
               "seconds": round(time.monotonic() - t0, 1)}
        if self.objective == "decode":  # speed of every point: a later, looser budget may want it
            row["decode_tps"] = _measure_speed(target)
        shutil.rmtree(target, ignore_errors=True)  # rebuilt (same bytes) if chosen: disk stays one model
        self.state["points"][p.key] = row
        self._save()
        speed = f", decode {row['decode_tps']:.1f} tok/s" if row["decode_tps"] else ""
        self._log(f"{p.key}: perplexity x{ratio:.3f} (technical x{row['technical_ratio']:.3f}), "
                  f"{row['size_bytes'] / 1e6:.1f} MB{speed}")
        return row

    def inside(self, p: Point) -> bool:
        return self.measure(p)["ratio"] <= self.max_ratio

    def search(self, patterns: list[str], bits: list[int]) -> None:
        for b in bits:
            self.measure(Point("unstructured", 0.0, b))  # the dense quantized model: what every point must beat
        for pattern in patterns:
            for b in bits:
                if pattern == "tile4" and b != 4:
                    self._log(f"tile4 at {b} bits skipped: tile4-q4 is a 4-bit encoding")
                    continue
                inside, outside = 0.0, None
                for s in levels(pattern):
                    if not self.inside(Point(pattern, s, b)):
                        outside = s
                        break
                    inside = s
                if pattern in ("unstructured", "neurons") and outside is not None:
                    while outside - inside > REFINE + 1e-9:
                        mid = round((inside + outside) / 2, 3)
                        if self.inside(Point(pattern, mid, b)):
                            inside = mid
                        else:
                            outside = mid

    def rows(self) -> list[dict]:
        rows = sorted(self.state["points"].values(), key=lambda r: (r["pattern"], r["bits"], r["sparsity"]))
        for r in rows:
            r["within_budget"] = r["ratio"] <= self.max_ratio
        for r, front in zip(rows, pareto_front(rows)):
            r["pareto"] = front
        return rows

    def best(self, rows: list[dict]) -> dict | None:
        ok = [r for r in rows if r["within_budget"]]
        if not ok:
            return None
        if self.objective == "decode":  # speeds within SPEED_TIE of the fastest are a tie: the smaller, then better wins
            fastest = max(r["decode_tps"] for r in ok)
            ok = [r for r in ok if r["decode_tps"] >= (1 - SPEED_TIE) * fastest]
        return min(ok, key=lambda r: (r["size_bytes"], r["ratio"]))


def tune(src, out_dir: str | Path, recipe: Recipe, *, max_ratio: float, objective: str = "decode",
         patterns: list[str] = ("tile4", "unstructured"), bits: list[int] = (4,), work: str | Path | None = None,
         eval_ctx: int = 512, eval_windows: int | None = 32, calib_text=None, progress: Progress | None = None) -> dict:
    """Search, write the chosen artifact to `out_dir` (its card says how it was chosen) and the table and chart to
    WORK; returns {base, points, best, q4}. `best` is None when no point is within `max_ratio` (nothing written)."""
    if objective not in OBJECTIVES:
        raise CompressError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")
    if not max_ratio > 0:
        raise CompressError(f"--max-ppl-ratio must be a positive ratio to the base model's perplexity, got {max_ratio}")
    if not patterns or not bits:
        raise CompressError("tune needs at least one pattern and one bits value")
    for b in bits:
        if b not in (4, 8):
            raise CompressError(f"tune tries 4 and 8 bits, got {b}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise CompressError(f"{out_dir}: already exists (choose another -o)")
    for pattern in patterns:
        recipe.at_point(pattern, levels(pattern)[0], 4).validated()  # unknown pattern: one line
    work = Path(work) if work is not None else out_dir.with_name(out_dir.name + ".tune")
    base = recipe.at_point("unstructured", 0.0, 4).validated()  # the q4 point: zero points kept if asked for
    tuner = _Tuner(src, base, work, max_ratio, objective, eval_ctx, eval_windows, calib_text, progress)
    tuner.search(list(patterns), list(bits))
    rows = tuner.rows()
    best = tuner.best(rows)
    q4 = tuner.state["points"].get(Point("unstructured", 0.0, 4).key)
    result = {"source": str(src), "method": recipe.method, "pattern": ",".join(patterns), "profile": recipe.profile,
              "base_perplexity": tuner.state["base"]["perplexity"], "max_ppl_ratio": max_ratio, "objective": objective,
              "points": rows, "best": best, "q4": q4}
    write_reports(result, work, "tune")
    if best is None:
        return result
    path, card = tuner.build(Point(best["pattern"], best["sparsity"], best["bits"]))
    card["compression"]["tune"] = {
        "objective": objective, "max_ppl_ratio": max_ratio, "points_measured": len(rows),
        "within_budget": sum(r["within_budget"] for r in rows),
        "chosen": best["key"], "decode_tps_measured": best["decode_tps"],
        "q4_decode_tps_measured": q4["decode_tps"] if q4 else None,
        "table": f"{work.name}/tune.csv"}
    (path / "zoo.yaml").write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
    shutil.move(path, out_dir)
    return result

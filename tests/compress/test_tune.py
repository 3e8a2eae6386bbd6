"""zoo tune: the search measures points coarse to fine, keeps the best within the budget by its objective, writes the
chosen artifact with its card and the table, resumes without redoing points, and says so when nothing qualifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zoo.compress import Recipe
from zoo.compress.tune import REFINE, SPEED_TIE, tune
from zoo.errors import CompressError
from zoo.format import open_artifact

RECIPE = Recipe(method="wanda", quantizer="rtn", samples=8, seq_len=64, seed=1)
FAST = dict(eval_ctx=64, eval_windows=2)


def test_size_objective_picks_the_smallest_point_within_budget(tiny_llama, tmp_path):
    out, work = tmp_path / "best", tmp_path / "work"
    # the tiny random model barely notices pruning: 1.0 puts unstructured 0.7 over budget (and 0.5 under)
    result = tune(tiny_llama, out, RECIPE, max_ratio=1.0, objective="size", patterns=["tile4", "unstructured"],
                  bits=[4], work=work, **FAST)
    rows, best = result["points"], result["best"]
    inside = [r for r in rows if r["within_budget"]]
    assert best is not None and best["ratio"] <= 1.0 and best["size_bytes"] == min(r["size_bytes"] for r in inside)
    assert {r["pattern"] for r in rows} == {"tile4", "unstructured"} and result["q4"]["sparsity"] == 0.0
    # coarse to fine: every unstructured family stops at its first level over budget, refined to REFINE
    over = [r["sparsity"] for r in rows if r["pattern"] == "unstructured" and not r["within_budget"]]
    under = [r["sparsity"] for r in rows if r["pattern"] == "unstructured" and r["within_budget"]]
    assert over and min(over) - max(under) <= REFINE + 1e-9 and max(under) < min(over)
    assert len(over) <= 4, "the search went on past a level over budget"
    card = open_artifact(out).card
    assert card["compression"]["tune"]["chosen"] == best["key"] and card["compression"]["tune"]["objective"] == "size"
    assert card["metrics"]["perplexity"]["value"] == best["perplexity"], "the written model is not the measured one"
    open_artifact(out).verify_checksums()
    assert (work / "tune.csv").read_text().count("\n") == len(rows) + 1 and (work / "tune.png").stat().st_size > 0
    assert not [p for p in work.iterdir() if p.is_dir()], "measured points' artifacts were left in the work dir"


def test_a_rerun_resumes_without_measuring_again(tiny_llama, tmp_path):
    work = tmp_path / "work"
    first = tune(tiny_llama, tmp_path / "a", RECIPE, max_ratio=1.0, objective="size", patterns=["unstructured"],
                 bits=[4], work=work, **FAST)
    state = json.loads((work / "tune-state.json").read_text())
    second = tune(tiny_llama, tmp_path / "b", RECIPE, max_ratio=1.0, objective="size", patterns=["unstructured", "tile4"],
                  bits=[4], work=work, **FAST)
    again = {r["key"]: r for r in second["points"]}
    for key, row in state["points"].items():
        assert again[key]["seconds"] == row["seconds"] and again[key]["perplexity"] == row["perplexity"], key
    assert len(second["points"]) > len(first["points"])  # the tile4 family was new
    with pytest.raises(CompressError, match="another model or recipe"):
        tune(tiny_llama, tmp_path / "c", Recipe(**{**RECIPE.__dict__, "seed": 2}), max_ratio=1.2, patterns=["unstructured"],
             bits=[4], work=work, **FAST)


def test_decode_objective_measures_speed_and_beats_or_is_q4(tiny_llama, tmp_path):
    result = tune(tiny_llama, tmp_path / "best", RECIPE, max_ratio=1.05, objective="decode", patterns=["tile4"],
                  bits=[4], work=tmp_path / "w", **FAST)
    assert all(r["decode_tps"] > 0 for r in result["points"])
    if result["best"] is not None:
        inside = [r for r in result["points"] if r["within_budget"]]
        fastest = max(r["decode_tps"] for r in inside)
        assert result["best"]["decode_tps"] >= (1 - SPEED_TIE) * fastest
        ties = [r for r in inside if r["decode_tps"] >= (1 - SPEED_TIE) * fastest]
        assert result["best"]["size_bytes"] == min(r["size_bytes"] for r in ties)


def test_no_point_within_budget_is_one_line_after_the_table(tiny_llama, tmp_path):
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-P", "-m", "zoo.cli.main", "tune", str(tiny_llama), "-o", str(tmp_path / "x"),
                          "--max-ppl-ratio", "0.5", "--patterns", "tile4", "--objective", "size", "--method", "wanda",
                          "--samples", "8", "--seq-len", "64", "--ctx", "64", "--eval-windows", "2", "-q"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("zoo: error: no point is within 0.5x") and "Traceback" not in run.stderr
    assert "tile4" in run.stdout and not (tmp_path / "x").exists()


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_ratio=0.0), "positive"), (dict(max_ratio=1.2, objective="speed"), "unknown objective"),
    (dict(max_ratio=1.2, bits=[16]), "4 and 8 bits"), (dict(max_ratio=1.2, patterns=["diagonal"]), "diagonal"),
])
def test_bad_settings_are_one_line(tiny_llama, tmp_path, kwargs, message):
    with pytest.raises(CompressError, match=message) as err:
        tune(tiny_llama, tmp_path / "x", RECIPE, work=tmp_path / "w", **{"patterns": ["unstructured"], **kwargs}, **FAST)
    assert "\n" not in str(err.value)


def test_zero_points_go_to_the_points_stored_as_plain_q4(tiny_llama, tmp_path):
    """A --zero-points tune stores a zero point per group in its q4 point (more bytes) and builds its tile4 and 8-bit
    points as a tune without them does (tile4-q4 and q8 have no zero points: the recipe alone would be refused)."""
    zero = Recipe(**{**RECIPE.__dict__, "zero_points": True})
    sizes = []
    for name, recipe in (("plain", RECIPE), ("zero", zero)):
        result = tune(tiny_llama, tmp_path / name, recipe, max_ratio=100.0, objective="size", patterns=["tile4"],
                      bits=[4, 8], work=tmp_path / f"{name}.tune", **FAST)
        sizes.append({r["key"]: r["size_bytes"] for r in result["points"]})
        assert result["best"]["pattern"] == "tile4" and open_artifact(tmp_path / name).card["compression"].get(
            "zero_points") is None
    plain, zero_sizes = sizes
    assert plain.keys() == zero_sizes.keys() and len(plain) == 6  # q4, q8 and the four tile4 levels
    for key in plain:
        assert (zero_sizes[key] > plain[key]) == (key == "unstructured-s0-b4"), key


def test_at_point_keeps_zero_points_only_where_plain_q4_stores_them():
    zero = Recipe(method="wanda", zero_points=True)
    assert zero.at_point("unstructured", 0.5, 4).validated().zero_points
    for pattern, sparsity, bits in (("tile4", 0.5, 4), ("unstructured", 0.95, 4), ("unstructured", 0.0, 8),
                                    ("2:4", 0.5, 8)):
        point = zero.at_point(pattern, sparsity, bits).validated()
        assert not point.zero_points and (point.pattern, point.bits) == (pattern, bits)
    with pytest.raises(CompressError, match="plain q4"):
        Recipe(method="wanda", pattern="tile4", sparsity=0.5, bits=4, zero_points=True).validated()

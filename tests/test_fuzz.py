"""A bounded slice of the fuzz campaign (bench/fuzz.py, issue 18): 200 mutated artifacts, cards, templates,
tokenizers and manifests through `zoo inspect`, `zoo run`, `zoo pull` and `zoo verify`, in worker processes
with a time limit per case. None may end in a traceback, an "internal error", a crash or a hang, and no
corruption may be accepted without --no-verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "bench" / "fuzz.py"


def test_fuzz_slice_finds_nothing(tmp_path):
    out, summary = tmp_path / "fuzz.md", tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, "-P", str(FUZZ), "--cases", "200", "--seed", "2026", "--jobs", "2",
                           "--timeout", "20", "--subprocess-fraction", "0.02", "--workdir", str(tmp_path / "work"),
                           "--out", str(out), "--json", str(summary)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(summary.read_text())
    totals = doc["totals"]
    assert totals["cases"] == 200
    bad = {key: totals.get(key, 0) for key in ("traceback", "internal error", "crash", "hang", "accepted corruption")}
    assert bad == dict.fromkeys(bad, 0), json.dumps(doc["findings"], indent=1)[:4000]
    # the slice reaches every command and ends both ways: refused damage, and damage that still runs
    assert set(doc["by_command"]) == {"inspect", "run", "pull", "verify"}
    assert totals.get("ZooError", 0) > 50 and totals.get("exit 0", 0) > 10
    assert totals["subprocess"] >= 1
    assert "| target / mutation |" in out.read_text()


def test_the_judge_sees_a_corruption_that_verification_would_have_refused(tmp_path, monkeypatch):
    """The slice's zero 'accepted corruption' means something: with verification switched off, the same
    runner counts a flipped weight byte that `zoo inspect` then accepts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_bench_fuzz", FUZZ)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    case = next(c for c in (fuzz.fc.make_case(2026, i, 0.0) for i in range(10_000))
                if (c.command, c.target, c.kind, c.mode) == ("inspect", "weights", "flip", "corrupt"))
    bases = fuzz.prepare(tmp_path)
    honest = fuzz.run_case(case, 2026, bases, tmp_path / "work", timeout=20)
    assert honest["outcome"] == "ZooError" and "sha256" in honest["line"] and honest["accepted"] == []

    import zoo.verify

    monkeypatch.setattr(zoo.verify, "verify_artifact", lambda art, cache=None: [])
    fooled = fuzz.run_case(case, 2026, bases, tmp_path / "work", timeout=20)
    assert fooled["outcome"] == "exit 0" and fooled["accepted"] == ["model-00001.safetensors"], fooled

"""`zoo compress`, `zoo sweep`, `zoo eval` as a user runs them: exit codes, --json, one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from zoo.evaluate import EVALUATION_TEXT, perplexity


def zoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines and lines[-1].startswith("zoo: error:"), proc.stderr
    return lines[-1]


def test_compress_json_and_eval(tiny_llama, tmp_path):
    out = tmp_path / "w50"
    proc = zoo("compress", str(tiny_llama), "-o", str(out), "--method", "wanda", "--sparsity", "0.5", "--bits", "8",
               "--samples", "4", "--seq-len", "32", "--ctx", "32", "--eval-windows", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    card = doc["card"]
    assert card["compression"]["method"] == "wanda" and card["metrics"]["sparsity"] == pytest.approx(0.5)
    assert "layer 2/2" in proc.stderr  # progress goes to stderr
    text = tmp_path / "t.txt"
    text.write_text(EVALUATION_TEXT.read_text()[:6000])
    proc = zoo("eval", str(out), "--text", str(text), "--ctx", "32", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["perplexity"] == pytest.approx(perplexity(out, text, ctx=32)["perplexity"], rel=1e-6)
    assert r["windows"] * 31 == r["tokens_scored"] and len(r["text_sha256"]) == 64


def test_compress_zero_points_from_the_cli(tiny_llama, tmp_path):
    """--zero-points stores every linear as q4 with zero points, the card says so, and the runtime evaluates it."""
    from zoo.format import open_artifact

    out = tmp_path / "zp"
    proc = zoo("compress", str(tiny_llama), "-o", str(out), "--bits", "4", "--quantizer", "gptq", "--zero-points",
               "--samples", "4", "--seq-len", "32", "--ctx", "32", "--eval-windows", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    card = json.loads(proc.stdout)["card"]
    assert card["compression"]["zero_points"] is True and card["metrics"]["perplexity"]["value"] > 1
    tensors = open_artifact(out).tensors
    linears = [t for n, t in tensors.items() if n.startswith("blk.") and len(t.shape) == 2]
    assert linears and all(t.encoding == "q4" and "zeros" in t.parts for t in linears)


def test_compress_sensitivity_profile_from_the_cli(tiny_llama, tmp_path):
    out = tmp_path / "s60"
    proc = zoo("compress", str(tiny_llama), "-o", str(out), "--method", "wanda", "--sparsity", "0.6",
               "--profile", "sensitivity", "--sensitivity-lambda", "0.05", "--samples", "4", "--seq-len", "32",
               "--no-eval", "--json")
    assert proc.returncode == 0, proc.stderr
    comp = json.loads(proc.stdout)["card"]["compression"]
    assert comp["profile"] == "sensitivity" and comp["sensitivity"]["lambda"] == 0.05
    assert len(comp["sensitivity"]["errors"]) == 2
    assert "sensitivity: layer 2/2" in proc.stderr  # the pass reports progress


def test_sweep_writes_table_csv_json_png(tiny_llama, tmp_path):
    out = tmp_path / "sweep"
    proc = zoo("sweep", str(tiny_llama), "--method", "magnitude", "--sparsity", "0.3,0.9", "--bits", "4,8", "-o", str(out),
               "--ctx", "32", "--eval-windows", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Pareto" in proc.stdout
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["sparsity"], r["bits"]) for r in rows] == [("0.3", "4"), ("0.3", "8"), ("0.9", "4"), ("0.9", "8")]
    assert any(r["pareto"] == "True" for r in rows)
    doc = json.loads((out / "sweep.json").read_text())
    assert len(doc["points"]) == 4 and doc["protocol"]["ctx"] == 32
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    smallest = min(doc["points"], key=lambda p: p["size_bytes"])
    assert smallest["pareto"] and (smallest["sparsity"], smallest["bits"]) == (0.9, 4)
    assert (out / "magnitude-unstructured-s0.9-b4" / "zoo.yaml").is_file()



def test_sweep_zero_points_go_to_the_plain_q4_points(tiny_llama, tmp_path):
    """zoo sweep --zero-points: the points stored as plain q4 carry zero points, the sparse-q4 and q8 ones are built
    as without the flag (their encodings have none) instead of the sweep failing."""
    from zoo.format import open_artifact

    out = tmp_path / "sweep"
    proc = zoo("sweep", str(tiny_llama), "--method", "magnitude", "--sparsity", "0.3,0.9", "--bits", "4,8", "-o", str(out),
               "--zero-points", "--ctx", "32", "--eval-windows", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    for point in ("s0.3-b4", "s0.3-b8", "s0.9-b4", "s0.9-b8"):
        linears = [t for n, t in open_artifact(out / f"magnitude-unstructured-{point}").tensors.items()
                   if n.startswith("blk.") and len(t.shape) == 2]
        assert linears and all(("zeros" in t.parts) == (point == "s0.3-b4") for t in linears), point

@pytest.mark.parametrize("args,code,needle", [
    (["compress", "/nonexistent/model.gguf", "-o", "{tmp}/o", "--sparsity", "0.5"], 1, "no such file"),
    (["compress", "{model}", "-o", "{tmp}/o", "--sparsity", "0.5", "--pattern", "4:2"], 1, "0 < N < M"),
    (["compress", "{model}", "-o", "{tmp}/o", "--method", "obs", "--sparsity", "0.5"], 1, "unknown method"),
    (["compress", "{model}", "-o", "{tmp}/o", "--bits", "5"], 2, "--bits"),
    (["compress", "{model}", "-o", "{model}", "--sparsity", "0.5"], 1, "already exists"),
    (["compress", "{model}", "-o", "{tmp}/o", "--bits", "8", "--zero-points"], 1, "plain q4 only"),
    (["compress", "{model}", "-o", "{tmp}/o", "--bits", "4", "--pattern", "tile4", "--sparsity", "0.5",
      "--zero-points"], 1, "plain q4 only"),
    (["eval", "{model}", "--text", "/nonexistent.txt"], 1, "cannot read text"),
    (["eval", "{model}", "--engine", "gpu"], 1, "engine must be"),
    (["sweep", "{model}", "--sparsity", "a,b"], 1, "comma-separated"),
])
def test_bad_input_is_one_line(tiny_llama, tmp_path, args, code, needle):
    proc = zoo(*[a.format(tmp=tmp_path, model=tiny_llama) for a in args])
    assert proc.returncode == code, proc.stderr
    if code == 1:
        assert needle in one_line_error(proc)
    else:
        assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()

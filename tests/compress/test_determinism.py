"""Byte-identical artifacts across processes and thread counts (the catalog rebuilds cards' artifacts by sha256)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

RUN = r"""
import hashlib, json, sys
from pathlib import Path
import numba
from threadpoolctl import threadpool_info
from zoo.compress import Recipe, compress
from zoo.evaluate import fixed_blas_threads

src, out = sys.argv[1], Path(sys.argv[2])
recipes = {"wanda": dict(method="wanda", sparsity=0.5),
           "sparsegpt": dict(method="sparsegpt", sparsity=0.5),
           "sparsegpt-sensitivity": dict(method="sparsegpt", sparsity=0.5, profile="sensitivity"),
           "gptq": dict(sparsity=0.0, bits=4, quantizer="gptq", act_order=False),
           "gptq-act-order": dict(sparsity=0.0, bits=4, quantizer="gptq", act_order=True),
           "sparsegpt-gptq": dict(method="sparsegpt", sparsity=0.5, bits=4, quantizer="gptq")}
digests = {}
for name, opts in recipes.items():
    d = out / name / "m"  # the card names the model after its directory: the same in both runs
    compress(src, d, Recipe(samples=4, seq_len=48, seed=1, **opts), eval_ctx=48, eval_windows=3)
    digests[name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}
process_blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
with fixed_blas_threads():
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
from zoo.compress.windows import compress_threads
print(json.dumps({"digests": digests, "numba_threads": numba.get_num_threads(), "blas_threads": blas,
                  "window_threads": compress_threads(),
                  "process_blas_threads": process_blas}))
"""


def _run(src: Path, out: Path, threads: int) -> dict:
    """Compress in a fresh process whose numba, BLAS and calibration-window thread pools have `threads` threads.

    ZOO_BLAS_THREADS is left at its default (1): compress() pins BLAS to it whatever the process
    has, because OpenBLAS's XᵀX (syrk) and Cholesky round differently with 1 and 2 threads.
    """
    env = {k: v for k, v in os.environ.items() if k != "ZOO_BLAS_THREADS"}
    env.update({"NUMBA_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
                "ZOO_COMPRESS_THREADS": str(threads),
                "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    proc = subprocess.run([sys.executable, "-c", RUN, str(src), str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_identical_bytes_with_one_and_two_threads(tiny_llama, tmp_path):
    one = _run(tiny_llama, tmp_path / "t1", 1)
    two = _run(tiny_llama, tmp_path / "t2", 2)
    assert one["numba_threads"] == 1 and two["numba_threads"] == 2
    assert one["window_threads"] == 1 and two["window_threads"] == 2  # serial loop vs the thread pool
    assert set(one["process_blas_threads"]) == {1} and set(two["process_blas_threads"]) == {2}
    assert set(one["blas_threads"]) == set(two["blas_threads"]) == {1}  # pinned inside compress()
    assert one["digests"] == two["digests"]
    weights = {n: d["model-00001.safetensors"] for n, d in one["digests"].items()}
    assert len(set(weights.values())) == len(weights)  # every recipe really produced different weights
    card = (tmp_path / "t1" / "gptq-act-order" / "m" / "zoo.yaml").read_text()
    assert "act_order: true" in card and "perplexity" in card  # the evaluation (numba runtime) is covered too
    assert hashlib.sha256((tmp_path / "t2" / "gptq-act-order" / "m" / "zoo.yaml").read_bytes()).hexdigest() == \
        one["digests"]["gptq-act-order"]["zoo.yaml"]


RECOVER = r"""
import hashlib, json, os, sys
from pathlib import Path
from zoo.compress import Recipe, compress
from zoo.compress.recover import require_torch

out = Path(sys.argv[2]) / "m"
compress(sys.argv[1], out, Recipe(method="sparsegpt", sparsity=0.5, bits=4, quantizer="gptq", samples=8, seq_len=48,
                                  seed=1, recover="both", recover_tokens=1536), evaluate=False)
torch = require_torch()
print(json.dumps({"sha": hashlib.sha256((out / "model-00001.safetensors").read_bytes()).hexdigest(),
                  "mkl": os.environ.get("MKL_CBWR"), "aten": torch.backends.cpu.get_cpu_capability()}))
"""


def test_recovery_bytes_do_not_depend_on_the_cpu_dispatch(tiny_llama, tmp_path):
    """torch picks MKL's GEMM branch and ATen's kernels by CPU, and they round differently (on an AVX-512 host the
    AVX-512 and AVX2 choices below give different trained weights without zoo.blas.pin_torch): recovery pins both,
    so a card's recipe rebuilds its bytes on an AVX2 laptop and an AVX-512 server alike."""
    runs = []
    for i, dispatch in enumerate(({"MKL_CBWR": "AVX512", "ATEN_CPU_CAPABILITY": "avx512"},
                                  {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})):
        env = {**os.environ, **dispatch, "ZOO_COMPRESS_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", RECOVER, str(tiny_llama), str(tmp_path / str(i))], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.splitlines()[-1]))
    assert all(r["mkl"] == "COMPATIBLE" and r["aten"] == "AVX2" for r in runs)
    assert runs[0]["sha"] == runs[1]["sha"]

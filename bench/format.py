"""Format benchmark: bits per weight by encoding, and a 7B-shaped artifact's write/open/validate cost.

    python bench/format.py [--out DIR] [--skip-7b] [--json]

Bits per weight are measured on a 4096x11008 matrix (random weights, the given fraction zeroed at
random positions), next to GGUF's published Q4_0 / Q4_K (4.5). The 7B artifact (32 layers, dim 4096,
hidden 11008, vocab 32000, sparse-q4 at 90%) is written, opened and validated in fresh processes,
each reporting wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from zoo.format import encode

HERE = Path(__file__).parent
GGUF_REFERENCE = {"GGUF Q4_0": 4.5, "GGUF Q4_K": 4.5, "GGUF Q8_0": 8.5}

_OPEN = """
import json, sys, time
from zoo.rss import peak_rss_mb
t = time.perf_counter()
from zoo.format import open_artifact
t_import = time.perf_counter() - t
t = time.perf_counter(); art = open_artifact(sys.argv[1]); t_open = time.perf_counter() - t
t_validate = None
if sys.argv[2] == "validate":
    t = time.perf_counter(); art.validate(); t_validate = time.perf_counter() - t  # includes numba cache load
print(json.dumps({"open_s": t_open, "validate_s": t_validate, "tensors": len(art.tensors),
                  "peak_rss_mb": peak_rss_mb()}))
"""


def bits_table(shape=(4096, 11008)) -> list[dict]:
    """Measured bits per weight of each encoding on one matrix."""
    rng = np.random.default_rng(0)
    dense = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    rows = []
    for encoding, sparsity in [("q8", 0.0), ("q4", 0.0), ("sparse-q4", 0.5), ("sparse-q4", 0.7), ("sparse-q4", 0.9),
                               ("sparse-q8", 0.5), ("sparse-q8", 0.9), ("sparse-f16", 0.9)]:
        w = dense.copy()
        if sparsity:
            w[rng.random(shape, dtype=np.float32) < sparsity] = 0.0
        t = encode(w, encoding, group_size=128)
        rows.append({"encoding": encoding, "sparsity": sparsity, "bytes": t.nbytes,
                     "bits_per_weight": round(8 * t.nbytes / w.size, 4)})
    return rows


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_7b(out: Path) -> dict:
    made = run_json([sys.executable, str(HERE / "make_random_artifact.py"), str(out), "--preset", "llama-7b",
                     "--encoding", "sparse-q4", "--sparsity", "0.9", "--overwrite"])
    opened = run_json([sys.executable, "-c", _OPEN, str(out), "open"])
    validated = run_json([sys.executable, "-c", _OPEN, str(out), "validate"])
    return {"write": made, "open": opened, "validate": validated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write the 7B artifact (default: a temp dir)")
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "bits": bits_table(),
              "reference": GGUF_REFERENCE}
    if not args.skip_7b:
        with tempfile.TemporaryDirectory(dir=args.out.parent if args.out else None) as tmp:
            result["llama_7b_sparse_q4_90"] = bench_7b(args.out or Path(tmp) / "llama-7b-sparse90-q4")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print("encoding     sparsity  bits/weight (4096x11008, group 128)")
    for row in result["bits"]:
        print(f"{row['encoding']:<12} {row['sparsity']:<9} {row['bits_per_weight']:.3f}")
    for name, bits in GGUF_REFERENCE.items():
        print(f"{name:<22} {bits:.3f} (published)")
    if "llama_7b_sparse_q4_90" in result:
        r = result["llama_7b_sparse_q4_90"]
        print(f"7B sparse-q4 90%: {r['write']['bytes'] / 1e9:.2f} GB; write {r['write']['write_s']:.1f} s "
              f"(peak RSS {r['write']['peak_rss_mb']:.0f} MB); open {r['open']['open_s'] * 1e3:.1f} ms "
              f"(peak RSS {r['open']['peak_rss_mb']:.0f} MB); validate {r['validate']['validate_s']:.2f} s "
              f"(peak RSS {r['validate']['peak_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()

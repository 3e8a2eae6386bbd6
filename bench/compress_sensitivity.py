"""Diagnostic: which layers of SmolLM2 are sensitive to extra sparsity at 70%, per method (why OWL misses for SparseGPT).

Usage:
  python bench/compress_sensitivity.py groups [--methods sparsegpt,wanda]   # 6-layer group at 0.80, rest 0.675
  python bench/compress_sensitivity.py first6 [--methods sparsegpt,wanda]   # layers 0-5 at 0.60, rest 0.725

`groups` scores on the first 16 windows of 512 of the *calibration* text (as `compress_owl.py tune`);
`first6` — the profile the groups pointed to — on the evaluation protocol of bench/results/compress.md
(evaluation text, first 8 windows of 512, reference forward). Uniform 70% of the same method is the
in-run peer of both. Calibration: 8 x 256 tokens of calibration.txt, seed 0. Rows append to
DIR/sensitivity.jsonl. The explicit per-layer profile is injected by replacing the pipeline's
`uniform` profile function inside this process: a diagnostic, not a recipe option (the card of such a
run still says "uniform", so its artifacts are thrown away).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import zoo.compress.pipeline as pipeline
from zoo.compress.recipe import Recipe
from zoo.convert.source import open_source
from zoo.evaluate import CALIBRATION_TEXT, fixed_blas_threads, perplexity

sys.path.insert(0, str(Path(__file__).parent))
from compress import smollm2  # noqa: E402

N_LAYERS = 30
_uniform = pipeline.uniform


def profiles(kind: str) -> dict[str, list[float] | None]:
    """Named per-layer sparsity lists (None = the real uniform profile), each with mean 0.70."""
    if kind == "groups":
        out: dict[str, list[float] | None] = {"uniform": None}
        for g in range(N_LAYERS // 6):
            out[f"layers {6 * g}-{6 * g + 5} at 0.80"] = [0.8 if 6 * g <= i < 6 * g + 6 else 0.7 - 0.1 / 4
                                                         for i in range(N_LAYERS)]
        return out
    return {"uniform": None, "layers 0-5 at 0.60": [0.6 if i < 6 else 0.725 for i in range(N_LAYERS)]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("groups", "first6"))
    ap.add_argument("--methods", default="sparsegpt,wanda")
    ap.add_argument("--out", default="/tmp/zoo-bench-sensitivity")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = open_source(smollm2())
    text, windows = (CALIBRATION_TEXT, 16) if args.kind == "groups" else (None, 8)
    with fixed_blas_threads():
        base = perplexity(src, text, 512, windows)
        for method in args.methods.split(","):
            ref = None
            for name, prof in profiles(args.kind).items():
                pipeline.uniform = _uniform if prof is None else (lambda n, s, prof=prof: list(prof))
                t = time.time()
                card = pipeline.compress(src, out / "work", Recipe(method=method, sparsity=0.7, samples=8, seq_len=256,
                                                                   seed=0),
                                         eval_text=text, eval_windows=windows, base_perplexity=base,
                                         eval_engine="reference", overwrite=True)
                ppl = card["metrics"]["perplexity"]["value"]
                ref = ppl if prof is None else ref
                row = {"kind": args.kind, "method": method, "profile": name, "perplexity": ppl,
                       "x_uniform": round(ppl / ref, 4) if ref else None, "sparsity": card["metrics"]["sparsity"],
                       "text": card["metrics"]["perplexity"]["protocol"]["text"], "seconds": round(time.time() - t)}
                with open(out / "sensitivity.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    pipeline.uniform = _uniform


if __name__ == "__main__":
    main()

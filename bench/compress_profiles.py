"""SmolLM2 at 70%: uniform vs OWL vs sensitivity profiles for Wanda and SparseGPT, on the evaluation protocol.

Usage:
  python bench/compress_profiles.py [--methods sparsegpt,wanda] [--profiles uniform,owl,sensitivity]

Protocol of bench/results/compress.md's 70% rows: calibration 8 x 256 tokens of calibration.txt,
seed 0; perplexity on the shipped evaluation text, first 8 windows of 512, reference forward. OWL
runs with the SmolLM2 Wanda tuning (M 7, lambda 0.12); sensitivity with the Recipe default lambda.
The sensitivity pass (`layer_errors`) is timed on its own and its errors are passed to `compress`
(its `owl_ratios` argument), so `profile_s` is the extra compress time. Rows append to
DIR/profiles.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from zoo.compress.calibration import calibration_windows
from zoo.compress.pipeline import compress, outlier_ratios
from zoo.compress.recipe import Recipe
from zoo.compress.sensitivity import layer_errors
from zoo.convert.source import open_source
from zoo.evaluate import fixed_blas_threads, perplexity

sys.path.insert(0, str(Path(__file__).parent))
from compress import smollm2  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="sparsegpt,wanda")
    ap.add_argument("--profiles", default="uniform,owl,sensitivity")
    ap.add_argument("--out", default="/tmp/zoo-bench-profiles")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = open_source(smollm2())
    with fixed_blas_threads():
        base = perplexity(src, None, 512, 8)
        for method in args.methods.split(","):
            for profile in args.profiles.split(","):
                extra = dict(owl_m=7.0, owl_lambda=0.12) if profile == "owl" else {}
                recipe = Recipe(method=method, sparsity=0.7, profile=profile, samples=8, seq_len=256, seed=0,
                                **extra).validated()
                calib = calibration_windows(src.tokenizer_json, 8, 256, 0, None, src.config["vocab_size"])
                t = time.time()
                scores = None
                if profile == "sensitivity":
                    scores = layer_errors(src, calib, recipe)
                elif profile == "owl":
                    scores = outlier_ratios(src, calib, [recipe.owl_m])[recipe.owl_m]
                profile_s = time.time() - t
                t = time.time()
                card = compress(src, out / "work", recipe, eval_windows=8, base_perplexity=base,
                                eval_engine="reference", overwrite=True, owl_ratios=scores)
                per_layer = card["metrics"]["sparsity_per_layer"]
                row = {"method": method, "profile": profile, "perplexity": card["metrics"]["perplexity"]["value"],
                       "base": card["metrics"]["perplexity"]["base"], "sparsity": card["metrics"]["sparsity"],
                       "layer_min": min(per_layer), "layer_max": max(per_layer),
                       "per_layer": [round(s, 3) for s in per_layer],
                       "scores": [round(s, 5) for s in scores] if scores else None,
                       "profile_s": round(profile_s, 1), "compress_eval_s": round(time.time() - t, 1)}
                with open(out / "profiles.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

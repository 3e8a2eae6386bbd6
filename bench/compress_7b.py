"""Benchmark: stream a random Llama-2-7B-shaped model through Wanda 50% and report time and peak RSS.

Usage: python bench/compress_7b.py [--src DIR] [--samples 2] [--seq-len 128] [--out DIR]
Without --src, a random-weight q4 artifact with Llama-2-7B shapes is written first (zoo.synthetic,
seed 0; in a child process, so its memory does not count). The model has no tokenizer, so the
calibration windows are random token ids (seeded). Peak RSS is this process's ru_maxrss: the
streamed pipeline holds about one layer (decoded to float32) plus the calibration activations.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--out", default="/tmp/zoo-bench-compress-7b")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(args.src) if args.src else out / "src"
    if not src.exists():
        code = ("from zoo.synthetic import LLAMA_7B, write_random_model; "
                f"write_random_model({str(src)!r}, LLAMA_7B, encoding='q4', seed=0)")
        subprocess.run([sys.executable, "-c", code], check=True)
    from zoo.compress import Recipe, compress
    from zoo.convert.source import open_source

    config = open_source(src).config
    tokens = np.random.default_rng(0).integers(0, config["vocab_size"], (args.samples, args.seq_len))
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    t = time.time()
    card = compress(src, out / "wanda50", Recipe(method="wanda", sparsity=0.5, samples=args.samples, seq_len=args.seq_len),
                    calib_tokens=tokens, evaluate=False, overwrite=True, progress=log)
    row = {"model": "random Llama-2-7B shapes (q4 source)", "method": "wanda 0.5 unstructured, f16 values",
           "samples": args.samples, "seq_len": args.seq_len, "seconds": round(time.time() - t, 1),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
           "size_bytes": card["metrics"]["size_bytes"], "sparsity": card["metrics"]["sparsity"]}
    print(json.dumps(row))
    (out / "result.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()

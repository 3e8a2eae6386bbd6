"""Benchmark: stream a random Llama-2-7B-shaped model through Wanda 50% and report time and peak RSS.

Usage: python bench/compress_7b.py [--src DIR] [--samples 2] [--seq-len 128] [--out DIR] [--stop-after N]
                                   [--recover-tokens N]
`--recover-tokens N` runs Wanda tile4 50% int4 with block-wise recovery (N tokens per block) instead:
the memory of recovery (the dense activation stream, torch's weights, gradients and Adam state).
Without --src, a random-weight q4 artifact with Llama-2-7B shapes is written first (zoo.synthetic,
seed 0; in a child process, so its memory does not count). The model has no tokenizer, so the
calibration windows are random token ids (seeded). Peak RSS is this process's ru_maxrss: the
streamed pipeline holds about one layer (decoded to float32) plus the calibration activations.
Every layer's progress line carries VmRSS (now, with its file-backed part RssFile) and VmHWM (peak),
from /proc/self/status, so per-layer growth shows in a short run: `--stop-after N` ends the run
after N layers (nothing is written to --out/wanda50; the JSON row says how many layers ran).
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


class _Stop(Exception):
    """Raised from the progress callback after --stop-after layers."""


def _mem() -> dict[str, float]:
    """VmRSS, RssFile, RssAnon and VmHWM of this process in GB (/proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssFile", "RssAnon", "VmHWM"):
            out[key] = round(int(rest.split()[0]) / 2**20, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--out", default="/tmp/zoo-bench-compress-7b")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many layers (memory profile)")
    ap.add_argument("--recover-tokens", type=int, default=None, help="Wanda tile4 50%% int4 + blockwise recovery")
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
    layers: list[dict] = []

    def log(message: str) -> None:
        mem = _mem()
        print(f"[{time.strftime('%H:%M:%S')}] {message} | mem GB {mem}", file=sys.stderr, flush=True)
        if message.startswith("layer "):
            layers.append(mem)
            if args.stop_after and len(layers) >= args.stop_after:
                raise _Stop

    if args.recover_tokens:
        recipe = Recipe(method="wanda", sparsity=0.5, pattern="tile4", bits=4, samples=args.samples,
                        seq_len=args.seq_len, recover="blockwise", recover_tokens=args.recover_tokens)
        what = f"wanda 0.5 tile4 int4 + blockwise recovery, {args.recover_tokens} tokens per block"
    else:
        recipe = Recipe(method="wanda", sparsity=0.5, samples=args.samples, seq_len=args.seq_len)
        what = "wanda 0.5 unstructured, f16 values"
    t = time.time()
    card = None
    try:
        card = compress(src, out / "wanda50", recipe, calib_tokens=tokens, evaluate=False, overwrite=True, progress=log)
    except _Stop:
        pass
    row = {"model": "random Llama-2-7B shapes (q4 source)", "method": what,
           "samples": args.samples, "seq_len": args.seq_len, "layers_run": len(layers),
           "seconds": round(time.time() - t, 1),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
           "rss_gb_after_each_layer": [m["VmRSS"] for m in layers],
           "rss_file_gb_after_each_layer": [m.get("RssFile") for m in layers],
           "hwm_gb_after_each_layer": [m["VmHWM"] for m in layers]}
    if card is not None:
        row.update(size_bytes=card["metrics"]["size_bytes"], sparsity=card["metrics"]["sparsity"])
    print(json.dumps(row))
    (out / "result.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()

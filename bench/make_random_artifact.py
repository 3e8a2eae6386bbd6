"""Write a random-weight artifact of a known shape (7B Llama by default) for benchmarks.

    python bench/make_random_artifact.py OUT [--preset llama-7b|tiny-llama|tiny-mpt]
        [--encoding sparse-q4] [--sparsity 0.9] [--group-size 128] [--seed 0] [--float-weights]

Linear weights are drawn directly as random codes (fast) unless --float-weights, which draws float
weights and encodes them with the reference encoder. Prints one JSON line: seconds, peak RSS, bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from zoo.rss import peak_rss_mb
from zoo.synthetic import LLAMA_7B, TINY_LLAMA, TINY_MPT, write_random_model

PRESETS = {"llama-7b": LLAMA_7B, "tiny-llama": TINY_LLAMA, "tiny-mpt": TINY_MPT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", choices=PRESETS, default="llama-7b")
    parser.add_argument("--encoding", default="sparse-q4")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float-weights", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    path = write_random_model(args.out, PRESETS[args.preset], args.encoding, args.sparsity, args.group_size,
                              args.seed, overwrite=args.overwrite, direct=not args.float_weights)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in path.iterdir())
    peak = peak_rss_mb()
    json.dump({"path": str(path), "write_s": round(seconds, 2), "peak_rss_mb": round(peak, 1), "bytes": size}, sys.stdout)
    print()


if __name__ == "__main__":
    main()

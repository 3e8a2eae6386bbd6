"""Tune OWL's λ and M on SmolLM2 against the calibration text only, then report uniform vs OWL rows.

Usage:
  python bench/compress_owl.py tune  [--methods wanda,sparsegpt] [--ms 3,5,7,10] [--lambdas 0.02,0.04,0.08,0.12]
  python bench/compress_owl.py final --m M --lam L      # uniform vs OWL(M, λ) on the shipped evaluation text
  python bench/compress_owl.py report                   # Markdown tables of DIR/tune.jsonl and DIR/final.jsonl

`tune` scores every point by perplexity on the first --tune-windows windows of the *calibration* text
(`zoo/data/calibration.txt`), never the evaluation text; the outlier ratios for every M come from one
dense pass. Calibration windows: --samples × --seq-len of the calibration text, seed 0, the same in
every row. `final` uses the table protocol of bench/results/compress.md (evaluation text, first
--eval-windows windows of 512, reference forward). Rows append to DIR/*.jsonl, so a partial run keeps
what it measured; the uniform row of each method is the in-run peer.
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
from zoo.convert.source import open_source
from zoo.evaluate import CALIBRATION_TEXT, fixed_blas_threads, perplexity

sys.path.insert(0, str(Path(__file__).parent))
from compress import smollm2  # noqa: E402


def _log(m: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _done(path: Path) -> set[str]:
    return {json.loads(x)["key"] for x in path.read_text().splitlines()} if path.exists() else set()


def _row(key: str, method: str, card: dict, base: dict, t: float, **extra) -> dict:
    m = card["metrics"]
    return {"key": key, "method": method, "perplexity": m["perplexity"]["value"], "base": base["perplexity"],
            "ratio": m["perplexity"]["value"] / base["perplexity"], "sparsity": m["sparsity"],
            "sparsity_per_layer": m["sparsity_per_layer"], "seconds": round(time.time() - t, 1),
            "protocol": m["perplexity"]["protocol"], **extra}


def tune(args, out: Path) -> None:
    src = open_source(smollm2())
    ms = [float(x) for x in args.ms.split(",")]
    lambdas = [float(x) for x in args.lambdas.split(",")]
    calib = calibration_windows(src.tokenizer_json, args.samples, args.seq_len, 0, None, src.config["vocab_size"])
    ratio_file = out / "ratios.json"
    if ratio_file.exists() and set(map(str, ms)) <= set(json.loads(ratio_file.read_text())):
        ratios = {float(k): v for k, v in json.loads(ratio_file.read_text()).items()}
    else:
        with fixed_blas_threads():
            ratios = outlier_ratios(src, calib, ms, _log)
        ratio_file.write_text(json.dumps({str(k): v for k, v in ratios.items()}))
    base_file = out / "tune_base.json"
    if base_file.exists():
        base = json.loads(base_file.read_text())
    else:
        base = perplexity(src, CALIBRATION_TEXT, 512, args.tune_windows, _log)
        base_file.write_text(json.dumps(base))
    done = _done(out / "tune.jsonl")
    for method in args.methods.split(","):
        points = [("uniform", None, None)] + [("owl", m, lam) for m in ms for lam in lambdas]
        for profile, m, lam in points:
            key = f"{method}-{profile}" + ("" if m is None else f"-m{m:g}-l{lam:g}")
            if key in done:
                continue
            opts = dict(method=method, sparsity=args.sparsity, profile=profile, samples=args.samples,
                        seq_len=args.seq_len, seed=0)
            if m is not None:
                opts.update(owl_m=m, owl_lambda=lam)
            t = time.time()
            card = compress(src, out / "work", Recipe(**opts), eval_text=CALIBRATION_TEXT, eval_windows=args.tune_windows,
                            base_perplexity=base, eval_engine="reference", overwrite=True,
                            owl_ratios=None if m is None else ratios[m])
            row = _row(key, method, card, base, t, profile=profile, m=m, lam=lam)
            _append(out / "tune.jsonl", row)
            _log(f"{key}: {row['perplexity']:.3f} (x{row['ratio']:.3f}) {row['seconds']}s")


def final(args, out: Path) -> None:
    src = open_source(smollm2())
    base = perplexity(src, None, 512, args.eval_windows, _log)
    for method in args.methods.split(","):
        for profile in ("uniform", "owl"):
            opts = dict(method=method, sparsity=args.sparsity, profile=profile, samples=args.samples,
                        seq_len=args.seq_len, seed=0, owl_m=args.m, owl_lambda=args.lam)
            t = time.time()
            card = compress(src, out / "work", Recipe(**opts), eval_windows=args.eval_windows, base_perplexity=base,
                            eval_engine="reference", overwrite=True)
            row = _row(f"{method}-{profile}", method, card, base, t, profile=profile, m=args.m, lam=args.lam)
            _append(out / "final.jsonl", row)
            _log(f"{row['key']}: {row['perplexity']:.3f} (x{row['ratio']:.3f}) {row['seconds']}s")


def report(out: Path) -> str:
    lines = []
    for name in ("tune", "final"):
        path = out / f"{name}.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        lines += [f"\n{name}: text {rows[0]['protocol']['text']}, {rows[0]['protocol']['windows']} windows of "
                  f"{rows[0]['protocol']['ctx']}\n", "| method | profile | M | λ | perplexity | × dense | × uniform | "
                  "layer sparsity min–max |", "|---|---|---|---|---|---|---|---|"]
        uniform = {r["method"]: r["perplexity"] for r in rows if r["profile"] == "uniform"}
        for r in rows:
            ref = uniform.get(r["method"])
            m = "-" if r["m"] is None else f"{r['m']:g}"
            lam = "-" if r["lam"] is None else f"{r['lam']:g}"
            vs = f"{r['perplexity'] / ref:.3f}" if ref else "-"
            spl = r["sparsity_per_layer"]
            lines.append(f"| {r['method']} | {r['profile']} | {m} | {lam} | {r['perplexity']:.3f} | {r['ratio']:.3f} | "
                         f"{vs} | {min(spl):.3f}–{max(spl):.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("tune", "final", "report"))
    ap.add_argument("--out", default="/tmp/zoo-bench-owl")
    ap.add_argument("--methods", default="wanda,sparsegpt")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--ms", default="3,5,7,10")
    ap.add_argument("--lambdas", default="0.02,0.04,0.08,0.12")
    ap.add_argument("--tune-windows", type=int, default=16)
    ap.add_argument("--eval-windows", type=int, default=8)
    ap.add_argument("--m", type=float, default=5.0)
    ap.add_argument("--lam", type=float, default=0.08)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "report":
        print(report(out))
    else:
        with fixed_blas_threads():
            (tune if args.cmd == "tune" else final)(args, out)


if __name__ == "__main__":
    main()

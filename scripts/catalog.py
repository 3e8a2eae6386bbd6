"""Measure and fill in the built-in catalog's cards from their recipes (maintainers run this; users run `zoo build`).

    python scripts/catalog.py [NAME ...] [--repeats 3] [--work /tmp/zoo-catalog] [--speed-only]

For each card in cards/ with a recipe whose base is available here (default: every such card): build
it with `zoo compress` from the recipe, measure perplexity of base and result on the shipped
evaluation text (one protocol, recorded), decode and prefill tokens/s with the numba runtime (best of
`--repeats`, 2 threads), then rewrite the card with the recipe's base and calibration digests, the
files' digests and the metrics. Hand-written fields (name, description, license, tags, base model,
the recipe's options) are kept. Cards whose base cannot be fetched here are reported and left as they are.
`--speed-only` re-measures only the tokens/s of models already built in `--work` (e.g. on a quiet machine after
building beside other work): every file is checked against the card's sha256 first.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "cards"
EVAL_WINDOWS = 32  # x 512 tokens of the shipped evaluation text (16,352 scored): the catalog's one protocol
EVAL_CTX = 512
THREADS = 2


def machine() -> str:
    """A short description of this CPU, for the card's speed figures."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-512" if "avx512f" in flags else \
        "AVX2" if "avx2" in flags else None
    return f"{model}{f' ({simd})' if simd else ''}, {os.cpu_count()} vCPU, {platform.system()} {platform.machine()}"


def speed(path: Path, repeats: int) -> dict:
    from zoo.kernels import set_threads
    from zoo.runtime import load
    from zoo.runtime.bench import measure

    set_threads(THREADS)
    model, tok = load(path)
    return measure(model, tok, prompt_tokens=128, gen_tokens=128, repeats=repeats)


def _speed_metrics(tps: dict, repeats: int) -> dict:
    measured = {"machine": machine(), "threads": THREADS, "prompt_tokens": tps["prompt_tokens"],
                "gen_tokens": tps["gen_tokens"], "protocol": f"zoo bench, best of {repeats}, greedy, EOS ignored"}
    return {"decode_tps": {"value": round(tps["decode_tps"], 1), **measured},
            "prefill_tps": {"value": round(tps["prefill_tps"], 1), **measured}}


def respeed(card_path: Path, work: Path, repeats: int, log) -> None:
    """Re-measure the speed of the card's model as built in `work`, after checking its files' digests."""
    from zoo.errors import ChecksumError
    from zoo.registry.transfer import sha256_file

    card = yaml.safe_load(card_path.read_text())
    out = work / card["name"]
    for f in card.get("files") or []:
        got = out / f["path"]
        if not got.is_file() or sha256_file(got) != f["sha256"]:
            raise ChecksumError(f"{got}: missing or not the card's file (build it first without --speed-only)")
    tps = speed(out, repeats)
    card["metrics"].update(_speed_metrics(tps, repeats))
    card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110))
    log(f"{card['name']}: decode {tps['decode_tps']:.1f} tok/s, prefill {tps['prefill_tps']:.1f} tok/s -> {card_path.name}")


def refresh(card_path: Path, work: Path, repeats: int, base_ppl: dict, log) -> None:
    from zoo.build.base import fetch
    from zoo.build.build import calibration_text, compress_recipe
    from zoo.compress import compress
    from zoo.config import zoo_home
    from zoo.convert.source import open_source
    from zoo.evaluate import CALIBRATION_TEXT, perplexity

    card = yaml.safe_load(card_path.read_text())
    where = str(card_path)
    recipe = compress_recipe(card, where)
    spec = card["recipe"]["base"]
    base_path = fetch(spec, zoo_home() / "bases", log)
    source = open_source(base_path)
    key = source.sha256
    if key not in base_ppl:
        log(f"{card['name']}: base perplexity ({EVAL_WINDOWS}x{EVAL_CTX})")
        base_ppl[key] = perplexity(source, None, EVAL_CTX, EVAL_WINDOWS, log)
    out = work / card["name"]
    t0 = time.monotonic()  # what `zoo build` costs: compression alone, no evaluation
    made = compress(source, out, recipe, calib_text=calibration_text(card, where), evaluate=False, overwrite=True,
                    name=card["base_model"]["name"], progress=log)
    seconds = time.monotonic() - t0
    result = perplexity(out, None, EVAL_CTX, EVAL_WINDOWS, log)
    made["metrics"]["perplexity"] = {"base": round(base_ppl[key]["perplexity"], 4),
                                     "value": round(result["perplexity"], 4), "protocol": result["protocol"]}
    tps = speed(out, repeats)
    card["zoo_version"] = made["zoo_version"]
    card["base_model"]["sha256"] = key
    card["compression"] = made["compression"]
    card["recipe"]["base"]["sha256"] = key
    if recipe.uses_calibration:
        cal = card["recipe"].get("calibration") or {"text": "builtin"}
        cal_path = CALIBRATION_TEXT if cal.get("text", "builtin") == "builtin" else Path(cal["text"])
        cal["sha256"] = hashlib.sha256(cal_path.read_bytes()).hexdigest()
        card["recipe"]["calibration"] = cal
    card["metrics"] = {**made["metrics"], **_speed_metrics(tps, repeats), "build_seconds": round(seconds, 1)}
    card["files"] = made["files"]
    order = ["card_version", "name", "description", "license", "architecture", "parameters", "tags", "zoo_version",
             "base_model", "compression", "metrics", "recipe", "files"]
    card = {k: card[k] for k in order if k in card} | {k: v for k, v in card.items() if k not in order}
    from zoo.card import validate

    validate(card, strict=True, source=where)
    card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110))
    log(f"{card['name']}: ppl {made['metrics']['perplexity']['value']} (base {made['metrics']['perplexity']['base']}), "
        f"{made['metrics']['size_bytes'] / 1e6:.1f} MB, decode {tps['decode_tps']:.1f} tok/s -> {card_path.name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="card names (default: every card with a buildable recipe)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/zoo-catalog"))
    parser.add_argument("--speed-only", action="store_true", help="only re-measure tokens/s of models built in --work")
    args = parser.parse_args()
    from zoo.errors import ZooError
    from zoo.evaluate import fixed_blas_threads

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    base_ppl: dict = {}
    failed = 0
    for path in sorted(CARDS.glob("*.yaml")):
        card = yaml.safe_load(path.read_text())
        if args.names and card["name"] not in args.names or not card.get("recipe"):
            continue
        try:
            with fixed_blas_threads():
                if args.speed_only:
                    respeed(path, args.work, args.repeats, log)
                else:
                    refresh(path, args.work, args.repeats, base_ppl, log)
        except ZooError as err:
            log(f"{card['name']}: left as it is: {err}")
            failed += 1
    return 1 if failed and args.names else 0


if __name__ == "__main__":
    sys.exit(main())

"""Write zoo/data/smollm2-written.txt: text SmolLM2-135M-Instruct wrote itself, for calibration (maintainers run this).

    python -P scripts/written_text.py [--windows 32] [--seed 0] [--out zoo/data/smollm2-written.txt]

The windows are those `zoo compress --calib-generated` samples (zoo.compress.selfgen: each document from a
uniformly drawn ordinary token, temperature 1, top-p 0.95, seeded), decoded to text, one window after another
with a blank line between. Why a shipped file: sampling runs on the numba runtime, whose AVX-512, AVX2 and
portable paths round differently, so live generation gives other windows on another CPU and a catalog card
calibrated on it would not rebuild byte for byte; a file with a digest does. The shipped file was written on
an Intel Xeon (AVX-512) by this script with the defaults.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from zoo.build.base import fetch
    from zoo.compress.selfgen import generated_windows
    from zoo.config import zoo_home
    from zoo.convert.source import open_source
    from zoo.evaluate import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "zoo/data/smollm2-written.txt")
    args = ap.parse_args()
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    card = __import__("yaml").safe_load((ROOT / "cards/smollm2-135m-instruct-f16.yaml").read_text())
    source = open_source(fetch(card["recipe"]["base"], zoo_home() / "bases", log))
    with tempfile.TemporaryDirectory() as work:
        windows = generated_windows(source, args.windows, 512, args.seed, Path(work), log)
    tokenizer = load_tokenizer(source.tokenizer_json)
    texts = [tokenizer.decode(w.tolist(), skip_special_tokens=True) for w in windows]
    args.out.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    log(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

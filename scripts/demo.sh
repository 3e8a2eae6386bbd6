#!/usr/bin/env bash
# Set up zoo in ./.venv and run the main job on the embedded defaults:
# write a small sparse-q4 example model and inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${ZOO_DEMO_DIR:-$(mktemp -d)}/example-sparse90-q4"
.venv/bin/python bench/make_random_artifact.py "$OUT" --preset tiny-llama --encoding sparse-q4 --sparsity 0.9 --overwrite >/dev/null
.venv/bin/zoo inspect "$OUT"

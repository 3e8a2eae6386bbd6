#!/usr/bin/env bash
# From nothing to a fast sparse model: set up ./.venv, pull zoo's default sparse model (built from its
# card's recipe on first run, every file checked against the card's sha256), chat with it once, then
# compare its size and decode speed with the dense f16 model's and the dense q4 model's (what a user would
# pick instead), measured here, now.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
SPARSE="${ZOO_DEMO_MODEL:-smollm2-135m-instruct-sparse30-int4}"
DENSE="${ZOO_DEMO_DENSE:-smollm2-135m-instruct-f16}"
Q4="${ZOO_DEMO_Q4:-smollm2-135m-instruct-q4}"
zoo pull "$SPARSE"
zoo run "$SPARSE" "What is a sparse neural network? Answer in two sentences." --max-tokens 64 --temperature 0
zoo pull "$DENSE"
zoo pull "$Q4"
zoo bench "$DENSE" "$Q4" "$SPARSE"

#!/usr/bin/env bash
# Set up (./.venv, test dependencies) and run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -P -m pytest -q "$@"  # -P: the repo root off sys.path, so our kernels/ never shadows the PyPI `kernels` transformers imports

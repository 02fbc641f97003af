#!/usr/bin/env bash
# Set up zswarm in ./.venv on a fresh machine: one command, idempotent.
#
# llama.cpp is compiled from source by pip (llama-cpp-python publishes no Linux
# wheels on PyPI). On x86-64 we build the portable AVX2 kernels instead of
# -march=native: some virtual machines advertise AMX in /proc/cpuinfo without
# enabling it, and a native build then dies with SIGILL on the first token.
# Set ZSWARM_NATIVE_BUILD=1 for a native build on hardware you trust, or pass
# your own CMAKE_ARGS (e.g. for CUDA or Metal).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS="${ZSWARM_EXTRAS:-test}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip

PIP_FLAGS=()
if [ "${ZSWARM_NATIVE_BUILD:-0}" = 1 ]; then
  export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_NATIVE=ON"
  PIP_FLAGS+=(--no-cache-dir)
elif [ -z "${CMAKE_ARGS:-}" ] && [ "$(uname -m)" = x86_64 ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "zswarm: building llama.cpp (CMAKE_ARGS=${CMAKE_ARGS:-}); the first build takes ~10 minutes" >&2
fi
.venv/bin/python -m pip install --quiet "${PIP_FLAGS[@]}" -e ".[${EXTRAS}]"

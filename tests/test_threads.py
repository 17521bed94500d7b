"""CPU threads that fit the machine (bench.threads): the OpenMP wait policy set before torch loads, the thread count
from affinity, cgroup quota and load, the overrides, and the record in the provenance."""
import os
import subprocess
import sys

import pytest
import torch

from bench import threads
from bench.cli import main
from bench.config import experiment_path, load_run_config
from bench.provenance import hardware
from core.errors import UserError
from support import ROOT


def _python(code: str, **env) -> str:
    """The last line ``code`` prints, run in a fresh interpreter without the OpenMP variables of this one."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **env},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


CODE = """
import os, sys
import bench.cli
assert "torch" not in sys.modules  # the entry point's module imports no torch before main() runs
bench.cli.main(["variants"])
from bench import threads
print(os.environ.get("OMP_WAIT_POLICY"), threads.current()["omp_wait_policy"]["source"])
"""


def test_the_entry_point_sets_a_passive_wait_policy_before_torch_unless_the_user_did():
    assert _python(CODE) == "PASSIVE bench"
    assert _python(CODE, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE user"


def test_auto_threads_leave_the_others_their_cores():
    assert threads.auto_threads(2, 0.0) == 2
    assert threads.auto_threads(2, 0.6) == 2  # a core at least a quarter free counts
    assert threads.auto_threads(2, 1.0) == 1
    assert threads.auto_threads(2, 12.0) == 1  # never fewer than one
    assert threads.auto_threads(16, 3.5) == 13


def _facts(monkeypatch, cores, load1, running):
    monkeypatch.setattr(threads, "usable_cores", lambda: {"affinity": cores, "cgroup_quota": None, "cores": cores})
    monkeypatch.setattr(threads, "_load", lambda: (load1, running))


def test_choose_from_load_env_or_request(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _facts(monkeypatch, 2, 0.2, 0)
    c = threads.choose()
    assert c["threads"] == 2 and c["source"] == "auto" and c["load_avg_1m"] == 0.2 and c["runnable_others"] == 0
    _facts(monkeypatch, 2, 0.2, 3)  # the machine just got busy: the 1-minute average has not caught up yet
    assert threads.choose()["threads"] == 1
    _facts(monkeypatch, 4, 3.1, 1)
    assert threads.choose()["threads"] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    c = threads.choose()
    assert (c["threads"], c["source"]) == (3, "OMP_NUM_THREADS")
    c = threads.choose(2, "--threads")
    assert (c["threads"], c["source"]) == (2, "--threads")
    with pytest.raises(UserError, match="--threads must be an integer >= 1, got 0"):
        threads.choose(0, "--threads")


def test_cgroup_quota_v2_along_the_path_and_v1(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job/step\n")
    root = tmp_path / "fs"
    (root / "job" / "step").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "job" / "cpu.max").write_text("150000 100000\n")
    (root / "job" / "step" / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)  # the tightest on the way up
    (root / "job" / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(root, proc) is None
    v1 = root / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(0.5)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_limit(root, tmp_path / "missing") is None


def test_usable_cores_take_the_quota(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.usable_cores() == {"affinity": 4, "cgroup_quota": 1.5, "cores": 2}


def test_apply_sets_torch_and_the_provenance_records_it(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads.apply(1, "run.threads")
    assert torch.get_num_threads() == 1
    rec = hardware()["threads"]
    assert rec["threads"] == 1 and rec["source"] == "run.threads" and rec["torch_threads"] == 1
    assert {"affinity", "cgroup_quota", "cores", "load_avg_1m", "runnable_others", "omp_wait_policy"} <= set(rec)


def test_bad_thread_counts_are_one_line_errors(tmp_path, capsys):
    assert main(["run", "--threads", "0", "--dry-run", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "bench run: error: --threads must be an integer >= 1, got 0"
    assert main(["run", "--dry-run", "--out", str(tmp_path / "r"), "run.threads=-2"]) == 2
    assert "run.threads" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_thread_count_is_not_part_of_the_config_hash():
    base = load_run_config(experiment_path("default"), {})
    assert load_run_config(experiment_path("default"), {"run.threads": 2}).config_hash() == base.config_hash()

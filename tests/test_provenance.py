"""bench run, bench perf and bench conformance describe code and machine through one module (bench.provenance)."""
from __future__ import annotations

from bench.perf import machine_info
from bench.provenance import cpu_name, git_commit, package_versions, versions


def test_perf_machine_info_agrees_with_run_provenance():
    m, g = machine_info("cpu"), git_commit()
    assert m["git_commit"] == (None if g["commit"] == "unknown" else g["commit"])
    assert m["git_dirty"] == bool(g["dirty"])
    assert m["cpu"] == cpu_name() and m["device"] == "cpu" and m["gpu"] is None
    assert m["versions"]["torch"] == package_versions()["torch"]


def test_missing_packages_are_none_for_perf_and_left_out_for_runs():
    assert versions(["torch", "no-such-package-h13"])["no-such-package-h13"] is None
    pv = package_versions(["torch", "no-such-package-h13"])
    assert "no-such-package-h13" not in pv and set(pv) == {"python", "torch"}

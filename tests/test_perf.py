"""Smoke tests of the `bench perf` machinery on tiny shapes: table structure, not timings."""
from __future__ import annotations

import json
import math

import pytest

from bench.cli import main
from bench.perf import SHAPES, evaluate_targets, run_perf, run_worker
from sftmix.errors import UserError


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf")
    # In-process workers keep this fast; the fresh-process path is covered by test_worker_in_fresh_process.
    rep = run_perf(quick=True, only=["step", "trl", "dynamics"], out=out, fresh_process=False, log=lambda m: None)
    return rep, out


def test_quick_report_files_and_tables(quick_report):
    rep, out = quick_report
    data = json.loads((out / "perf-cpu.json").read_text())
    md = (out / "perf-cpu.md").read_text()
    assert data["machine"]["device"] == "cpu" and data["machine"]["cores"] >= 1
    assert set(data["machine"]["versions"]) >= {"torch", "transformers", "trl"}
    assert data["machine"]["date"] and "git_commit" in data["machine"]
    steps = {**data["sections"]["step"], **data["sections"]["trl"]}
    assert set(steps) == {"ntp", "sftmix", "sftmix-naive", "trl"}
    for name, r in steps.items():
        assert "error" not in r, (name, r)
        assert r["step_s"] > 0 and len(r["step_times_s"]) == SHAPES["quick"]["steps"]
        assert r["loss_tokens"] > 0
        assert f"| {name} |" in md
    # Same model, data and λ seed: the lean and the naive Mixup give the same loss; TRL's NTP equals ours.
    assert steps["sftmix"]["last_loss"] == pytest.approx(steps["sftmix-naive"]["last_loss"], rel=1e-4)
    assert steps["trl"]["last_loss"] == pytest.approx(steps["ntp"]["last_loss"], rel=1e-4)
    assert steps["sftmix"]["last_loss"] != pytest.approx(steps["ntp"]["last_loss"], rel=1e-4)
    dyn = data["sections"]["dynamics"]
    assert set(dyn) == {"response_nll", "forward_logits", "forward_backbone"}
    assert len({r["tokens"] for r in dyn.values()}) == 1  # every pass sees the same tokens
    by_name = {t["target"]: t for t in data["targets"]}
    for name in ("sftmix step time / ntp (CPU time)", "sftmix peak memory / ntp",
                 "our ntp step time / TRL SFTTrainer (CPU time)",
                 "dynamics scoring / bare forward throughput"):
        assert by_name[name]["status"] in ("PASS", "MISS") and math.isfinite(by_name[name]["ratio"])
        # quick shapes are too small for memory deltas to be meaningful (they can even come out negative)
        assert "memory" in name or by_name[name]["ratio"] > 0
        assert f"| {name} |" in md
    assert by_name["finished-run re-run: 0 requests, < 5 s"]["status"] == "n/a"  # not asked for


def test_worker_in_fresh_process():
    r = run_worker({"kind": "step", "config": "sftmix", "device": "cpu", "shape": SHAPES["quick"]})
    assert "error" not in r, r
    assert r["config"] == "sftmix" and r["step_s"] > 0 and r["peak_mb"] > 0 and r["torch_threads"] >= 1


def test_target_evaluation():
    sections = {
        "step": {"ntp": {"step_s": 1.0, "peak_mb": 100.0, "step_peak_mb": 50.0},
                 "sftmix": {"step_s": 1.2, "peak_mb": 104.0, "step_peak_mb": 52.0},
                 "sftmix-naive": {"step_s": 1.1, "peak_mb": 200.0, "step_peak_mb": 150.0}},
        "trl": {"trl": {"error": "boom"}},
        "rerun": {"rerun": {"seconds": 1.5, "requests_model": 0, "requests_judge": 0}},
    }
    t = {x["target"]: x for x in evaluate_targets(sections)}
    assert t["sftmix step time / ntp"]["status"] == "MISS" and t["sftmix step time / ntp"]["ratio"] == pytest.approx(1.2)
    # With CPU times on both sides the step-time target uses them instead of wall time.
    sections["step"]["ntp"]["step_cpu_s"], sections["step"]["sftmix"]["step_cpu_s"] = 2.0, 2.05
    t = {x["target"]: x for x in evaluate_targets(sections)}
    assert t["sftmix step time / ntp (CPU time)"]["status"] == "PASS"
    assert t["sftmix step time / ntp (CPU time)"]["ratio"] == pytest.approx(1.025)
    assert t["sftmix peak memory / ntp"]["status"] == "PASS"
    assert t["sftmix lean / naive peak memory"]["ratio"] == pytest.approx(0.52)
    assert t["our ntp step time / TRL SFTTrainer"]["status"] == "n/a"
    assert t["dynamics scoring / bare forward throughput"]["status"] == "n/a"
    assert t["finished-run re-run: 0 requests, < 5 s"]["status"] == "PASS"
    sections["rerun"]["rerun"]["requests_judge"] = 3
    t = {x["target"]: x for x in evaluate_targets(sections)}
    assert t["finished-run re-run: 0 requests, < 5 s"]["status"] == "MISS"


def test_bad_section_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown perf section"):
        run_perf(quick=True, only=["steps"], out=tmp_path)
    assert main(["perf", "--quick", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown perf section" in capsys.readouterr().err

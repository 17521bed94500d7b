"""Smoke tests of the `bench perf` machinery on tiny shapes: table structure, not timings."""
from __future__ import annotations

import json
import math

import pytest

from bench.cli import main
from bench.perf import (
    PerfReport, SHAPES, WORKERS, _merge_rounds, evaluate_targets, render_markdown, run_perf, run_worker,
)
from bench.perf.contamination import synthetic
from core.errors import UserError


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf")
    # In-process workers keep this fast; the fresh-process path is covered by test_worker_in_fresh_process.
    rep = run_perf(quick=True, only=["step", "trl", "scaling", "dynamics", "scoring"], out=out, fresh_process=False,
                   log=lambda m: None)
    return rep, out


@pytest.mark.slow
def test_quick_report_files_and_tables(quick_report):
    rep, out = quick_report
    data = json.loads((out / "perf-cpu.json").read_text())
    md = (out / "perf-cpu.md").read_text()
    assert data["machine"]["device"] == "cpu" and data["machine"]["cores"] >= 1
    assert set(data["machine"]["versions"]) >= {"torch", "transformers", "trl"}
    assert data["machine"]["date"] and "git_commit" in data["machine"] and len(data["machine"]["load_avg"]) == 3
    steps = {**data["sections"]["step"], **data["sections"]["trl"]}
    assert set(steps) == {"ntp", "sftmix", "ntp-eager", "sftmix-eager", "sftmix-2pass", "sftmix-naive", "hf-loss",
                          "trl"}
    # quick shapes are far below the fused body's threshold: every loss ran the eager body, and says so
    assert all(steps[c]["loss_body"] == "eager" for c in ("ntp", "sftmix", "ntp-eager", "sftmix-eager"))
    for name, r in steps.items():
        assert "error" not in r, (name, r)
        assert r["step_s"] > 0 and len(r["step_times_s"]) == SHAPES["quick"]["steps"]
        assert r["loss_tokens"] > 0 and len(r["load_avg"]) == 2
        assert f"| {name} |" in md
    # Same model, data and λ seed: the one-pass, two-pass and naive Mixup give the same loss; TRL's and HF's NTP
    # equal ours.
    for other in ("sftmix-naive", "sftmix-2pass", "sftmix-eager"):
        assert steps["sftmix"]["last_loss"] == pytest.approx(steps[other]["last_loss"], rel=1e-4)
    for other in ("trl", "hf-loss"):
        assert steps[other]["last_loss"] == pytest.approx(steps["ntp"]["last_loss"], rel=1e-4)
    assert steps["sftmix"]["last_loss"] != pytest.approx(steps["ntp"]["last_loss"], rel=1e-4)
    sc = data["sections"]["scaling"]
    assert len(sc) == len(SHAPES["quick"]["scaling"])
    for label, res in sc.items():
        assert {"ntp", "sftmix", "hf-loss"} <= set(res) and label in md
        assert res["hf-loss"]["last_loss"] == pytest.approx(res["ntp"]["last_loss"], rel=1e-4)
    dyn = data["sections"]["dynamics"]
    assert {"ntp", "offline", "online"} <= set(dyn) and 0.0 <= dyn["agreement"] <= 1.0
    assert all(dyn[m]["seconds"] > 0 and "split" not in dyn[m] for m in ("ntp", "offline", "online"))
    scoring = data["sections"]["scoring"]
    assert len(scoring) == 2
    for res in scoring.values():
        assert {"response_nll", "forward_logits", "forward_backbone"} <= set(res)
        assert len({r["tokens"] for k, r in res.items() if not k.startswith("_")}) == 1  # same tokens everywhere
    by_name = {t["target"]: t for t in data["targets"]}
    for name in ("sftmix step time / ntp (CPU time)", "sftmix step peak memory / ntp",
                 "our ntp step time / TRL SFTTrainer (CPU time)",
                 "our ntp step time / HF model(labels=...) loss (CPU time)",
                 "online dynamics / one NTP epoch (wall)",
                 "sftmix/ntp step time at V=512 x T=64 (B=2) (CPU time)",
                 "ntp/HF loss step peak memory at V=512 x T=64 (B=2)"):
        assert by_name[name]["status"] in ("PASS", "MISS") and math.isfinite(by_name[name]["ratio"]), name
        assert by_name[name]["margin"] == pytest.approx(by_name[name]["ratio"] / float(
            by_name[name]["bound"].split()[-1]) - 1)
        assert f"| {name} |" in md
    # the "largest shape only" targets appear once, at the largest shape
    assert not any(t.startswith("ntp/HF loss step time at V=256") for t in by_name)


@pytest.mark.slow
def test_worker_in_fresh_process():
    r = run_worker({"kind": "step", "config": "sftmix", "device": "cpu", "shape": SHAPES["quick"], "threads": 1})
    assert "error" not in r, r
    assert r["config"] == "sftmix" and r["step_s"] > 0 and r["peak_mb"] > 0 and r["torch_threads"] == 1


@pytest.mark.slow
def test_contention_runs_the_default_as_a_user_would_beside_busy_processes():
    r = WORKERS["contention"]({"busy": 1, "shape": SHAPES["quick"], "device": "cpu"})
    assert r["busy"] == 1 and r["seconds"] > 0 and 0 < r["cpu_s"]
    # the run chose its own threads (no perf worker settings leaked into it), with a passive wait policy
    assert r["threads"] >= 1 and r["threads_source"] == "auto" and r["omp_wait_policy"] == "PASSIVE"
    assert r["load_seen"][1] >= 1  # it saw the spinning process beside it


def test_target_evaluation_and_margins():
    sections = {
        "step": {"ntp": {"step_s": 1.0, "peak_mb": 100.0, "step_peak_mb": 50.0},
                 "sftmix": {"step_s": 1.2, "peak_mb": 104.0, "step_peak_mb": 52.0},
                 "sftmix-2pass": {"step_s": 1.3, "peak_mb": 104.0, "step_peak_mb": 52.0},
                 "sftmix-naive": {"step_s": 1.1, "peak_mb": 200.0, "step_peak_mb": 150.0},
                 "hf-loss": {"step_s": 1.0, "peak_mb": 300.0, "step_peak_mb": 250.0}},
        "trl": {"trl": {"error": "boom"}},
        "rerun": {"rerun": {"seconds": 1.5, "requests_model": 0, "requests_judge": 0}},
    }
    t = {x["target"]: x for x in evaluate_targets(sections)}
    st = t["sftmix step time / ntp"]
    assert st["status"] == "MISS" and st["ratio"] == pytest.approx(1.2) and st["margin"] == pytest.approx(1.2 / 1.03 - 1)
    assert t["our ntp step time / HF model(labels=...) loss"]["status"] == "MISS"  # 1.0 > 0.9
    # With CPU times on both sides the step-time target uses them instead of wall time.
    sections["step"]["ntp"]["step_cpu_s"], sections["step"]["sftmix"]["step_cpu_s"] = 2.0, 2.05
    t = {x["target"]: x for x in evaluate_targets(sections)}
    assert t["sftmix step time / ntp (CPU time)"]["status"] == "PASS"
    assert t["sftmix step time / ntp (CPU time)"]["ratio"] == pytest.approx(1.025)
    assert t["sftmix step peak memory / ntp"]["status"] == "MISS"  # 52 / 50: the bound is 1.0
    sections["step"]["sftmix"]["step_peak_mb"] = 50.0
    t = {x["target"]: x for x in evaluate_targets(sections)}
    assert t["sftmix step peak memory / ntp"]["status"] == "PASS"
    # Pairs this table does not run (the GPU's -compile / -fast) are left out; the eager body is info only.
    assert not any("compile" in name or "fast" in name for name in t)
    sections["step"]["ntp-eager"] = {"step_s": 1.5, "step_cpu_s": 3.0}
    sections["step"]["sftmix-eager"] = {"step_s": 1.8, "step_cpu_s": 3.3}
    t = {x["target"]: x for x in evaluate_targets(sections)}
    info = t["sftmix step time, fused / eager loss body (CPU time)"]
    assert info["status"] == "info" and info["ratio"] == pytest.approx(2.05 / 3.3)
    assert t["sftmix-eager step time / ntp-eager (the eager body's Mixup cost) (CPU time)"]["ratio"] == pytest.approx(1.1)
    assert t["sftmix lean / naive step peak memory"]["ratio"] == pytest.approx(50 / 150)
    assert t["our ntp step time / TRL SFTTrainer"]["status"] == "n/a"
    assert t["finished-run re-run: 0 requests, < 5 s"]["status"] == "PASS"
    sections["rerun"]["rerun"]["requests_judge"] = 3
    t = {x["target"]: x for x in evaluate_targets(sections)}
    assert t["finished-run re-run: 0 requests, < 5 s"]["status"] == "MISS"
    # Scaling: every shape for sftmix/ntp, the largest only for ntp vs HF loss.
    row = lambda s, p: {"step_s": s, "step_peak_mb": p, "peak_mb": p}  # noqa: E731
    sections["scaling"] = {
        "small": {"_shape": {"vocab": 10, "seq": 4}, "ntp": row(1.0, 10), "sftmix": row(1.0, 10),
                  "hf-loss": row(2.0, 40)},
        "big": {"_shape": {"vocab": 20, "seq": 4}, "ntp": row(1.0, 10), "sftmix": row(1.1, 10),
                "hf-loss": row(1.0, 20)},
    }
    t = {x["target"]: x for x in evaluate_targets(sections)}
    assert t["sftmix/ntp step time at small"]["status"] == "PASS"
    assert t["sftmix/ntp step time at big"]["status"] == "MISS"
    assert t["ntp/HF loss step peak memory at big"]["ratio"] == pytest.approx(0.5)
    assert "ntp/HF loss step peak memory at small" not in t
    md = render_markdown(_fake_report({k: v for k, v in sections.items() if k != "rerun"}))
    assert "| sftmix/ntp step time at big | 1.100 | <= 1.03 | MISS | 6.8% over the bound |" in md
    # The embedded default beside busy processes, against its fair share of the cores.
    sections["contention"] = {"idle": {"busy": 0, "seconds": 10.0}, "busy": {"busy": 3, "seconds": 19.0},
                              "fair_share": 2.0}
    t = {x["target"]: x for x in evaluate_targets(sections)}
    ct = t["embedded default beside 3 busy processes / idle (wall; bound: the fair share)"]
    assert ct["ratio"] == pytest.approx(1.9) and ct["status"] == "PASS" and ct["bound"] == "<= 2"
    sections["contention"]["busy"]["seconds"] = 60.0
    assert {x["target"]: x for x in evaluate_targets(sections)}[ct["target"]]["status"] == "MISS"
    md = render_markdown(_fake_report({k: v for k, v in sections.items() if k != "rerun"}))
    assert "## The embedded default beside busy processes" in md and "6.00x the idle time" in md


def _fake_report(sections):
    machine = {"device": "cpu", "cpu": "x", "cores": 2, "affinity_cores": 2, "torch_threads": 1, "versions": {},
               "git_commit": "abc", "git_dirty": False, "date": "today", "load_avg": [1.0, 1.0, 1.0]}
    rep = PerfReport(machine, dict(SHAPES["quick"]), sections)
    rep.targets = evaluate_targets(sections)
    return rep


def test_rounds_merge_fastest_time_median_memory():
    rs = [{"step_s": 2.0, "step_cpu_s": 2.0, "peak_mb": 10.0, "step_peak_mb": 5.0, "static_mb": 1.0, "load_avg": [1, 2]},
          {"step_s": 1.0, "step_cpu_s": 1.5, "peak_mb": 30.0, "step_peak_mb": 7.0, "static_mb": 1.0, "load_avg": [3, 4]},
          {"error": "boom"}]
    m = _merge_rounds(rs)
    assert m["step_cpu_s"] == 1.5 and m["round_step_s"] == [2.0, 1.5]
    assert m["peak_mb"] == 20.0 and m["load_avg"] == [1, 4]
    assert _merge_rounds([{"error": "x"}]) == {"error": "x"}


def test_bad_section_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown perf section"):
        run_perf(quick=True, only=["steps"], out=tmp_path)
    assert main(["perf", "--quick", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown perf section" in capsys.readouterr().err


def test_contamination_case_finds_exactly_the_planted_overlaps(tmp_path):
    rows, items, planted = synthetic(600, 250, 150, seed=1)
    words = sum(len(t.split()) for r in rows for t in (r["instruction"], r["input"], r["output"])) / len(rows)
    assert 120 <= words <= 180 and len(items) == 250 and len(planted) == 3
    rep = run_perf(quick=True, only=["contamination"], out=tmp_path, fresh_process=False, log=lambda m: None)
    r = rep.sections["contamination"]["check"]
    q = SHAPES["quick"]
    assert (r["rows"], r["items"]) == (q["contam_rows"], q["contam_items"])
    assert r["exact"] and r["n_dirty"] == r["n_planted"] > 0 and r["seconds"] > 0 and r["peak_mb"] >= 0
    (t,) = [t for t in rep.targets if t["target"].startswith("contamination check")]
    assert t["bound"] == "<= 60 s" and t["status"] in ("PASS", "MISS") and "found exactly" in t["value"]
    md = (tmp_path / "perf-cpu.md").read_text()
    assert "## Contamination check" in md and "exactly the planted ones" in md

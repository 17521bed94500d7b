"""The reference run stands in for NTP when it trains exactly NTP: same weights as a separate NTP training, adopted
instead of trained again, and the plan says so; anything that makes them differ trains NTP as before."""
import json

import pytest
import torch

from bench.config import experiment_path, load_run_config
from bench.pipeline import Runner
from sftmix.recipe import finetune, reference_stands_in, run_dynamics
from sftmix.variants import get_variant
from support import bench
from test_pipeline import SMALL, run_args
from test_recipe import tiny_cfg, weights


def test_which_variants_the_reference_run_stands_in_for():
    cfg = tiny_cfg("reference_epochs=2")  # num_train_epochs=2 in tiny_cfg
    assert reference_stands_in(get_variant("ntp"), cfg)
    assert not reference_stands_in(get_variant("sftmix"), cfg)
    assert not reference_stands_in(get_variant("irdro"), cfg)
    assert not reference_stands_in(get_variant("ntp", reference_model="other"), cfg)
    assert not reference_stands_in(get_variant("ntp"), tiny_cfg("reference_epochs=1"))  # a shorter reference run
    assert not reference_stands_in(get_variant("ntp"), tiny_cfg("reference_epochs=2", "dynamics.online=true"))


@pytest.mark.slow
def test_adopted_reference_model_equals_a_separate_ntp_training(tmp_path, tiny_model_dir):
    cfg = tiny_cfg("reference_epochs=2", "save_steps=3")  # NTP saves checkpoints, the reference run does not
    ntp = get_variant("ntp")
    alone = finetune(ntp, cfg, tmp_path / "alone")
    run_dynamics(cfg, tmp_path / "dyn", keep_model=True)
    assert (tmp_path / "dyn" / "confidence.parquet").is_file() and (tmp_path / "dyn" / "model").is_dir()
    reused = finetune(ntp, cfg, tmp_path / "reused", reuse=tmp_path / "dyn")
    assert reused.reused and not (tmp_path / "reused" / "checkpoints").exists()  # nothing was trained
    assert (tmp_path / "reused" / "train_log.jsonl").read_text() == (tmp_path / "dyn" / "train_log.jsonl").read_text()
    a, b = weights(alone.model_dir), weights(reused.model_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rec = json.loads((tmp_path / "reused" / "train.json").read_text())
    assert rec["reused_from"] == str(tmp_path / "dyn") and rec["variant"]["name"] == "ntp"
    losses = [h["loss"] for h in rec["log_history"] if "loss" in h]
    assert losses == [h["loss"] for h in alone.log_history if "loss" in h]
    # another learning rate: the reference run no longer trained this config, so NTP trains
    other = finetune(ntp, tiny_cfg("reference_epochs=2", "learning_rate=1e-3"), tmp_path / "other",
                     reuse=tmp_path / "dyn")
    assert not other.reused and (tmp_path / "other" / "checkpoints").exists()


@pytest.mark.slow
def test_bench_run_plans_and_reuses_the_reference_run_as_ntp(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    rc, plan, err = bench(*run_args(out, "--dry-run", "reference_epochs=1"))  # SMALL: num_train_epochs=1
    assert rc == 0, err[-2000:]
    assert "train/ntp  (the reference run dynamics trains exactly this: its model is reused, no training)" in plan
    assert "train/sftmix  (" not in plan
    rc, _, err = bench(*run_args(out, "reference_epochs=1"))
    assert rc == 0, err[-2000:]
    rec = json.loads((out / "variants" / "ntp" / "train.json").read_text())
    assert rec["reused_from"] == str(out / "dynamics") and not (out / "variants" / "ntp" / "checkpoints").exists()
    assert (out / "scores" / "ntp" / "toy_mcq.json").is_file()
    # the default config (3 epochs against a 1-epoch reference run) plans NTP's own training
    rc, plan, _ = bench("run", "--config", "ci", "--out", str(tmp_path / "other"), "--dry-run")
    assert rc == 0 and "reused" not in plan


def test_a_reused_ntp_training_waits_for_the_reference_run(tmp_path):
    """Executors run a stage as soon as its dependencies are done: NTP's adopted model comes from the dynamics
    stage, so that stage is its dependency (else a worker would train NTP itself, racing the reference run)."""
    overrides = dict(o.split("=", 1) for o in SMALL + ["reference_epochs=1"])
    cfg = load_run_config(experiment_path("ci"), {"run.out": str(tmp_path / "run"), **overrides})
    r = Runner(cfg, cfg.run.out, progress=False)
    assert r.stage("train/ntp").deps == ("dynamics",) and r.stage("train/ntp").note
    assert r.stage("train/sftmix").deps == ("dynamics",)
    plain = Runner(load_run_config(experiment_path("ci"), {"run.out": str(tmp_path / "o")}), tmp_path / "o")
    assert plain.stage("train/ntp").deps == () and not plain.stage("train/ntp").note

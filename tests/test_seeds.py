"""Seeds as an axis of `bench run` (run.seeds) on BIG-bench fixture tasks: per-seed stages and folders, every
variant of a seed trained with that seed, and tables with the mean over seeds, per-seed Δ and a two-level CI."""
import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest

from bench.config import RunConfig, load_run_config
from bench.pipeline import Runner
from bench.rundir import RunDir, read_jsonl
from core.errors import UserError
from core.io import hash_obj
from sftmix import bigbench
from support import bench
from test_bigbench import mc_examples, write_task

STAGE = re.compile(r"\[\d+/\d+\] (?:run|redo|resume) ([\w/.:@-]+)$", re.M)


def ran_stages(stderr: str) -> list[str]:
    return STAGE.findall(stderr)

SEEDS = (0, 1)
ARGS = ["max_examples=24", "num_train_epochs=1", "num_checkpoints=2", "global_batch_size=8", "save_steps=0",
        "data=bigbench:navigate?n=24", "tasks=bigbench:navigate,hhh_alignment", "seeds=0,1", "limit=12"]


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bb")
    write_task(root, "navigate", mc_examples(120))
    hhh = root / "hhh_alignment"
    write_task(root, "hhh_alignment", [])
    write_task(hhh, "helpful", [{"input": f"Human: help {i}\n\nAssistant:",
                                 "target_scores": {f"sure {i}": 1, f"no {i}": 0}} for i in range(8)])
    mp = pytest.MonkeyPatch()
    mp.setenv(bigbench.ENV_DIR, str(root))
    out = tmp_path_factory.mktemp("seeded") / "run"
    rc, stdout, stderr = bench("run", "--config", "ci", "--out", str(out), *ARGS)
    yield out, rc, stdout, stderr
    mp.undo()


@pytest.mark.slow
def test_each_seed_trains_every_variant_with_that_seed(seeded_run):
    out, rc, stdout, stderr = seeded_run
    assert rc == 0, stderr
    stages = ran_stages(stderr)
    for s in SEEDS:
        assert f"dynamics@s{s}" in stages
        for v in ("ntp", "sftmix"):
            assert f"train/{v}@s{s}" in stages and f"score/{v}@s{s}/bigbench:navigate" in stages
            rec = json.loads((out / "variants" / f"{v}@s{s}" / "train.json").read_text())
            assert rec["config"]["train"]["seed"] == s
            assert json.loads((out / "scores" / f"{v}@s{s}" / "hhh_alignment.json").read_text())["seed"] == s
        assert (out / f"dynamics@s{s}" / "confidence.parquet").exists()
    assert not (out / "variants" / "ntp").exists() and not (out / "dynamics").exists()
    # a re-run does nothing
    rc, _, stderr = bench("run", "--config", "ci", "--out", str(out), *ARGS)
    assert rc == 0 and ran_stages(stderr) == []


@pytest.mark.slow
def test_table_has_the_mean_over_seeds_and_per_seed_deltas(seeded_run):
    out = seeded_run[0]
    acc = {(v, s): json.loads((out / "scores" / f"{v}@s{s}" / "bigbench:navigate.json").read_text())["metrics"]["acc"]
           for v in ("ntp", "sftmix") for s in SEEDS}
    rows = list(csv.DictReader((out / "tables" / "default.csv").open()))
    assert [r["Method"] for r in rows] == ["NTP", "SFTMix"]
    col = next(c for c in rows[0] if c.startswith("bigbench:navigate") and not c.endswith(("Δ", "lo", "hi", "n", "seed")))
    ntp, mix = rows
    assert float(ntp[col]) == pytest.approx(100 * (acc["ntp", 0] + acc["ntp", 1]) / 2)
    per_seed = {s: 100 * (acc["sftmix", s] - acc["ntp", s]) for s in SEEDS}
    assert mix[f"{col} Δ per seed"] == ";".join(f"s{s}:{per_seed[s]:+.6g}" for s in SEEDS)
    assert float(mix[f"{col} Δ"]) == pytest.approx(sum(per_seed.values()) / 2)
    lo, hi = float(mix[f"{col} Δ lo"]), float(mix[f"{col} Δ hi"])
    assert lo <= float(mix[f"{col} Δ"]) <= hi and int(mix[f"{col} n"]) == 24  # 12 items x 2 seeds
    md = (out / "tables" / "default.md").read_text()
    assert "two-level paired bootstrap" in md and "seeds" in md


def test_seeds_are_validated_and_absent_seeds_keep_the_old_config_hash():
    cfg = load_run_config(None, {})
    d = cfg.to_dict()
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("out", "layout", "seeds", "threads", "num_nodes")}
    d["judge"] = {k: v for k, v in d["judge"].items() if k not in ("concurrency", "timeout", "max_retries")
                  and k not in ("mode", "swap", "alpaca_eval_prompt")}  # issue 19's options, at their defaults
    del d["executor"]  # where stages run is never hashed
    d["model"] = {k: v for k, v in d["model"].items() if k != "trainable_layers"}  # unset: left out too
    d["train"]["mixup_reduction"] = "pair"  # a removed option, hashed at its old value (sftmix.keyschema.REMOVED)
    del d["contamination"]  # an analysis of the data, not of the results: never hashed
    del d["dynamics"]["split"], d["generation"]["share_prefix"]  # added, left out at default (keyschema.ADDED)
    assert cfg.config_hash() == hash_obj(d) and RunConfig().run.seeds is None
    assert load_run_config(None, {"contamination.n": 8, "contamination.enabled": False}).config_hash() == \
        cfg.config_hash()
    assert load_run_config(None, {"dynamics.split": "per_source"}).config_hash() != cfg.config_hash()
    assert load_run_config(None, {"share_prefix": "true"}).config_hash() != cfg.config_hash()
    assert load_run_config(None, {"seeds": "0"}).config_hash() != cfg.config_hash()
    assert load_run_config(None, {"trainable_layers": 1}).config_hash() != cfg.config_hash()
    assert load_run_config(None, {"seeds": 3}).run.seeds == [3]
    assert load_run_config(None, {"seeds": "0,1,2"}).run.seeds == [0, 1, 2]
    with pytest.raises(UserError, match="run.seeds"):
        load_run_config(None, {"seeds": "0,-1"})

    with pytest.raises(UserError, match="distinct seeds"):
        Runner(load_run_config(None, {"seeds": "1,1"}), "unused")


def test_study_report_reproduces_the_per_seed_deltas_and_writes_its_files(seeded_run, tmp_path):
    spec = importlib.util.spec_from_file_location("study_report", Path(__file__).parents[1] / "scripts" / "study_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    out = seeded_run[0]
    dest = tmp_path / "report"
    assert report.main([str(out), str(dest), "--group", "all=bigbench:navigate,hhh_alignment",
                        "--command", "bench run ...", "--near-duplicates"]) == 0
    acc = {(v, s, t): json.loads((out / "scores" / f"{v}@s{s}" / f"{t}.json").read_text())["metrics"]["acc"]
           for v in ("ntp", "sftmix") for s in SEEDS for t in ("bigbench:navigate", "hhh_alignment")}
    rows = {r["task"]: r for r in csv.DictReader((dest / "table.csv").open())}
    nav = rows["bigbench:navigate"]
    per_seed = [100 * (acc["sftmix", s, "bigbench:navigate"] - acc["ntp", s, "bigbench:navigate"]) for s in SEEDS]
    assert float(nav["delta"]) == pytest.approx(sum(per_seed) / 2, abs=1e-3)
    assert float(nav["ci_lo"]) <= float(nav["delta"]) <= float(nav["ci_hi"]) and nav["n_seeds"] == "2"
    # the pooled row weighs items: 12 navigate + 8 hhh per seed
    assert rows["all"]["n_items_per_seed"] == "20"
    for f in ("table.md", "deltas.png", "confidence.png", "provenance.json", "command.txt"):
        assert (dest / f).exists(), f
    assert json.loads((dest / "provenance.json").read_text())["report"]["baseline"] == "ntp"
    # answer distributions: each variant's picks over seeds and items, beside the gold answers
    dist = json.loads((dest / "answers.json").read_text())["bigbench:navigate"]
    recs = [r for s in SEEDS for r in read_jsonl(RunDir(out).generations(f"sftmix@s{s}", "bigbench:navigate"))]
    assert dist["n"] == len(recs) == 24
    picks = [r["continuations"][r["pred"]] for r in recs]
    assert dist["sftmix"] == {o: pytest.approx(picks.count(o) / 24) for o in set(picks)}
    gold = [r["continuations"][r["answer"]] for r in recs]
    assert dist["gold"] == {o: pytest.approx(gold.count(o) / 24) for o in set(gold)}
    assert "| gold |" in (dest / "answers.md").read_text()
    assert "| navigate | 48 |" in (dest / "confidence-by-source.md").read_text()  # 24 rows x 2 seeds
    # the eval bucket holds no near-duplicate of a training row
    assert "| bigbench:navigate | 12 | 0 |" in (dest / "near-duplicates.md").read_text()

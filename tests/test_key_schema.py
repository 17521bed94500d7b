"""Config hashes and stage keys, pinned across the config refactor (issue 24: pydantic models, one key schema).

The values below were computed with the code *before* the refactor (branch merge-18-23, 6dbb4f1), so that this
test proves the move of every compatibility rule into :mod:`sftmix.keyschema` neutral: a changed config hash moves a
finished run's results folder check, a changed stage key redoes that stage. Each compatibility rule is pinned both
ways: at its default (left out, the old hash) and away from it (in the hash). If a change is intended, re-pin and
say why in the commit.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import EXPERIMENTS, experiment_path, load_run_config
from bench.pipeline import Runner
from core.errors import UserError
from core.io import hash_obj

# bench/experiments/<name>.yaml -> (config hash, hash of its {stage name: stage key})
EXPERIMENT_KEYS = {
    "ci": ("e3ff88e05e6ba8b5", "de6dc509427d692b"),
    "default": ("500f6e43015c413a", "bcdbb801a31eb887"),
    "paper-alpha-mu": ("ed34b34b9aa99b8c", "9fa70f4572129b37"),
    "paper-health-llama": ("d41de9aff8e9ebdb", "9dcd2ba70dac1e3b"),
    "paper-health-mistral": ("f6451965902b466e", "812332015ce22528"),
    "paper-main-llama": ("5c01cfe7fa8484ea", "2997c357305f44ae"),
    "paper-main-mistral": ("240243efdb891a09", "a9bdebff35cb7c96"),
    "paper-main-qwen": ("ec1b181c6806cd96", "78d3cfb79492c6bc"),
    "paper-mixup-role": ("13060f2419e9aad3", "7729ebb3f399637f"),
    "paper-pairing": ("5408496fea445039", "ba35e1e5aa84fadd"),
    "paper-weak-to-strong": ("23a4fb7e8713266b", "3ac552c48bd91f12"),
    "smol": ("680c4666222a2d24", "504c7fba6ad604b1"),
    "study-bbh": ("6ea86e8975156290", "e60486a583f5c715"),
    "study-bigbench": ("a5df9770a0d4700c", "c7852d7a06a890de"),
}

# the ci experiment with one override -> (config hash, hash of its stage keys); None: not computed (needs a file)
CI_OVERRIDES = [
    # never hashed: where results go, how stages run, how the judge is called, the contamination check's settings
    # (its own stage key has them)
    ({"run.out": "elsewhere"}, "e3ff88e05e6ba8b5", "de6dc509427d692b"),
    ({"threads": 3}, "e3ff88e05e6ba8b5", "de6dc509427d692b"),
    ({"layout": "main"}, "e3ff88e05e6ba8b5", "de6dc509427d692b"),
    ({"judge.concurrency": 3}, "e3ff88e05e6ba8b5", "de6dc509427d692b"),
    ({"judge.timeout": 5, "judge.max_retries": 1}, "e3ff88e05e6ba8b5", None),
    ({"executor.kind": "processes"}, "e3ff88e05e6ba8b5", "de6dc509427d692b"),
    ({"contamination.n": 8}, "e3ff88e05e6ba8b5", "639ee2f8f4c5d209"),
    # removed: hashed at its old value whatever the config says (it is ignored, with a warning)
    ({"train.mixup_reduction": "pair"}, "e3ff88e05e6ba8b5", None),
    # added later: left out at their default (the rows above), hashed away from it
    ({"seeds": "1,2"}, "aa15d1935079291a", "752c528ab03bee63"),
    ({"num_nodes": 2}, "40004d9965a7edbf", "de6dc509427d692b"),
    ({"judge.swap": True}, "7c55942dc01db5f5", "de6dc509427d692b"),
    ({"judge.mode": "pairwise"}, "4cf123e5401c41ed", "de6dc509427d692b"),
    ({"judge.alpaca_eval_prompt": "x.txt"}, "b2bd7068866d5eb7", None),
    ({"trainable_layers": 1}, "0c3bf71787e046a6", "2d9a27db038c2abe"),
    ({"dynamics.split": "per_source"}, "527a071561e0e43e", "b415f1408c304600"),
    ({"share_prefix": True}, "a92dcfb1d67a99ef", "1fea75161d6d6e3b"),
    ({"limit_mode": "spread"}, "8931985b94d5b391", "5b1e57ac5ee42fb3"),
    # variants with options added later (irdro_tau, confidence_split) beside ones without
    ({"variants": "ntp,sftmix,irdro,sftmix-stratified"}, "5987a564439f3ccb", "3daa26663df407ef"),
]


def _stage_keys(cfg) -> str:
    return hash_obj({s.name: s.key for s in Runner(cfg, cfg.run.out, progress=False).stages})


def test_every_bundled_experiment_is_pinned():
    assert sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")) == sorted(EXPERIMENT_KEYS)


@pytest.mark.parametrize("name", sorted(EXPERIMENT_KEYS))
def test_experiment_config_hash_and_stage_keys(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("BBH_DIR", raising=False)  # the study's training data identity: pinned without a local copy
    config_hash, keys = EXPERIMENT_KEYS[name]
    cfg = load_run_config(experiment_path(name), {"run.out": str(tmp_path / name)})
    assert cfg.config_hash() == config_hash
    try:
        got = _stage_keys(cfg)
    except UserError as e:  # a judge prompt source this machine lacks (the config hash above is still checked)
        pytest.skip(f"{name}: stage graph needs what this machine lacks: {e}")
    assert got == keys


@pytest.mark.parametrize("overrides,config_hash,keys", CI_OVERRIDES, ids=[str(o) for o, _, _ in CI_OVERRIDES])
def test_ci_compatibility_rules_both_ways(overrides, config_hash, keys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_run_config(experiment_path("ci"), {"run.out": str(tmp_path / "run"), **overrides})
    assert cfg.config_hash() == config_hash
    if keys is not None:
        assert _stage_keys(cfg) == keys


# judged stages (MT-Bench with an LLM judge, single and pairwise, swap on and off): computed before the refactor too
# (the config hash is not pinned here: it holds judge.prompts, a path that differs from machine to machine)
JUDGED_KEYS = {("pairwise", False): "30daf21acda40968", ("pairwise", True): "30daf21acda40968",
               ("single", False): "58ae48132db0c0ce", ("single", True): "58ae48132db0c0ce"}


@pytest.mark.parametrize("mode,swap", sorted(JUDGED_KEYS))
def test_judged_stage_keys(mode, swap, tmp_path, monkeypatch):
    prompts = Path(__file__).resolve().parents[2] / "shared" / "peer" / "fastchat" / "judge_prompts.jsonl"
    if not prompts.is_file():
        pytest.skip(f"FastChat's judge prompts not found at {prompts}")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("BBH_DIR", raising=False)
    cfg = load_run_config(experiment_path("ci"), {
        "run.out": str(tmp_path / "r"), "run.tasks": ["mt_bench", "toy_open"], "run.limit": 3,
        "judge.prompts": str(prompts), "judge.model": "m", "judge.mode": mode, "judge.swap": swap})
    assert _stage_keys(cfg) == JUDGED_KEYS[mode, swap]

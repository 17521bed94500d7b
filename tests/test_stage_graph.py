"""The stage graph and its keys, pinned: a refactor of bench.pipeline must leave every stage's name, order and key
as it was (a changed key redoes that stage in every finished run). The values below were computed before the
pipeline was split into modules, then re-pinned once when the ci experiment itself changed (more data and steps,
limit 40, easier toy tasks and so a new tiny tokenizer: issue 13's regression that can fail). If a key change is
intended, update them and say why in the commit."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import experiment_path, load_run_config
from bench.judge.ledger import rough_estimate
from bench.pipeline import Runner, plan
from bench.pipeline.graph import n_generations, n_judge_calls
from bench.pipeline.keys import score_key
from core.errors import UserError

CI_KEYS = {
    "contamination": "c24fb0f17ad8827d",  # added first (issue 22); every other key is unchanged
    "dynamics": "549e2e2abfa37741",
    "train/ntp": "79c34df9212ba2cf", "train/sftmix": "69441650674e6d09",
    "generate/ntp/toy_open": "bf942facda36e6fb", "generate/ntp/toy_mcq": "0f88e0374d4bc266",
    "generate/ntp/toy_exact": "9480633e4b7554a2", "generate/sftmix/toy_open": "3c8f52bca6ca04eb",
    "generate/sftmix/toy_mcq": "94386d72cb662589", "generate/sftmix/toy_exact": "267a3199c08624b1",
    "score/ntp/toy_open": "75f9a4fe7b1b7c21", "score/ntp/toy_mcq": "198fb2e18980dedd",
    "score/ntp/toy_exact": "d5ed7ccea75521e3", "score/sftmix/toy_open": "3db7c7ffadccccb7",
    "score/sftmix/toy_mcq": "fb35aad14c7d24e5", "score/sftmix/toy_exact": "1536602cfa415f3d",
}
SEEDS_KEYS = {  # run.seeds = [1, 2]: a few, and the order of all
    "dynamics@s1": "6b53039e0e5995d2", "dynamics@s2": "4ea67642da2e4608",
    "train/sftmix@s2": "dc938d4ac0518577", "generate/ntp@s1/toy_open": "061d52f283a80a14",
    "score/sftmix@s2/toy_exact": "486ceb887b23b945",
}


def runner(tmp_path, **overrides) -> Runner:
    cfg = load_run_config(experiment_path("ci"), {"run.out": str(tmp_path / "run"), **overrides})
    return Runner(cfg, cfg.run.out, progress=False)


def test_ci_stage_order_keys_and_counts(tmp_path):
    r = runner(tmp_path)
    assert [s.name for s in r.stages] == list(CI_KEYS)
    assert {s.name: s.key for s in r.stages} == CI_KEYS
    counts = {s.name: (n_generations(r.ctx, s), n_judge_calls(r.ctx, s)) for s in r.stages
              if n_generations(r.ctx, s) or n_judge_calls(r.ctx, s)}
    assert counts == {**{f"generate/{v}/{t}": (n, 0) for v in ("ntp", "sftmix")
                         for t, n in (("toy_open", 53), ("toy_mcq", 40), ("toy_exact", 40))},
                      "score/ntp/toy_open": (0, 53), "score/sftmix/toy_open": (0, 53)}
    out = tmp_path / "run"
    by_name = {s.name: s for s in r.stages}
    assert by_name["train/sftmix"].outputs == (out / "variants" / "sftmix" / "model",)
    assert by_name["generate/ntp/toy_mcq"].outputs == (out / "generations" / "ntp" / "toy_mcq.jsonl",)
    assert by_name["score/ntp/toy_mcq"].outputs == (out / "scores" / "ntp" / "toy_mcq.json",)
    assert by_name["dynamics"].clean == (out / "dynamics",)
    reports = tuple(out / "contamination" / f"{t}.json" for t in ("toy_open", "toy_mcq", "toy_exact"))
    c = by_name["contamination"]
    assert (c.kind, c.deps, c.outputs, c.clean) == ("contamination", (), reports + (out / "contamination.json",),
                                                    (out / "contamination",))
    assert c.resources.gpus == 0 and n_generations(r.ctx, c) == n_judge_calls(r.ctx, c) == 0


def test_contamination_key_follows_the_data_and_settings_only(tmp_path):
    base = {s.name: s.key for s in runner(tmp_path).stages}
    for override in ({"contamination.n": 8}, {"contamination.method": "minhash"}, {"data.max_examples": 100},
                     {"run.limit": 5}, {"run.data_paths": {"toy_mcq": str(tmp_path / "items.jsonl")}}):
        keys = {s.name: s.key for s in runner(tmp_path, **override).stages}
        assert keys["contamination"] != base["contamination"], override
        if "contamination.n" in override or "contamination.method" in override:  # nothing else moves
            assert {k: v for k, v in keys.items() if k != "contamination"} == \
                {k: v for k, v in base.items() if k != "contamination"}
    (tmp_path / "items.jsonl").write_text('{"id": 1}\n')
    one = runner(tmp_path, **{"run.data_paths": {"toy_mcq": str(tmp_path / "items.jsonl")}}).stages[0].key
    (tmp_path / "items.jsonl").write_text('{"id": 2}\n')  # the local file's content, not only its name
    assert runner(tmp_path, **{"run.data_paths": {"toy_mcq": str(tmp_path / "items.jsonl")}}).stages[0].key != one
    keys = {s.name: s.key for s in runner(tmp_path, **{"train.learning_rate": 1e-3}).stages}
    assert keys["contamination"] == base["contamination"] and keys["train/ntp"] != base["train/ntp"]
    assert "contamination" not in [s.name for s in runner(tmp_path, **{"contamination.enabled": False}).stages]


def test_seeded_stage_order_and_keys(tmp_path):
    r = runner(tmp_path, **{"run.seeds": [1, 2]})
    names = [s.name for s in r.stages]
    assert names[:7] == ["contamination", "dynamics@s1", "dynamics@s2", "train/ntp@s1", "train/sftmix@s1",
                         "train/ntp@s2", "train/sftmix@s2"]
    assert len(names) == 31 and names[7] == "generate/ntp@s1/toy_open" and names[-1] == "score/sftmix@s2/toy_exact"
    keys = {s.name: s.key for s in r.stages}
    assert {n: keys[n] for n in SEEDS_KEYS} == SEEDS_KEYS


@pytest.mark.parametrize("prices", [{"gpt-4o": {"input": 2.5, "output": 10.0}}, {}])
def test_plan_cost_is_the_ledgers(tmp_path, prices):
    r = runner(tmp_path, **{"judge.model": "gpt-4o", "judge.prices": prices})
    text = plan(r.cfg, r)
    n_calls = sum(n_judge_calls(r.ctx, s) for s in r.stages)
    assert n_calls == 106  # 53 toy_open turns x 2 variants
    caps = [r.ctx.judge_config(t).max_tokens for t in r.ctx.tasks if r.ctx.scorer(t).judged]
    est = rough_estimate(n_calls, "gpt-4o", prices, answer_tokens=r.cfg.generation.max_new_tokens,
                         max_completion_tokens=max(caps))
    line = next(ln for ln in text.splitlines() if ln.startswith("judge calls:"))
    assert line.startswith(f"judge calls: {n_calls} to gpt-4o at OpenAI; ~{est['prompt_tokens']:,} prompt + "
                           f"~{est['completion_tokens']:,} completion tokens (rough); ")
    if prices:
        assert est["cost_usd"] > 0 and line.endswith(f"cost ~${est['cost_usd']:,.2f}")
        assert line.endswith("cost ~$0.43")  # the figure the plan showed before planning used the ledger
    else:
        assert est["cost_usd"] is None and line.endswith("cost: no price for this model in judge.prices")


def test_pairwise_score_stage_keys_on_ntps_generations(tmp_path, monkeypatch):
    """judge.mode: pairwise (issue 19): sftmix's MT-Bench score stage reads NTP's generations, so it depends on
    NTP's generate stage and its key includes theirs; NTP's own stage makes no judge call; the option at its default
    changes no config hash."""
    prompts = Path(__file__).resolve().parents[2] / "shared" / "peer" / "fastchat" / "judge_prompts.jsonl"
    if not prompts.is_file():
        pytest.skip(f"FastChat's judge prompts not found at {prompts}")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    base = {"run.tasks": ["mt_bench"], "run.limit": 3, "judge.prompts": str(prompts), "judge.model": "m"}
    r = runner(tmp_path, **base, **{"judge.mode": "pairwise"})
    single = runner(tmp_path, **base)
    by = {s.name: s for s in r.stages}
    assert by["score/sftmix/mt_bench"].deps == ("generate/sftmix/mt_bench", "generate/ntp/mt_bench")
    assert by["score/ntp/mt_bench"].deps == ("generate/ntp/mt_bench",)
    assert n_judge_calls(r.ctx, by["score/ntp/mt_bench"]) == 0
    assert n_judge_calls(r.ctx, by["score/sftmix/mt_bench"]) == 2 * 3 * 2  # 3 questions, 2 turns, 2 orders
    assert {s.name: s.key for s in single.stages}["score/sftmix/mt_bench"] != by["score/sftmix/mt_bench"].key
    assert r.cfg.config_hash() != single.cfg.config_hash()
    assert single.cfg.config_hash() == runner(tmp_path, **base, **{"judge.swap": False}).cfg.config_hash()

    task = r.ctx.tasks[0]
    gen = by["generate/sftmix/mt_bench"].key
    assert score_key(r.ctx, gen, task, "a") != score_key(r.ctx, gen, task, "b")  # NTP's generations changed
    assert by["score/sftmix/mt_bench"].key == score_key(r.ctx, gen, task, by["generate/ntp/mt_bench"].key)
    with pytest.raises(UserError, match="add ntp to run.variants"):
        runner(tmp_path, **base, **{"judge.mode": "pairwise", "run.variants": ["sftmix", "sftmix-random"]})

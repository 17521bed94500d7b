"""The stage graph and its keys, pinned: a refactor of bench.pipeline must leave every stage's name, order and key
as it was (a changed key redoes that stage in every finished run). The values below were computed before the
pipeline was split into modules, then re-pinned once when the ci experiment itself changed (more data and steps,
limit 40, easier toy tasks and so a new tiny tokenizer: issue 13's regression that can fail). If a key change is
intended, update them and say why in the commit."""
from __future__ import annotations

import pytest

from bench.config import experiment_path, load_run_config
from bench.pipeline import Runner, plan
from bench.pipeline.graph import n_generations, n_judge_calls

CI_KEYS = {
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


def test_seeded_stage_order_and_keys(tmp_path):
    r = runner(tmp_path, **{"run.seeds": [1, 2]})
    names = [s.name for s in r.stages]
    assert names[:6] == ["dynamics@s1", "dynamics@s2", "train/ntp@s1", "train/sftmix@s1", "train/ntp@s2",
                         "train/sftmix@s2"]
    assert len(names) == 30 and names[6] == "generate/ntp@s1/toy_open" and names[-1] == "score/sftmix@s2/toy_exact"
    keys = {s.name: s.key for s in r.stages}
    assert {n: keys[n] for n in SEEDS_KEYS} == SEEDS_KEYS


@pytest.mark.parametrize("prices", [{"gpt-4o": {"input": 2.5, "output": 10.0}}, {}])
def test_plan_cost_is_the_ledgers(tmp_path, prices):
    from bench.judge.ledger import rough_estimate

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

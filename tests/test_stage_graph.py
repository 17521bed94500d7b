"""The stage graph and its keys, pinned: a refactor of bench.pipeline must leave every stage's name, order and key
as it was (a changed key redoes that stage in every finished run). The values below were computed before the
pipeline was split into modules. If a key change is intended, update them and say why in the commit."""
from __future__ import annotations

import pytest

from bench.config import experiment_path, load_run_config
from bench.pipeline import Runner, plan

CI_KEYS = {
    "dynamics": "ab01f41c36e28095",
    "train/ntp": "379b0fe5389b62aa", "train/sftmix": "838bcc5c133e5c90",
    "generate/ntp/toy_open": "91772d15ce6dc203", "generate/ntp/toy_mcq": "b0b13aac37f2f85f",
    "generate/ntp/toy_exact": "5fba174c9c0d9f1d", "generate/sftmix/toy_open": "7e8b4ab9b72c1b2d",
    "generate/sftmix/toy_mcq": "c62086d247591f9d", "generate/sftmix/toy_exact": "ac10373dc22034a3",
    "score/ntp/toy_open": "4207fd3abbf28cbe", "score/ntp/toy_mcq": "d7a74916b9e1ea42",
    "score/ntp/toy_exact": "24360341569edc05", "score/sftmix/toy_open": "cc19bad20ee15ef6",
    "score/sftmix/toy_mcq": "e3ef1209bb44117d", "score/sftmix/toy_exact": "a352ac764d9ecac5",
}
SEEDS_KEYS = {  # run.seeds = [1, 2]: a few, and the order of all
    "dynamics@s1": "06317fad6fbbf203", "dynamics@s2": "df01d08b250fc2b1",
    "train/sftmix@s2": "c1650888cae0804f", "generate/ntp@s1/toy_open": "670440477a3fd2dd",
    "score/sftmix@s2/toy_exact": "918f8083ae54d97d",
}


def runner(tmp_path, **overrides) -> Runner:
    cfg = load_run_config(experiment_path("ci"), {"run.out": str(tmp_path / "run"), **overrides})
    return Runner(cfg, cfg.run.out, progress=False)


def test_ci_stage_order_keys_and_counts(tmp_path):
    r = runner(tmp_path)
    assert [s.name for s in r.stages] == list(CI_KEYS)
    assert {s.name: s.key for s in r.stages} == CI_KEYS
    counts = {s.name: (s.n_generations, s.n_judge_calls) for s in r.stages if s.n_generations or s.n_judge_calls}
    assert counts == {**{f"generate/{v}/{t}": (n, 0) for v in ("ntp", "sftmix")
                         for t, n in (("toy_open", 27), ("toy_mcq", 20), ("toy_exact", 20))},
                      "score/ntp/toy_open": (0, 27), "score/sftmix/toy_open": (0, 27)}
    out = tmp_path / "run"
    by_name = {s.name: s for s in r.stages}
    assert by_name["train/sftmix"].outputs == [out / "variants" / "sftmix" / "model"]
    assert by_name["generate/ntp/toy_mcq"].outputs == [out / "generations" / "ntp" / "toy_mcq.jsonl"]
    assert by_name["score/ntp/toy_mcq"].outputs == [out / "scores" / "ntp" / "toy_mcq.json"]
    assert by_name["dynamics"].clean == [out / "dynamics"]


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
    n_calls = sum(s.n_judge_calls for s in r.stages)
    assert n_calls == 54
    caps = [r.ctx.judge_config(t).max_tokens for t in r.ctx.tasks if r.ctx.scorer(t).judged]
    est = rough_estimate(n_calls, "gpt-4o", prices, answer_tokens=r.cfg.generation.max_new_tokens,
                         max_completion_tokens=max(caps))
    line = next(ln for ln in text.splitlines() if ln.startswith("judge calls:"))
    assert line.startswith(f"judge calls: {n_calls} to gpt-4o at OpenAI; ~{est['prompt_tokens']:,} prompt + "
                           f"~{est['completion_tokens']:,} completion tokens (rough); ")
    if prices:
        assert est["cost_usd"] > 0 and line.endswith(f"cost ~${est['cost_usd']:,.2f}")
        assert line.endswith("cost ~$0.22")  # the figure the plan showed before planning used the ledger
    else:
        assert est["cost_usd"] is None and line.endswith("cost: no price for this model in judge.prices")

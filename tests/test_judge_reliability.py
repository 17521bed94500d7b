"""Judge reliability (bench/reliability.py), MT-Bench pairwise scoring (bench/scorers/mt_bench_pair.py), AlpacaEval
with both orders, the repeats-aware paired bootstrap, and `bench run` with `judge.mode: pairwise`."""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from openai_server import FakeOpenAIServer

from bench import reliability as rel
from bench.bootstrap import paired_bootstrap
from bench.cli import main
from bench.judge import load_judge_config
from bench.judge.parser import parser_from_config
from bench.rundir import Verdict
from bench.rundir.generations import GenerationRecord
from bench.scorers import alpaca_eval as ae
from bench.scorers import mt_bench_pair as mp

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer"
PROMPTS = PEER / "fastchat" / "judge_prompts.jsonl"
needs_prompts = pytest.mark.skipif(not PROMPTS.is_file(), reason=f"FastChat's judge prompts not found at {PROMPTS}")


# ---- reliability figures --------------------------------------------------------------------------------------

def test_one_repeat_is_not_estimable_never_zero():
    r = rel.repeat_stats({("1", 1): [7.0], ("2", 1): [3.0]}, repeats=1)
    assert r["spread"] is None and r["disagreement"] is None and r["test_retest"] is None
    assert "not estimable" in r["note"]
    assert "not estimable" in rel.describe({"repeats": r, "failures": {}})


def test_repeat_stats_by_hand():
    values = {"a": [5.0, 5.0], "b": [4.0, 6.0], "c": [9.0, 8.0], "d": [1.0, 1.0]}
    r = rel.repeat_stats(values, repeats=2)
    assert r["spread"] == pytest.approx(np.mean([0, np.std([4, 6], ddof=1), np.std([9, 8], ddof=1), 0]))
    assert r["disagreement"] == 0.5
    assert r["test_retest"] == pytest.approx(np.corrcoef([5, 4, 9, 1], [5, 6, 8, 1])[0, 1])


def test_position_bias_counts_flips_over_decisive_pairs():
    games = [(1, 1.0), (1, 1.0), (2, 2.0), (2, 1.0), (3, 1.5), (3, 1.0)]
    # one side's preference in both orders: pair 1 flipped (first won twice), pair 2 consistent, pair 3 has a tie
    both = [(1.0, 2.0), (2.0, 2.0), (1.5, 1.0)]
    p = rel.position_bias(games, both)
    assert (p["n_decisive"], p["first_wins"]) == (5, 4) and p["p_first_wins"] == pytest.approx(0.8)
    assert (p["n_decisive_pairs"], p["flips"], p["flip_rate"]) == (2, 1, 0.5)


def test_length_bias_equals_alpaca_evals_analyze():
    analyze = pytest.importorskip("alpaca_eval.analyze", reason="needs the alpaca-eval package")
    rng = random.Random(0)
    rows = [{"instruction": f"i{k}", "output_1": "x" * rng.randint(1, 200), "output_2": "y" * rng.randint(1, 200),
             "preference": rng.choice([1.0, 2.0, 1.5, 1.2, 1.8, math.nan])} for k in range(300)]
    df = pd.DataFrame(rows)
    theirs = analyze.Analyzer.get_length_biases(SimpleNamespace(keys=["instruction", "output_1", "output_2"],
                                                                annotation_key="preference"), df)
    ours = rel.length_bias((r["output_1"], r["output_2"], r["preference"]) for r in rows)
    assert ours["p_prefer_longer"] == pytest.approx(theirs["probability_prefer_longer"])
    assert 50 < ours["n_pairs"] < 300


# ---- the repeats-aware bootstrap ------------------------------------------------------------------------------

def test_bootstrap_resamples_repeats_within_items():
    rng = np.random.default_rng(1)
    keys = range(60)
    a = {k: 5.0 for k in keys}
    reps = {k: list(6 + rng.normal(0, 2, 3)) for k in keys}
    b = {k: float(np.median(v)) for k, v in reps.items()}
    plain = paired_bootstrap(a, b, 2000, 0)
    both = paired_bootstrap(a, b, 2000, 0, b_repeats=reps, combine="median")
    assert not plain["repeats_resampled"] and both["repeats_resampled"]
    assert both["delta"] == plain["delta"]  # the observed difference is the stored values'
    assert both["hi"] - both["lo"] > plain["hi"] - plain["lo"]  # judge noise widens the interval
    same = paired_bootstrap(a, b, 2000, 0, b_repeats={k: [b[k]] for k in keys})  # one repeat each: plain
    assert (same["lo"], same["hi"]) == (plain["lo"], plain["hi"])


# ---- MT-Bench pairwise ----------------------------------------------------------------------------------------

QUESTIONS = [{"id": "81", "category": "writing", "turns": ["Write a poem.", "Shorter, please."]},
             {"id": "111", "category": "math", "turns": ["What is 2+3?", "And 2*3?"], "reference": ["5", "6"]}]
ANS_1 = {"81": ["A long poem about the sea " * 3, "Sea."], "111": ["5", "6"]}
ANS_2 = {"81": ["Roses.", "Red."], "111": ["4", "7"]}


@needs_prompts
def test_pairwise_requests_are_fastchats_both_games():
    config = load_judge_config("mt_bench_pairwise", {"FASTCHAT_JUDGE_PROMPTS": str(PROMPTS)})
    reqs = mp.build_requests(config, QUESTIONS, ANS_1, ANS_2, model_1="sftmix", model_2="ntp")
    assert [(r.example_id, r.turn, r.meta["game"], r.form) for r in reqs] == [
        ("81", 1, 1, "pair"), ("81", 1, 2, "pair"), ("81", 2, 1, "pair_multi"), ("81", 2, 2, "pair_multi"),
        ("111", 1, 1, "pair_ref"), ("111", 1, 2, "pair_ref"), ("111", 2, 1, "pair_multi_ref"),
        ("111", 2, 2, "pair_multi_ref")]
    g1, g2 = reqs[0].messages[-1]["content"], reqs[1].messages[-1]["content"]
    assert g1.index(ANS_1["81"][0]) < g1.index(ANS_2["81"][0]) and g2.index(ANS_2["81"][0]) < g2.index(ANS_1["81"][0])
    assert reqs[0].messages[0]["role"] == "system" and "[[A]]" in reqs[0].messages[0]["content"]
    assert "5" in reqs[4].fields["ref_answer_1"]


def test_pairwise_parser_is_fastchats_priority():
    parser = parser_from_config(
        Path("x.yaml"), "pairwise", {"kind": "contains", "choices": {"[[A]]": 1, "[[B]]": 2, "[[C]]": 1.5}})
    assert parser("Hmm [[B]] ... no wait, [[A]]") == 1.0  # "[[A]]" in judgment is checked first
    assert parser("[[C]]") == 1.5 and parser("[[B]]") == 2.0 and parser("$ERROR$") is None


def _rec(eid, turn, game, score, repeat=0, failed=False):
    return Verdict("mt_bench", eid, turn, "j", "llm", repeat, None if failed else score, failed, "",
                   meta={"game": game, "model_1": "sftmix", "model_2": "ntp", "category": "writing"})


def test_pairwise_scoring_follows_fastchats_rule():
    records = [_rec("1", 1, 1, 1.0), _rec("1", 1, 2, 2.0),  # model_1 wins both games
               _rec("2", 1, 1, 1.0), _rec("2", 1, 2, 1.0),  # A both times: inconsistent -> tie
               _rec("3", 1, 1, 1.5), _rec("3", 1, 2, 2.0),  # game-1 tie -> tie
               _rec("4", 1, 1, 2.0), _rec("4", 1, 2, 1.0),  # model_2 wins both
               _rec("5", 1, 1, 1.0), _rec("5", 1, 2, None, failed=True)]  # an error: dropped
    task = SimpleNamespace(name="mt_bench", reference_categories=None, n_turns=2)
    items = [{"id": str(i), "category": "writing", "turns": ["q"]} for i in range(1, 6)]
    res = mp.MTBenchPairScorer().score(task, items, [], records, versus={"model_2": "ntp"})
    m = res.metrics
    assert (m["wins"], m["losses"], m["ties"]) == (1, 1, 2)
    assert m["win_rate_adjusted"] == pytest.approx(100 * (1 + 0.5 * 2) / 4)
    assert m["win_rate"] == 25 and m["loss_rate"] == 25 and res.info["n_failed"] == 1
    assert sorted(v["value"] for v in res.items) == [0.0, 0.5, 0.5, 1.0]
    pos = mp.position_stats(mp.matches(records))
    assert (pos["inconsistent"], pos["flips"], pos["n_decisive_pairs"]) == (2, 1, 3)


# ---- AlpacaEval both orders -----------------------------------------------------------------------------------

def test_alpaca_swap_judges_both_orders_and_measures_position_bias():
    cfg = replace(load_judge_config("alpaca_eval_pairwise"), both_orders=True)
    items = [{"example_id": str(i), "instruction": f"Do thing {i}", "output": "m" * (10 + 50 * (i % 2)),
              "reference_output": "r" * 30} for i in range(40)]
    reqs = ae.build_requests(cfg, items)
    assert len(reqs) == 80 and {r.meta["order"] for r in reqs} == {"alpaca_eval", "reversed"}
    for first, second in zip(reqs[::2], reqs[1::2]):
        assert first.meta["swapped"] == ae.is_switched(first.fields["instruction"]) != second.meta["swapped"]
        assert (first.fields["output_1"], first.fields["output_2"]) == (second.fields["output_2"],
                                                                      second.fields["output_1"])
    # a judge that always prefers the output shown first: every pair flips, the mean preference is a draw
    records = [Verdict(r.task, r.example_id, 1, "j", "llm", 0, 1.0, False, "", meta=r.meta) for r in reqs]
    prefs = ae.preferences(records, items)
    assert (prefs["preference"] == 1.5).all()
    task = SimpleNamespace(name="alpaca_eval")
    gens = [GenerationRecord("alpaca_eval", it["example_id"], 1, text=it["output"]) for it in items]
    task_items = [{"id": it["example_id"], "turns": [it["instruction"]], "reference": [it["reference_output"]]}
                  for it in items]
    r = ae.AlpacaEvalScorer().reliability(task, task_items, gens, records)
    assert r["position"]["p_first_wins"] == 1.0 and r["position"]["flip_rate"] == 1.0
    assert r["length"]["n_pairs"] == 0  # every preference is 1.5: no output preferred


# ---- bench run with judge.mode: pairwise ----------------------------------------------------------------------

@pytest.mark.slow
@needs_prompts
def test_pairwise_run_compares_each_variant_with_ntp(tmp_path, monkeypatch):
    """ci config on 2 MT-Bench questions: sftmix vs NTP, both games per match; a judge that always answers [[A]]
    makes every match a tie (FastChat's rule) with a 100 % flip rate; NTP's own row calls no judge."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = tmp_path / "run"
    args = ["run", "--config", "ci", "--out", str(out), "max_examples=48", "num_train_epochs=1", "limit=2",
            "max_new_tokens=16", "num_checkpoints=2", "tasks=mt_bench", "judge.mode=pairwise",
            f"judge.prompts={PROMPTS}", "--judge-model", "judge-model"]
    with FakeOpenAIServer(reply=lambda m: "Assistant A is better. [[A]]") as server:
        assert main(args + ["--judge-base-url", server.url]) == 0
        assert server.total == 2 * 2 * 2  # 2 questions x 2 turns x 2 games, for sftmix only
        ntp = json.loads((out / "scores" / "ntp" / "mt_bench.json").read_text())
        mix = json.loads((out / "scores" / "sftmix" / "mt_bench.json").read_text())
        assert ntp["pairwise_baseline"] and ntp["metrics"]["win_rate_adjusted"] == 50
        assert mix["versus"] == "ntp" and mix["metrics"]["ties"] == 4 and mix["metrics"]["win_rate_adjusted"] == 50
        assert mix["reliability"]["position"]["flip_rate"] == 1.0
        assert mix["reliability"]["repeats"]["note"].startswith("not estimable")
        table = (out / "tables" / "default.md").read_text()
        assert "adjusted win rate" in table and "judge reliability, sftmix" in table
        # NTP's generations are part of sftmix's score key: a re-run changes nothing
        assert main(args + ["--judge-base-url", server.url]) == 0 and server.total == 8

"""MT-Bench and AlpacaEval scorers: request building, aggregation, position swapping, win rates, LC."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from openai_server import FakeOpenAIServer, hash_p_m, hash_rating

from bench.judge import OpenAIJudge, load_judge_config
from bench.judge.reference import ReferenceJudge, rubric_score
from bench.rundir import Verdict
from bench.rundir.generations import GenerationRecord
from bench.scorers import alpaca_eval as ae
from bench.scorers import mt_bench as mt
from support import needs_alpaca_eval_template

QUESTIONS = [
    {"example_id": "81", "category": "writing", "turns": ["Write a haiku about rain.", "Now make it rhyme."]},
    {"example_id": "111", "category": "math", "turns": ["What is 2+3?", "And times 4?"], "reference": ["5", "20"]},
]
ANSWERS = {"81": ["Rain taps the window", "Rain falls, rain calls"], "111": ["It is 5.", "It is 20."]}


def rec(eid, turn, score, repeat=0, category="math", failed=False, judge="j"):
    return Verdict("mt_bench", eid, turn, judge, "llm", repeat, None if failed else score, failed, "",
                   "unparsable judge reply" if failed else None, meta={"category": category})


def test_mt_bench_requests_use_the_right_forms():
    cfg = load_judge_config("mt_bench_single")
    reqs = mt.build_requests(cfg, QUESTIONS, ANSWERS)
    assert [(r.example_id, r.turn, r.form) for r in reqs] == [
        ("81", 1, "single"), ("81", 2, "multi"), ("111", 1, "single_ref"), ("111", 2, "multi_ref")]
    text = {(r.example_id, r.turn): "\n".join(m["content"] for m in r.messages) for r in reqs}
    # Turn 2 shows both questions and the model's own turn-1 answer, then the turn-2 answer.
    t2 = text[("81", 2)]
    assert all(s in t2 for s in ("Write a haiku about rain.", "Rain taps the window", "Now make it rhyme.",
                                 "Rain falls, rain calls"))
    assert t2.index("Rain taps the window") < t2.index("Now make it rhyme.") < t2.index("Rain falls, rain calls")
    assert "Reference" not in text[("81", 1)] and "Reference" not in t2
    assert "Reference" in text[("111", 1)] and "5" in text[("111", 1)]
    assert "20" in text[("111", 2)] and "It is 5." in text[("111", 2)]
    # Without a reference the math question falls back to the plain forms.
    plain = mt.build_requests(cfg, [{**QUESTIONS[1], "reference": None}], ANSWERS)
    assert [r.form for r in plain] == ["single", "multi"]
    assert mt.answers_from_generations([GenerationRecord("mt_bench", "1", 2, text="b"),
                                        GenerationRecord("mt_bench", "1", 1, text="a")]) == {"1": ["a", "b"]}


def test_mt_bench_aggregate_median_over_repeats_and_failures():
    records = [
        *(rec("1", 1, s, r, "math") for r, s in enumerate([3, 7, 8])),   # median 7
        *(rec("1", 2, s, r, "math") for r, s in enumerate([2, 2, 9])),   # median 2
        rec("2", 1, 6, 0, "writing"), rec("2", 1, None, 1, "writing", failed=True), rec("2", 1, 10, 2, "writing"),
        *(rec("2", 2, None, r, "writing", failed=True) for r in range(3)),  # all repeats failed -> excluded
    ]
    out = mt.aggregate(records)
    assert out["turn_1"] == pytest.approx((7 + 8) / 2)  # item 2 turn 1: median(6, 10) = 8
    assert out["turn_2"] == pytest.approx(2)
    assert out["overall"] == pytest.approx((7 + 2 + 8) / 3)  # mean over judged (question, turn) pairs
    assert out["per_category"]["math"] == {"turn_1": 7, "turn_2": 2, "overall": 4.5, "n": 2}
    assert math.isnan(out["per_category"]["writing"]["turn_2"])
    assert (out["n_judged"], out["n_failed"], out["n_failed_judgments"], out["n_repeats"]) == (3, 1, 4, 3)
    with pytest.raises(ValueError, match="several judges"):
        mt.aggregate([rec("1", 1, 5), rec("1", 1, 5, judge="other")])


def test_mt_bench_end_to_end_through_server_and_reference_judge(tmp_path):
    cfg = load_judge_config("mt_bench_single")
    reqs = mt.build_requests(cfg, QUESTIONS, ANSWERS)
    with FakeOpenAIServer() as server:
        judge = OpenAIJudge("judge-model", base_url=server.url, timeout=2, backoff_base=0.01)
        verdicts = judge.judge_many(reqs, repeats=2, progress=False)
    expected = {(r.example_id, r.turn): hash_rating(r.messages) for r in reqs}
    out = mt.aggregate(verdicts)
    assert out["overall"] == pytest.approx(statistics.mean(expected.values()))
    assert out["per_category"]["writing"]["turn_2"] == expected[("81", 2)]
    # The reference rubric rates only what has a reference (math), and names itself.
    ref = mt.aggregate(ReferenceJudge().judge_many(reqs, progress=False))
    assert ref["judge"] == "reference-rubric-v1" and ref["n_failed"] == 2
    assert ref["per_category"]["math"]["turn_1"] == rubric_score("It is 5.", "5")
    assert ref["per_category"]["math"]["turn_2"] == rubric_score("It is 20.", "20")


ITEMS = [{"example_id": str(i), "instruction": f"Instruction {i}", "output": "o" * (10 + i),
          "reference_output": "r" * 12} for i in range(6)]


def ae_rec(eid, swapped, score, repeat=0, failed=False):
    return Verdict("alpaca_eval", eid, 1, "j", "llm", repeat, None if failed else score, failed, "",
                   meta={"swapped": swapped})


def test_alpaca_output_order_is_alpaca_evals():
    """Our per-item order is the one alpaca_eval's own annotator uses: its PairwiseAnnotator for
    weighted_alpaca_eval_gpt4_turbo builds the RandomSwitchTwoColumnsProcessor with the annotator's seed (0), not
    the processor's default (123)."""
    annotators = pytest.importorskip("alpaca_eval.annotators", reason="needs the alpaca-eval package")
    annotator = annotators.PairwiseAnnotator(annotators_config="weighted_alpaca_eval_gpt4_turbo")
    (single,) = annotator.annotators.values()
    (proc,) = [p for p in single.processors if type(p).__name__ == "RandomSwitchTwoColumnsProcessor"]
    instructions = [f"Write item {i} {'x' * (i % 7)}" for i in range(200)]
    df = proc.preprocess(pd.DataFrame({"instruction": instructions, "output_1": "a", "output_2": "b"}))
    assert [ae.is_switched(i) for i in instructions] == df["is_switched_outputs"].tolist()
    assert 60 < sum(map(ae.is_switched, instructions)) < 140  # both orders occur
    assert [ae.is_switched(i, seed=123) for i in instructions] != df["is_switched_outputs"].tolist()


@needs_alpaca_eval_template
def test_alpaca_requests_one_per_item_in_alpaca_eval_order():
    cfg = load_judge_config("alpaca_eval_weighted")
    items = ITEMS + [{"example_id": "same", "instruction": "Copy", "output": "r" * 12, "reference_output": "r" * 12}]
    reqs = ae.build_requests(cfg, items)
    assert [r.example_id for r in reqs] == [it["example_id"] for it in ITEMS]  # identical outputs: no call
    for r, it in zip(reqs, ITEMS):
        assert r.meta["swapped"] == ae.is_switched(it["instruction"])
        first, second = (it["output"], it["reference_output"]) if r.meta["swapped"] else (it["reference_output"],
                                                                                          it["output"])
        assert (r.fields["output_1"], r.fields["output_2"]) == (first, second)
        user = r.messages[-1]["content"]
        assert user.index(first) < user.index(second) and "## Best Model Identifier" in user
        assert (r.max_tokens, r.logprobs) == (1, 5)


@needs_alpaca_eval_template
def test_logprob_parser_matches_alpaca_eval():
    parser = load_judge_config("alpaca_eval_weighted").parser
    top = [{"token": "M", "logprob": -0.0175}, {"token": "m", "logprob": -4.05}, {"token": "Both", "logprob": -14.9}]
    p_m = math.exp(-4.05) / (math.exp(-4.05) + math.exp(-0.0175))
    assert parser({"text": "M", "top_logprobs": top}) == pytest.approx(2 - p_m, abs=1e-12)
    assert parser({"text": "M", "top_logprobs": [{"token": "M", "logprob": -1e-6}]}) == pytest.approx(2.0)
    assert parser({"text": "x", "top_logprobs": [{"token": "The", "logprob": -0.1}]}) is None
    assert parser("M") is None  # a text-only reply has no log-probabilities
    cp = pytest.importorskip("alpaca_eval.completion_parsers", reason="needs the alpaca-eval package")
    theirs = cp.logprob_parser({"logprobs": {"content": [{"top_logprobs": top}]}}, numerator_token="m",
                               denominator_tokens=["m", "M"], is_binarize=False)
    assert parser({"top_logprobs": top}) == pytest.approx(theirs[0], abs=1e-12)


def test_alpaca_preferences_mirror_switched_items_and_average_repeats():
    # shown-order score: 1 = output_1 preferred, 2 = output_2; unswitched shows (reference, model).
    records = [
        ae_rec("0", False, 1.9),                         # model (output_2) preferred: 1.9
        ae_rec("1", True, 1.2),                          # switched, output_1 = model preferred: 3 - 1.2 = 1.8
        ae_rec("2", False, 1.0), ae_rec("2", False, 2.0, repeat=1),  # repeats averaged: 1.5
        ae_rec("3", True, None, failed=True),            # failed: no preference
        ae_rec("4", False, 1.5),
    ]
    items = ITEMS[:5] + [{"example_id": "5", "instruction": "c", "output": "same", "reference_output": "same"}]
    prefs = ae.preferences(records, items).set_index("example_id")["preference"]
    assert prefs["0"] == pytest.approx(1.9) and prefs["1"] == pytest.approx(1.8) and prefs["2"] == 1.5
    assert math.isnan(prefs["3"]) and prefs["5"] == 1.5  # identical outputs: alpaca_eval's 1.5
    out = ae.score(records, items, lc=False)
    assert out["n_failed"] == 1 and out["n_total"] == 5 and out["n_draws"] == 3
    assert out["win_rate"] == pytest.approx(100 * np.mean([0.9, 0.8, 0.5, 0.5, 0.5]))
    assert (out["n_wins"], out["n_wins_base"]) == (2, 0)
    assert out["avg_length"] == int(np.mean([len(it["output"]) for it in items]))
    assert out["lc_note"] == "not requested"


def test_winrate_equals_alpaca_evals_get_winrate():
    metrics = pytest.importorskip("alpaca_eval.metrics", reason="needs the alpaca-eval package")
    rng = np.random.default_rng(1)
    prefs = list(1 + rng.random(300)) + [1.5, 1.5, 1.0, 2.0, 1.49999, 1.50001, math.nan, 0]
    ours, theirs = ae.winrate(prefs), metrics.get_winrate(pd.DataFrame({"preference": prefs}))
    for key in ("win_rate", "standard_error", "discrete_win_rate"):
        assert ours[key] == pytest.approx(float(theirs[key]), abs=1e-12), key
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total"):
        assert ours[key] == int(theirs[key]), key


@needs_alpaca_eval_template
def test_alpaca_end_to_end_weighted_through_server():
    cfg = load_judge_config("alpaca_eval_weighted")
    reqs = ae.build_requests(cfg, ITEMS)
    with FakeOpenAIServer() as server:
        judge = OpenAIJudge("judge-model", base_url=server.url, timeout=2, backoff_base=0.01)
        verdicts = judge.judge_many(reqs, progress=False)
        assert server.logprob_requests == len(ITEMS)
    out = ae.score(verdicts, ITEMS, lc=False)
    # model-centred preference = 1 + P(model judged better): P(M) unswitched, P(m) switched
    expected = [(hash_p_m(r.messages) if r.meta["swapped"] else 1 - hash_p_m(r.messages)) for r in reqs]
    assert out["win_rate"] == pytest.approx(100 * np.mean(expected), abs=1e-9)
    assert all(isinstance(v.raw, dict) and v.raw["top_logprobs"] for v in verdicts)


def _fake_gamed_table(folder, n, rng):
    """A df_gamed.csv in the schema alpaca_eval's GLM reads (synthetic numbers: tests the wiring, not the values).
    Rows 0..n-1 must be the indices in order: the GLM looks difficulties up by row label."""
    rows = [{"model": m, "index": i, "preference": p, "std_delta_len": d, "instruction_difficulty": diff[i],
             "not_gamed_baseline": False}
            for diff in [rng.normal(size=n)]
            for m, d, p in (("verbose", -1.5, 0.3), ("concise", 1.5, 0.7)) for i in range(n)]
    pd.DataFrame(rows).to_csv(folder / "df_gamed.csv", index=False)


def test_alpaca_length_controlled_via_package(tmp_path, monkeypatch):
    glm_winrate = pytest.importorskip("alpaca_eval.metrics.glm_winrate",
                                      reason="needs the alpaca-eval package (LC win rate)")

    rng = np.random.default_rng(0)
    n = 60
    longer = rng.random(n) < 0.75  # the model is verbose on 3/4 of the items and wins exactly those
    items = [{"example_id": str(i), "instruction": f"I{i}", "reference_output": "r" * 200,
              "output": "o" * (400 if longer[i] else 100)} for i in range(n)]
    records = [ae_rec(str(i), s, (2 if longer[i] else 1) if not s else (1 if longer[i] else 2))
               for i in range(n) for s in [ae.is_switched(items[i]["instruction"])]]
    _fake_gamed_table(tmp_path, n, rng)
    out = ae.score(records, items, glm_data_dir=tmp_path)
    assert out["lc_note"] is None
    assert out["win_rate"] == pytest.approx(100 * longer.mean())
    assert 0 <= out["length_controlled_winrate"] < out["win_rate"] - 5  # length wins are discounted

    # Offline without local tables: NaN with a reason, never a crash.
    def offline(*a, **k):
        raise OSError("offline: cannot reach the hub")
    monkeypatch.setattr(glm_winrate, "hf_hub_download", offline)
    out = ae.score(records, items)
    assert math.isnan(out["length_controlled_winrate"]) and "offline" in out["lc_note"]
    assert out["win_rate"] == pytest.approx(100 * longer.mean())


def test_task_item_schema_is_accepted():
    task_items = [{"id": "0", "category": "x", "turns": ["Say hi."], "reference": ["Hi!"]},
                  {"id": "1", "category": "x", "turns": ["Say bye."], "reference": ["Bye!"]}]
    items = ae.make_items(task_items, {"1": ["Goodbye."]})
    assert items == [{"example_id": "1", "instruction": "Say bye.", "reference_output": "Bye!",
                      "output": "Goodbye.", "index": 1}]
    cfg = load_judge_config("mt_bench_single")
    reqs = mt.build_requests(cfg, [{**task_items[0], "turns": ["a", "b"]}], {"0": ["A", "B"]}, ref_categories=None)
    assert [(r.example_id, r.form) for r in reqs] == [("0", "single_ref"), ("0", "multi")]  # no turn-2 reference

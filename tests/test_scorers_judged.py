"""MT-Bench and AlpacaEval scorers: request building, aggregation, position swapping, win rates, LC."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from openai_server import FakeOpenAIServer, hash_rating

from bench.judge import OpenAIJudge, load_judge_config
from bench.judge.reference import ReferenceJudge, rubric_score
from bench.scorers import alpaca_eval as ae
from bench.scorers import mt_bench as mt

QUESTIONS = [
    {"example_id": "81", "category": "writing", "turns": ["Write a haiku about rain.", "Now make it rhyme."]},
    {"example_id": "111", "category": "math", "turns": ["What is 2+3?", "And times 4?"], "reference": ["5", "20"]},
]
ANSWERS = {"81": ["Rain taps the window", "Rain falls, rain calls"], "111": ["It is 5.", "It is 20."]}


def rec(eid, turn, score, repeat=0, category="math", failed=False, judge="j"):
    return {"task": "mt_bench", "example_id": eid, "turn": turn, "repeat": repeat, "judge": judge,
            "judge_kind": "llm", "score": None if failed else score, "failed": failed, "raw": "",
            "error": "unparsable judge reply" if failed else None, "meta": {"category": category}}


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
    assert mt.answers_from_generations([{"example_id": "1", "turn": 2, "text": "b"},
                                        {"example_id": "1", "turn": 1, "text": "a"}]) == {"1": ["a", "b"]}


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
    out = mt.aggregate(v.to_record() for v in verdicts)
    assert out["overall"] == pytest.approx(statistics.mean(expected.values()))
    assert out["per_category"]["writing"]["turn_2"] == expected[("81", 2)]
    # The reference rubric rates only what has a reference (math), and names itself.
    ref = mt.aggregate(v.to_record() for v in ReferenceJudge().judge_many(reqs, progress=False))
    assert ref["judge"] == "reference-rubric-v1" and ref["n_failed"] == 2
    assert ref["per_category"]["math"]["turn_1"] == rubric_score("It is 5.", "5")
    assert ref["per_category"]["math"]["turn_2"] == rubric_score("It is 20.", "20")


ITEMS = [{"example_id": str(i), "instruction": f"Instruction {i}", "output": "o" * (10 + i),
          "reference_output": "r" * 12} for i in range(6)]


def ae_rec(eid, swapped, score, repeat=0, failed=False):
    return {"task": "alpaca_eval", "example_id": eid, "turn": 1, "repeat": repeat, "judge": "j", "judge_kind": "llm",
            "score": None if failed else score, "failed": failed, "raw": "", "error": None,
            "meta": {"swapped": swapped}}


def test_alpaca_requests_swap_positions():
    reqs = ae.build_requests(load_judge_config("alpaca_eval_pairwise"), ITEMS[:1])
    assert [r.meta["swapped"] for r in reqs] == [False, True]
    assert reqs[0].fields["output_1"] == reqs[1].fields["output_2"] == ITEMS[0]["reference_output"]
    assert reqs[0].fields["output_2"] == reqs[1].fields["output_1"] == ITEMS[0]["output"]
    user = reqs[0].messages[-1]["content"]
    assert user.index("r" * 12) < user.index("o" * 10)


def test_alpaca_win_rate_with_position_swap():
    # score: 1 = output_1 preferred, 2 = output_2 preferred; unswapped order is (reference, model).
    records = [
        ae_rec("0", False, 2), ae_rec("0", True, 1),    # model wins in both orders -> win
        ae_rec("1", False, 1), ae_rec("1", True, 2),    # reference wins in both -> loss
        ae_rec("2", False, 2), ae_rec("2", True, 2),    # position bias (always output_2) -> tie
        ae_rec("3", False, 1), ae_rec("3", True, 1),    # position bias (always output_1) -> tie
        ae_rec("4", False, 2), ae_rec("4", True, None, failed=True),  # one order failed -> item failed
        *(ae_rec("5", False, 2, r) for r in range(3)),  # repeats: win, win, tie -> median win
        ae_rec("5", True, 1, 0), ae_rec("5", True, 1, 1), ae_rec("5", True, 2, 2),
    ]
    out = ae.score(records, ITEMS, lc=False)
    assert (out["n_wins"], out["n_losses"], out["n_ties"], out["n_judged"], out["n_failed"]) == (2, 1, 2, 5, 1)
    assert out["win_rate"] == pytest.approx(100 * (1 + 0 + 0.5 + 0.5 + 1) / 5)
    assert out["avg_length"] == pytest.approx(np.mean([10 + i for i in range(6)]))
    assert out["reference_avg_length"] == 12 and out["lc_note"] == "not requested"
    metrics = pytest.importorskip("alpaca_eval.metrics")  # the package's own win rate agrees
    prefs = ae.combine(records).dropna()["preference"]
    assert metrics.get_winrate([{"preference": p} for p in prefs])["win_rate"] == pytest.approx(out["win_rate"])


def _fake_gamed_table(folder, n, rng):
    """A df_gamed.csv in the schema alpaca_eval's GLM reads (synthetic numbers: tests the wiring, not the values).
    Rows 0..n-1 must be the indices in order: the GLM looks difficulties up by row label."""
    rows = [{"model": m, "index": i, "preference": p, "std_delta_len": d, "instruction_difficulty": diff[i],
             "not_gamed_baseline": False}
            for diff in [rng.normal(size=n)]
            for m, d, p in (("verbose", -1.5, 0.3), ("concise", 1.5, 0.7)) for i in range(n)]
    pd.DataFrame(rows).to_csv(folder / "df_gamed.csv", index=False)


def test_alpaca_length_controlled_via_package(tmp_path, monkeypatch):
    pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    from alpaca_eval.metrics import glm_winrate

    rng = np.random.default_rng(0)
    n = 60
    longer = rng.random(n) < 0.75  # the model is verbose on 3/4 of the items and wins exactly those
    items = [{"example_id": str(i), "instruction": f"I{i}", "reference_output": "r" * 200,
              "output": "o" * (400 if longer[i] else 100)} for i in range(n)]
    records = [ae_rec(str(i), s, (2 if longer[i] else 1) if not s else (1 if longer[i] else 2))
               for i in range(n) for s in (False, True)]
    _fake_gamed_table(tmp_path, n, rng)
    out = ae.score(records, items, glm_data_dir=tmp_path)
    assert out["lc_note"] is None
    assert out["win_rate"] == pytest.approx(100 * longer.mean())
    assert 0 <= out["lc_win_rate"] < out["win_rate"] - 5  # length wins are discounted

    # Offline without local tables: NaN with a reason, never a crash.
    def offline(*a, **k):
        raise OSError("offline: cannot reach the hub")
    monkeypatch.setattr(glm_winrate, "hf_hub_download", offline)
    out = ae.score(records, items)
    assert math.isnan(out["lc_win_rate"]) and "offline" in out["lc_note"]
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

"""The example benchmark of docs/ARCHITECTURE.md: a scorer module (bench/scorers/token_f1.py) and a task YAML
(bench/task_files/toy_exact_f1.yaml) and nothing else — found by the registry, scored, and tabulated with its own
metric."""
import pytest
from test_tables import parse_md, row, write_score

from bench.rundir.generations import GenerationRecord
from bench.scorers import get_scorer
from bench.scorers.token_f1 import f1
from bench.tables import render_table
from bench.tasks import load_task


def test_f1_by_hand():
    # normalised: ["cat", "sat"] vs ["cat", "sat", "down"]: precision 1, recall 2/3 -> F1 0.8
    assert f1("The cat sat.", "cat sat down") == pytest.approx(0.8)
    assert f1("Paris", "paris") == 1.0 and f1("London", "Paris") == 0.0 and f1("", "") == 1.0
    # bags of tokens: a repeated token counts once per gold occurrence
    assert f1("a b b", "b c") == pytest.approx(2 * 0.5 * 0.5 / (0.5 + 0.5))


def test_the_task_finds_its_scorer_and_the_score_has_per_item_values():
    task = load_task("toy_exact_f1")
    scorer = get_scorer(task.scorer)
    gens = [GenerationRecord("toy_exact_f1", "a", text="paris france", answer="Paris"),
            GenerationRecord("toy_exact_f1", "b", text="cold", answer=["hot", "cold"])]
    res = scorer.score(task, [], gens)
    assert res.metrics == {"f1": pytest.approx((2 / 3 + 1.0) / 2)}
    assert [i["value"] for i in res.items] == [pytest.approx(2 / 3), 1.0]
    assert res.info["metric_shown"] == "f1"


def test_tables_show_the_scorers_own_metric_with_a_paired_ci(tmp_path):
    run = tmp_path / "run"
    for variant, vals in (("ntp", [0.5, 1.0, 0.0, 0.5]), ("sftmix", [1.0, 1.0, 0.5, 0.5])):
        items = [{"example_id": str(i), "turn": 0, "value": v} for i, v in enumerate(vals)]
        write_score(run, variant, "toy_exact_f1", "exact", {"f1": sum(vals) / 4}, items, metric_shown="f1")
    df = parse_md(render_table([run], layout="default"))
    col = next(c for c in df.columns if c.startswith("toy_exact_f1"))
    assert "f1" in col
    assert row(df, Method="NTP")[col] == "50.00"
    assert row(df, Method="SFTMix")[col].startswith("75.00 (+25.00 [")

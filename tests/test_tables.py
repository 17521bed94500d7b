"""Tables from hand-made run directories (docs/RUNDIR.md, written through bench.rundir), checked cell by cell."""
from __future__ import annotations

import ast
import io
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.rundir import ItemValues, RunDir, TaskSummary, TrainRecord
from bench.scorers import SCORERS, get_scorer
from bench.tables import build_table, render_table, write_tables
from core.errors import UserError
from support import ROOT

REGISTERED = {
    "ntp": {"name": "ntp", "ntp_weight": 1.0, "mu": 0.0, "alpha": 0.5, "pairing": "conf_unconf", "reference_model": None},
    "sftmix": {"name": "sftmix", "ntp_weight": 1.0, "mu": 0.2, "alpha": 0.5, "pairing": "conf_unconf",
               "reference_model": None},
    "mixup-equal": {"name": "mixup-equal", "ntp_weight": 1.0, "mu": 1.0, "alpha": 0.5, "pairing": "conf_unconf"},
    "mixup-only": {"name": "mixup-only", "ntp_weight": 0.0, "mu": 1.0, "alpha": 0.5, "pairing": "conf_unconf"},
}


def write_score(run: Path, variant: str, task: str, kind: str, metrics: dict, items: list[dict] | None = None,
                model: str = "meta-llama/Llama-3.1-8B", train_data: str = "Alpaca-52K", judge: str = "none",
                judge_kind: str = "none", n_failed: int = 0, metric_shown: str | None = None,
                variant_cfg: dict | None = None) -> None:
    rd = RunDir(run)
    TaskSummary(task=task, variant=variant, metrics=metrics, kind=kind, model=model, train_data=train_data,
                judge=judge, judge_kind=judge_kind, n_items=len(items or []), n_failed=n_failed, repeats=1,
                metric_shown=metric_shown).write(rd)
    if items is not None:
        ItemValues(items).write(rd, variant, task)
    cfg = variant_cfg or REGISTERED.get(variant, {"name": variant})
    TrainRecord(variant=cfg, log_history=[{"step": 1, "loss": 2.0}]).write(rd, variant)


def mt_items(turn1: list[float], turn2: list[float]) -> list[dict]:
    cats = ["writing", "math", "coding", "roleplay"]
    return ([{"example_id": str(81 + i), "turn": 1, "category": cats[i % 4], "value": v} for i, v in enumerate(turn1)]
            + [{"example_id": str(81 + i), "turn": 2, "category": cats[i % 4], "value": v} for i, v in enumerate(turn2)])


def mean(xs):
    return sum(xs) / len(xs)


def write_main_run(run: Path, model: str = "meta-llama/Llama-3.1-8B") -> None:
    t1, t2 = [5.0, 6.0, 7.0, 8.0], [4.0, 5.0, 6.0, 7.0]
    s1 = [v + 1 for v in t1]  # sftmix: exactly +1 on turn 1, same on turn 2
    for variant, a, b, wins, lc, length in (("ntp", t1, t2, [1, 0, 0, 0.5], 40.0, 1000.0),
                                             ("sftmix", s1, t2, [1, 1, 0, 0.5], 45.0, 1100.0)):
        write_score(run, variant, "mt_bench", "chat",
                    {"turn1": mean(a), "turn2": mean(b), "overall": mean(a + b), "category/writing": a[0]},
                    mt_items(a, b), model=model, judge="gpt-4o-2024-08-06", judge_kind="llm")
        write_score(run, variant, "alpaca_eval", "pairwise",
                    {"win_rate": 100 * mean(wins), "lc_win_rate": lc, "avg_length": length},
                    [{"example_id": str(i), "turn": 1, "value": w} for i, w in enumerate(wins)],
                    model=model, judge="gpt-4o-2024-08-06", judge_kind="llm")


def row(df: pd.DataFrame, **labels) -> pd.Series:
    m = pd.Series(True, index=df.index)
    for k, v in labels.items():
        m &= df[k] == v
    assert m.sum() == 1, f"expected one row for {labels}, got {m.sum()}"
    return df[m].iloc[0]


def parse_md(text: str) -> pd.DataFrame:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    cells = [[c.strip() for c in l.strip("|").split(" | ")] for l in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


def test_main_layout_cells_and_deltas(tmp_path):
    run = tmp_path / "r1"
    write_main_run(run)
    df = parse_md(render_table([run], "main", "md"))
    assert list(df.columns) == ["SFT data", "Model", "Method", "MT-Bench turn 1", "MT-Bench turn 2",
                                "MT-Bench overall", "AE2 WR", "AE2 LC WR", "AE2 avg length"]
    ntp, sft = row(df, Method="NTP"), row(df, Method="SFTMix")
    assert ntp["MT-Bench turn 1"] == "6.50" and ntp["MT-Bench overall"] == "6.00" and ntp["AE2 WR"] == "37.50"
    # turn 1: b = a + 1 on every item -> delta 1 with a degenerate CI; turn 2 identical -> 0 [0, 0]
    assert sft["MT-Bench turn 1"] == "7.50 (+1.00 [1.00, 1.00])"
    assert sft["MT-Bench turn 2"] == "5.50 (+0.00 [0.00, 0.00])"
    assert sft["MT-Bench overall"].startswith("6.50 (+0.50 [")
    assert sft["AE2 WR"].startswith("62.50 (+25.00 [")
    # no per-item LC values: difference without CI
    assert sft["AE2 LC WR"] == "45.00 (+5.00)"
    assert sft["AE2 avg length"] == "1100.00 (+100.00)"


def test_main_csv_has_separate_delta_columns(tmp_path):
    run = tmp_path / "r1"
    write_main_run(run)
    df = pd.read_csv(io.StringIO(render_table([run], "main", "csv")))
    sft = row(df, Method="SFTMix")
    assert sft["MT-Bench turn 1"] == pytest.approx(7.5)
    assert sft["MT-Bench turn 1 Δ"] == pytest.approx(1.0)
    assert sft["MT-Bench turn 1 Δ lo"] == pytest.approx(1.0) and sft["MT-Bench turn 1 Δ hi"] == pytest.approx(1.0)
    assert sft["MT-Bench overall n"] == 8  # 4 questions x 2 turns paired
    lo, hi = sft["MT-Bench overall Δ lo"], sft["MT-Bench overall Δ hi"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    assert sft["AE2 LC WR Δ"] == pytest.approx(5.0) and pd.isna(sft["AE2 LC WR Δ lo"])
    assert pd.isna(row(df, Method="NTP")["MT-Bench turn 1 Δ"])


def test_latex_and_notes(tmp_path):
    run = tmp_path / "r1"
    write_main_run(run)
    tex = render_table([run], "main", "latex")
    assert "\\begin{tabular}" in tex and "SFTMix" in tex and "% " in tex
    md = render_table([run], "main", "md")
    assert "mt_bench: judged by gpt-4o-2024-08-06 (LLM judge)" in md
    assert "n_failed" in md and "paired-bootstrap 95% CI" in md and "AE2 LC WR" in md.split("Δ without CI")[1]


def test_paper_rows_matched_by_name_and_separate(tmp_path):
    run = tmp_path / "r1"
    write_main_run(run)
    df = parse_md(render_table([run], "main", "md", paper=True))
    assert list(df["Source"]) == ["ours", "ours", "paper (Xiao et al. 2024)", "paper (Xiao et al. 2024)"]
    p_ntp = row(df, Source="paper (Xiao et al. 2024)", Method="NTP")
    p_sft = row(df, Source="paper (Xiao et al. 2024)", Method="SFTMix")
    assert p_ntp["MT-Bench overall"] == "4.36" and p_ntp["AE2 LC WR"] == "8.65"
    assert p_sft["MT-Bench overall"] == "4.58 (+0.22)"
    assert p_sft["MT-Bench turn 1"] == "—"  # not recovered from the paper
    assert "arXiv 2410.05248" in render_table([run], "main", "md", paper=True)
    # our rows are untouched by --paper
    assert row(df, Source="ours", Method="SFTMix")["MT-Bench turn 1"] == "7.50 (+1.00 [1.00, 1.00])"

    other = tmp_path / "r2"
    write_main_run(other, model="my-tiny-model")
    df2 = parse_md(render_table([other], "main", "md", paper=True))
    assert set(df2["Source"]) == {"ours"}


def write_health_run(run: Path) -> dict:
    correct = {"medqa_4": 5, "medqa_5": 4, "pubmedqa": 6, "medmcqa": 3, "mmlu_medical": 7}
    for task, k in correct.items():
        for variant, extra in (("ntp", 0), ("sftmix", 1)):
            vals = [1.0 if i < k + extra else 0.0 for i in range(10)]
            write_score(run, variant, task, "mcq", {"acc": mean(vals), "acc_norm": 0.0},
                        [{"example_id": f"{task}-{i}", "value": v} for i, v in enumerate(vals)],
                        train_data="medalpaca", model="mistralai/Mistral-7B-v0.1", metric_shown="acc")
    return correct


def test_health_layout_average_and_extra_block(tmp_path):
    run = tmp_path / "h"
    write_health_run(run)
    df = parse_md(render_table([run], "health", "md"))
    assert list(df.columns)[3:] == ["MedQA-4", "MedQA-5", "PubMedQA", "MedMCQA", "Average (of 4)",
                                    "MMLU-medical [extra, not in paper]"]
    ntp, sft = row(df, Method="NTP"), row(df, Method="SFTMix")
    assert [ntp[c] for c in ("MedQA-4", "MedQA-5", "PubMedQA", "MedMCQA")] == ["50.00", "40.00", "60.00", "30.00"]
    assert ntp["Average (of 4)"] == "45.00"
    assert sft["Average (of 4)"].startswith("55.00 (+10.00 [")
    assert sft["MedQA-4"].startswith("60.00 (+10.00 [")
    assert ntp["MMLU-medical [extra, not in paper]"] == "70.00"
    csv = pd.read_csv(io.StringIO(render_table([run], "health", "csv")))
    s = row(csv, Method="SFTMix")
    assert s["Average (of 4) Δ"] == pytest.approx(10.0)
    assert 0.0 <= s["Average (of 4) Δ lo"] <= 10.0 <= s["Average (of 4) Δ hi"] <= 25.0
    assert s["Average (of 4) n"] == 40
    md = render_table([run], "health", "md")
    assert "acc = lm-eval acc, argmax of option log-likelihood" in md and "unweighted macro mean" in md

    paper = parse_md(render_table([run], "health", "md", paper=True))
    p = row(paper, Source="paper (Xiao et al. 2024)", Method="NTP")
    assert p["MedQA-4"] == "49.10" and p["Average (of 4)"] == "54.32"
    assert p["MMLU-medical [extra, not in paper]"] == "—"


def test_mixup_role_layout(tmp_path):
    run = tmp_path / "role"
    for i, v in enumerate(["ntp", "sftmix", "mixup-equal", "mixup-only"]):
        t = [5.0 + i] * 4
        write_score(run, v, "mt_bench", "chat", {"turn1": t[0], "turn2": t[0], "overall": t[0]}, mt_items(t, t))
        write_score(run, v, "alpaca_eval", "pairwise", {"win_rate": 10.0, "lc_win_rate": 8.0 + i, "avg_length": 900})
    df = parse_md(render_table([run], "mixup-role", "md"))
    assert list(df.columns) == ["SFT data", "Model", "Method", "NTP role", "Mixup role", "MT-Bench overall",
                                "AE2 LC WR"]
    assert list(df["Method"]) == ["NTP", "SFTMix", "mixup-equal", "mixup-only"]
    assert list(df["NTP role"]) == ["loss", "loss", "loss", "—"]
    assert list(df["Mixup role"]) == ["—", "regulariser (μ=0.2)", "loss (equal weight)", "loss (Mixup only)"]
    assert list(df["MT-Bench overall"]) == ["5.00", "6.00 (+1.00 [1.00, 1.00])", "7.00 (+2.00 [2.00, 2.00])",
                                            "8.00 (+3.00 [3.00, 3.00])"]
    assert list(df["AE2 LC WR"]) == ["8.00", "9.00 (+1.00)", "10.00 (+2.00)", "11.00 (+3.00)"]
    paper = parse_md(render_table([run], "mixup-role", "md", paper=True))
    p = paper[paper["Source"] != "ours"]
    assert list(p["MT-Bench overall"]) == ["4.36", "4.58 (+0.22)", "4.41 (+0.04)", "4.51 (+0.14)"]
    assert list(p["Mixup role"]) == ["—", "regulariser (μ=0.2)", "loss (equal weight)", "loss (Mixup only)"]


def test_ablation_layout_across_runs(tmp_path):
    for name, alpha, gain in (("a05", 0.5, 0.1), ("a1", 1.0, 0.3)):
        run = tmp_path / name
        for v, g in (("ntp", 0.0), ("sftmix", gain)):
            vals = [0.5 + g] * 5
            cfg = dict(REGISTERED[v], alpha=alpha)
            write_score(run, v, "toy_exact", "exact", {"exact_match": vals[0]},
                        [{"example_id": str(i), "value": x} for i, x in enumerate(vals)], variant_cfg=cfg)
    df = parse_md(render_table([tmp_path / "a05", tmp_path / "a1"], "ablation", "md"))
    assert len(df) == 4
    assert list(df.columns[:9]) == ["Run", "SFT data", "Model", "Method", "pairing", "alpha", "mu", "ntp_weight",
                                    "reference_model"]
    s1 = row(df, Run="a1", Method="SFTMix")
    assert s1["alpha"] == "1.0" and s1["mu"] == "0.2" and s1["reference_model"] == "—"
    # each sftmix row is compared with the NTP row of its own run
    assert s1["toy_exact exact_match (%)"] == "80.00 (+30.00 [30.00, 30.00])"
    assert row(df, Run="a05", Method="SFTMix")["toy_exact exact_match (%)"] == "60.00 (+10.00 [10.00, 10.00])"


def write_default_run(run: Path) -> None:
    run.mkdir(parents=True)
    RunDir(run).config.write_text("run:\n  tasks: [toy_open, toy_mcq, toy_exact]\n  train_data_name: toy\n"
                                     "model:\n  model: tiny-llama\n")
    for v, shift, n_failed in (("ntp", 0.0, 0), ("sftmix", 1.0, 1)):
        ids = range(5) if v == "ntp" else range(4)  # sftmix lost one verdict to a parse failure
        open_items = [{"example_id": f"o{i}", "turn": 1, "value": 4.0 + shift + i} for i in ids]
        write_score(run, v, "toy_open", "chat", {"overall": mean([r["value"] for r in open_items])}, open_items,
                    model="tiny-llama", train_data="toy", judge="reference-rubric-v1", judge_kind="reference",
                    n_failed=n_failed)
        mcq = [1.0, 0.0, 1.0, 0.0] if v == "ntp" else [1.0, 1.0, 1.0, 0.0]
        write_score(run, v, "toy_mcq", "mcq", {"acc": mean(mcq), "acc_norm": mean(mcq)},
                    [{"example_id": f"m{i}", "value": x} for i, x in enumerate(mcq)], model="tiny-llama",
                    train_data="toy", metric_shown="acc")
        write_score(run, v, "toy_exact", "exact", {"exact_match": 0.25},
                    [{"example_id": f"e{i}", "value": float(i == 0)} for i in range(4)], model="",
                    train_data="")  # blank: tables fall back to config.yaml's run/model names


def test_default_layout_and_judge_notes(tmp_path):
    run = tmp_path / "default"
    write_default_run(run)
    text = render_table([run], "default", "md")
    df = parse_md(text)
    assert list(df.columns) == ["SFT data", "Model", "Method", "toy_open overall", "toy_mcq acc (%)",
                                "toy_exact exact_match (%)"]
    ntp, sft = row(df, Method="NTP"), row(df, Method="SFTMix")
    assert ntp["toy_open overall"] == "6.00" and ntp["toy_mcq acc (%)"] == "50.00"
    # 4 paired items, sftmix exactly +1 on each
    assert sft["toy_open overall"] == "6.50 (+1.00 [1.00, 1.00])"
    assert sft["toy_exact exact_match (%)"] == "25.00 (+0.00 [0.00, 0.00])"
    assert "toy_open: judged by reference-rubric-v1 (reference-based rubric, not an LLM judge)" in text
    assert "n_failed): ntp 0, sftmix 1" in text
    assert "partial pairing: sftmix vs ntp on toy_open" in text and "the 4 items both have" in text
    assert "toy_mcq: judged" not in text  # not judged: no judge line
    # auto picks default when no paper task is present; write_tables writes all three formats
    assert render_table([run], "auto", "md") == text
    paths = write_tables(run)
    assert sorted(p.name for p in paths) == ["default.csv", "default.md", "default.tex"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_bad_input_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        build_table([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no scores"):
        build_table([tmp_path / "empty"])
    run = tmp_path / "default"
    write_default_run(run)
    with pytest.raises(UserError, match="layout 'main' needs scores"):
        build_table([run], "main")
    with pytest.raises(UserError, match="did you mean 'health'"):
        build_table([run], "helth")
    bad = RunDir(run).item_values("ntp", "toy_exact")
    bad.write_text('{"example_id": "e0", "value": 1}\n{oops\n')
    with pytest.raises(UserError, match=r"toy_exact.items.jsonl: line 2"):
        build_table([run])


def test_cli_table(tmp_path, capsys):
    run = tmp_path / "default"
    write_default_run(run)
    assert main(["table", str(run), "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(df["Method"]) == ["NTP", "SFTMix"]
    out = tmp_path / "t.md"
    assert main(["table", str(run), "--out", str(out)]) == 0 and out.read_text().startswith("| SFT data")
    assert main(["table", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such run directory" in err[0]


def test_protocol_notes_and_dagger_on_non_conformant_columns(tmp_path):
    run = tmp_path / "run"
    write_main_run(run)
    rd = RunDir(run)
    for variant in ("ntp", "sftmix"):
        s = TaskSummary.read(rd.summary(variant, "mt_bench"))
        s.protocol = "NOT MT-Bench (FastChat llm_judge single-answer grading): prompts from ours"
        s.conformant = False
        s.write(rd)
        s = TaskSummary.read(rd.summary(variant, "alpaca_eval"))
        s.protocol, s.conformant = "AlpacaEval 2.0 (weighted_alpaca_eval_gpt4_turbo) (prompts: alpaca_eval)", True
        s.write(rd)
    table = build_table([run], layout="main")
    assert "MT-Bench overall †" in table.value_cols and "AE2 WR" in table.value_cols
    assert not any(c.startswith("AE2") and c.endswith("†") for c in table.value_cols)
    assert any(n.startswith("† mt_bench: NOT MT-Bench") for n in table.notes)
    assert any(n.startswith("alpaca_eval: AlpacaEval 2.0 (weighted_alpaca_eval_gpt4_turbo)") for n in table.notes)


# ---- reporting knows no kind -------------------------------------------------------------------------------------

def kind_comparisons(source: str, kinds: set[str]) -> list[str]:
    """Comparisons (==, !=, in, not in) of something with a kind name literal ("mcq", ("mcq", "exact"), ...), and
    dicts keyed by kind names (a lookup by kind), as 'line: source'."""
    found = []

    def names(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*map(names, node.elts)) if node.elts else set()
        return set()

    for node in ast.walk(ast.parse(source)):
        hit = None
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            hit = set().union(*map(names, [node.left, *node.comparators])) & kinds
        elif isinstance(node, ast.Dict):
            hit = set().union(*(names(k) for k in node.keys if k is not None)) & kinds
        if hit:
            found.append(f"{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def builtin_kinds() -> set[str]:
    get_scorer("mcq")  # loads the built-in scorers
    return {SCORERS.get(name).kind or name for name in SCORERS}


def test_reporting_compares_no_kind_name():
    """bench/tables and bench/view decide from what summaries and records say (the scorer's metric_shown, item
    selections, turn numbering, record fields), never by a built-in kind's name: the rules for older files that
    did live in bench/rundir/compat.py."""
    kinds = builtin_kinds()
    assert {"mcq", "exact", "chat", "perplexity"} <= kinds
    offenders = {str(p.relative_to(ROOT)): hits for folder in ("bench/tables", "bench/view")
                 for p in sorted((ROOT / folder).rglob("*.py"))
                 if (hits := kind_comparisons(p.read_text(), kinds))}
    assert offenders == {}


def test_the_kind_name_check_catches_each_form():
    kinds = builtin_kinds()
    assert kind_comparisons('if s.kind == "mcq":\n    pass\n', kinds) == ['1: s.kind == "mcq"']
    assert kind_comparisons('x = kind in ("mcq", "exact")\n', kinds) == ['1: kind in ("mcq", "exact")']
    assert kind_comparisons('y = "chat" != kind\n', kinds) == ['1: "chat" != kind']
    assert kind_comparisons('OFFSET = {"chat": 1}\n', kinds) == ['1: {"chat": 1}']
    assert kind_comparisons('if s.note == "mcq_metrics" or s.kind == other:\n    pass\n', kinds) == []

"""The table layouts, as data: which columns (label, task, metric), which tasks a layout needs, which label
columns it adds, and whether the paper reports numbers in it. :mod:`bench.tables.build` interprets them.

Column metrics: a metric name, ``@shown`` (the MCQ metric the summary's ``metric_shown`` names) or ``@headline``
(the task's headline metric, :func:`bench.tables.results.headline_metric`).
"""
from __future__ import annotations

from dataclasses import dataclass

MAIN_TASKS = ("mt_bench", "alpaca_eval")
HEALTH_TASKS = ("medqa_4", "medqa_5", "pubmedqa", "medmcqa")
EXTRA_HEALTH_TASKS = ("mmlu_medical",)

# (column label, task, metric) per paper layout.
MAIN_COLS = (("MT-Bench turn 1", "mt_bench", "turn1"), ("MT-Bench turn 2", "mt_bench", "turn2"),
             ("MT-Bench overall", "mt_bench", "overall"), ("AE2 WR", "alpaca_eval", "win_rate"),
             ("AE2 LC WR", "alpaca_eval", "lc_win_rate"), ("AE2 avg length", "alpaca_eval", "avg_length"))
HEALTH_COLS = (("MedQA-4", "medqa_4", "@shown"), ("MedQA-5", "medqa_5", "@shown"),
               ("PubMedQA", "pubmedqa", "@shown"), ("MedMCQA", "medmcqa", "@shown"))
HEALTH_AVG = "Average (of 4)"
HEALTH_EXTRA = (("MMLU-medical [extra, not in paper]", "mmlu_medical", "@shown"),)
ROLE_COLS = (("MT-Bench overall", "mt_bench", "overall"), ("AE2 LC WR", "alpaca_eval", "lc_win_rate"))
SETTINGS = ("pairing", "alpha", "mu", "ntp_weight", "reference_model")  # the ablation layout's label columns

MCQ_METRICS = {"acc": "lm-eval acc, argmax of option log-likelihood",
               "acc_norm": "lm-eval acc_norm, argmax of log-likelihood per character of the option",
               "acc_bytes": "lm-eval acc_bytes, argmax of log-likelihood per UTF-8 byte of the option"}
HEALTH_NOTE = (f"{HEALTH_AVG} = unweighted macro mean of MedQA-4, MedQA-5, PubMedQA and MedMCQA; its Δ "
               "bootstraps each benchmark independently. MMLU-medical is an extra task, not a paper column.")


@dataclass(frozen=True)
class Layout:
    name: str
    columns: tuple | str  # (label, task, metric) tuples; or "headline": each task's headline metric;
    #                       or "every-metric": each task's every plain metric
    requires: tuple = ()  # the layout needs scores for at least one of these tasks
    auto: tuple = ()  # `--layout auto` picks this layout when one of these tasks is present (first match wins)
    paper: bool = False  # the paper reports numbers in this layout (`--paper` adds them as rows)
    run_column: str = "duplicates"  # "duplicates": when a system appears in two runs; "runs": > 1 run; "always"
    average: tuple | None = None  # (label, tasks): a macro-average column, when every one of its tasks has a column
    extra_columns: tuple = ()  # after the average
    empty_fallback: str | None = None  # columns when none of ``columns`` is present ("headline")
    labels: str | None = None  # extra label columns: "roles" (NTP/Mixup role) or "settings" (SETTINGS)
    note: str | None = None  # "mcq_metrics": the MCQ metrics and the average's definition under the table


LAYOUT_SPECS: dict[str, Layout] = {
    "main": Layout("main", MAIN_COLS, requires=MAIN_TASKS, auto=MAIN_TASKS, paper=True),
    "health": Layout("health", HEALTH_COLS, requires=HEALTH_TASKS + EXTRA_HEALTH_TASKS, auto=HEALTH_TASKS,
                     paper=True, average=(HEALTH_AVG, HEALTH_TASKS), extra_columns=HEALTH_EXTRA, note="mcq_metrics"),
    "mixup-role": Layout("mixup-role", ROLE_COLS, paper=True, empty_fallback="headline", labels="roles"),
    "ablation": Layout("ablation", "every-metric", run_column="always", labels="settings"),
    "default": Layout("default", "headline", run_column="runs"),
}
LAYOUTS = ("default", "auto", "main", "health", "mixup-role", "ablation")
AUTO_ORDER = ("main", "health")  # then "default"
FORMATS = ("md", "csv", "latex")


def has_paper_rows(layout: str) -> bool:
    """Whether the paper reports numbers in ``layout`` (`bench run` then adds them beside ours)."""
    spec = LAYOUT_SPECS.get(layout)
    return bool(spec and spec.paper)

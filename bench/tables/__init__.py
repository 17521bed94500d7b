"""Comparison tables from one or more `bench run` directories, in the paper's layouts.

Reads, through :mod:`bench.rundir` (the format: docs/RUNDIR.md), each run's task summaries
(``scores/<variant>/<task>.json``), their per-item values (``scores/<variant>/<task>.items.jsonl``), the variants'
settings as trained (``variants/<variant>/train.json``) and the run's own config (task and variant order).
Nothing here imports ``sftmix``: an old run's table does not change when the training side does.

The package: :mod:`~bench.tables.results` (loading, metric semantics), :mod:`~bench.tables.model` (Cell, Table),
:mod:`~bench.tables.layouts` (the layouts as data), :mod:`~bench.tables.deltas` (Δ vs the baseline with
paired-bootstrap CIs), :mod:`~bench.tables.build` (layout -> Table, paper rows, notes),
:mod:`~bench.tables.formats` (md, csv, latex; ``RUN/tables/``), :mod:`~bench.tables.contamination` (scores on the
clean items, from the runs' contamination reports).

Layouts: ``main`` (MT-Bench turn 1/2/overall, AlpacaEval 2 WR/LC WR/length), ``health`` (MedQA-4/5, PubMedQA,
MedMCQA, their macro average, MMLU-medical as an extra block), ``mixup-role`` (PAPER.md §4.4's shape), ``ablation``
(one row per run × variant with its settings and every metric), ``default`` (every task's headline metric;
what `bench run` prints), ``auto`` (main, else health, else default, depending on the tasks present).

Every row other than the baseline (``ntp``) shows its difference from the baseline row of the same training set ×
model: ``value (+delta [lo, hi])`` with a paired-bootstrap 95 % interval over example ids (:mod:`bench.bootstrap`).
Metrics with no per-item values (AlpacaEval's LC win rate is a GLM fitted on the whole set; the average length is
a corpus statistic) show the difference without an interval. Metrics a summary records as fractions
(``metric_units``, from the scorer's ``Metric.fraction``) are shown in percent, whatever the task's kind.
"""
from .build import build_table, roles
from .contamination import build_contamination_table
from .deltas import BASELINE, METHOD_NAMES
from .formats import format_table, render_table, write_tables
from .layouts import FORMATS, LAYOUT_SPECS, LAYOUTS, has_paper_rows
from .model import MISSING, Cell, Table
from .results import (TaskResult, headline_metric, item_values, load_results, merge_seeds, metric_value,
                      results_frame)

__all__ = ["BASELINE", "FORMATS", "LAYOUTS", "LAYOUT_SPECS", "METHOD_NAMES", "MISSING", "Cell", "Table",
           "TaskResult", "build_contamination_table", "build_table", "format_table", "has_paper_rows",
           "headline_metric", "item_values", "load_results", "merge_seeds", "metric_value", "render_table",
           "results_frame", "roles", "write_tables"]

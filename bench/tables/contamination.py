"""The contamination table: each variant's headline score on all items and on the clean items (those that share no
n-gram with the training data, per the run's ``contamination/<task>.json``), with SFTMix - NTP on the clean items
and its paired-bootstrap CI. Everything comes from the stored per-item values: nothing is generated or judged again.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..rundir import ContaminationReport, RunDir, fail
from .build import _assemble
from .deltas import BASELINE, METHOD_NAMES, Comparison
from .layouts import Layout
from .model import Table
from .results import TaskResult, _run_labels, headline_metric, is_percent, load_results

CLEAN = "clean"


def load_reports(run_dirs: Sequence[str | Path]) -> dict[str, dict[str, ContaminationReport]]:
    """Run label (as the tables name runs) -> task -> its contamination report."""
    dirs = [Path(d) for d in run_dirs]
    return {label: ContaminationReport.read_all(RunDir(d).check()) for d, label in zip(dirs, _run_labels(dirs))}


def _clean_task(task: str) -> str:
    return f"{task} ({CLEAN})"


def restrict(s: TaskResult, keep: set[str], task: str) -> TaskResult:
    """``s`` on the items in ``keep`` only, as task ``task``: its metrics come from those items' values (names kept,
    values dropped, so the headline metric is still found); over seeds, each seed is restricted."""
    metrics = {k: None for k in s.metrics}
    if s.seeds:
        return replace(s, task=task, metrics=metrics, seeds={k: restrict(m, keep, task) for k, m in s.seeds.items()})
    items = None if s.items is None else [r for r in s.items if r.example_id in keep]
    return replace(s, task=task, metrics=metrics, items=items,
                   n_items=None if items is None else len({r.example_id for r in items}))


def _scored_ids(s: TaskResult) -> set[str] | None:
    members = list(s.seeds.values()) if s.seeds else [s]
    if any(m.items is None for m in members):
        return None
    return {r.example_id for m in members for r in m.items}


def build_contamination_table(run_dirs: Sequence[str | Path], n_resamples: int = 2000, seed: int = 0) -> Table | None:
    """The table (see the module docstring), or None when no run has a contamination report."""
    reports = load_reports(run_dirs)
    if not any(reports.values()):
        return None
    results = load_results(run_dirs)
    rows: list[TaskResult] = []
    notes: list[str] = []
    unchecked: list[str] = []
    counts: dict[str, set] = {}  # task -> {(clean items scored, items scored)} over the runs and variants
    for s in results:
        report = reports.get(s.run, {}).get(s.task)
        if report is None:
            continue
        rows.append(s)
        scored = _scored_ids(s)
        clean = report.clean_ids()
        rows.append(restrict(s, clean, _clean_task(s.task)))
        counts.setdefault(s.task, set()).add(None if scored is None else (len(scored & clean), len(scored)))
        if scored is not None and scored - set(report.item_ids):
            unchecked.append(f"{s.task} ({s.run}, {s.variant}): {len(scored - set(report.item_ids))}")
    if not rows:
        return None
    shown = {(label, task): r for label, by_task in reports.items() for task, r in by_task.items()
             if task in {s.task for s in results if s.run == label}}
    if not unchecked and not any(r.dirty for r in shown.values()):  # all columns would repeat: one line says so
        first = next(iter(shown.values())).extra
        checked = ", ".join(f"{task}{f' ({label})' if len(reports) > 1 else ''} {r.n_items}"
                            for (label, task), r in shown.items())
        return Table("contamination", [], [], [], notes=[
            f"Contamination: no scored item is dirty by {_how(first)} with the training data "
            f"({(first.get('train_data') or {}).get('source')}; items checked: {checked}; normalisation: "
            f"{first.get('normalisation')} [{first.get('implementation')}]), so every score is a clean-item score."])
    ctx = Comparison(rows, n_resamples, seed)
    cols = []
    for task in dict.fromkeys(s.task for s in ctx.results if not s.task.endswith(f" ({CLEAN})")):
        first = next(s for s in ctx.results if s.task == task)
        m = headline_metric(first)
        unit = " (%)" if is_percent(first, m) else ""
        (n,) = counts[task] if len(counts[task]) == 1 else (None,)  # item counts in the header when all agree
        cols += [(f"{task} {m}{unit}: all" + (f" ({n[1]})" if n else ""), task, m),
                 (f"{task} {m}{unit}: {CLEAN}" + (f" ({n[0]})" if n else ""), _clean_task(task), m)]
    spec = Layout("contamination", tuple(cols), run_column="runs")

    table = _assemble(ctx, spec, paper=False)
    notes.append(f"all = every scored item (the task's own metric); {CLEAN} = the items that share no n-gram with "
                 "the training data (the mean of their stored per-item values: no new generation or judge call); "
                 f"value (+Δ [lo, hi]): Δ = this row − the {METHOD_NAMES[BASELINE]} row on the same items, "
                 f"[lo, hi] = paired-bootstrap 95% CI over example ids ({n_resamples} resamples, seed {seed}).")
    if ctx.n_seeds:
        notes.append(f"Runs over {'/'.join(map(str, sorted(ctx.n_seeds)))} training seeds: value = mean over seeds; "
                     "[lo, hi] = two-level paired bootstrap 95% CI (resample seeds, then example ids); 'seeds' lists "
                     "each seed's own Δ.")
    notes += [_report_note(label if len(reports) > 1 else "", r) for (label, _), r in shown.items()]
    if unchecked:
        notes.append("scored items the contamination report did not check (left out of the clean column): "
                     + "; ".join(unchecked))
    notes += [f"partial pairing: {p}" for p in dict.fromkeys(ctx.partial)]
    table.notes = notes
    return table


def _how(x: dict) -> str:
    """The rule a report was made with, in words."""
    if x.get("method", "ngram") == "ngram":
        return f"{x.get('n')}-gram overlap"
    return f"near duplicates (Jaccard >= {x.get('threshold')} of {x.get('shingle')}-word shingles)"


def _report_note(run: str, r: ContaminationReport) -> str:
    x = r.extra
    t = x.get("train_data") or {}
    how = _how(x)
    data = f"{t.get('source')}" + (f" sha256 {t['sha256_16']}" if t.get("sha256_16") else "") \
        + (f", {t['n_rows']} rows" if t.get("n_rows") is not None else "")
    task_data = (x.get("task_data") or {}).get("data_hash")
    return (f"{r.task}{f' ({run})' if run else ''}: {len(r.dirty)} of {r.n_items} items dirty "
            f"({100.0 * len(r.dirty) / r.n_items if r.n_items else 0.0:.1f}%); {how}, item fields "
            f"{', '.join((x.get('fields') or {}).get('item') or [])} vs the training rows' texts; normalisation: "
            f"{x.get('normalisation')} [{x.get('implementation')}]; training data {data}"
            + (f"; task data {task_data}" if task_data else "") + ".")


def require_table(run_dirs: Sequence[str | Path], n_resamples: int = 2000, seed: int = 0) -> Table:
    """:func:`build_contamination_table`, or a one-line error naming how to make the reports."""
    table = build_contamination_table(run_dirs, n_resamples, seed)
    if table is None:
        fail("no contamination report in these runs (RUN/contamination/<task>.json): make one with "
             "`bench contamination --config ... --out RUN`")
    return table

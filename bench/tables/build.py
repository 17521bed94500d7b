"""Building a :class:`~bench.tables.model.Table` from run directories: interpret a layout of
:mod:`bench.tables.layouts`, fill its cells (:mod:`bench.tables.deltas`), add the paper's rows
(:mod:`bench.paper`) and the notes printed under the table."""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Iterable, Sequence

from .. import paper as paper_data
from ..rundir import fail
from .deltas import BASELINE, METHOD_NAMES, Comparison
from .layouts import AUTO_ORDER, HEALTH_NOTE, LAYOUT_SPECS, LAYOUTS, MCQ_METRICS, SETTINGS, Layout
from .model import MISSING, Cell, Table
from ..reliability import describe
from .results import TaskResult, headline_metric, is_percent, load_results

JUDGE_KINDS = {
    "llm": "LLM judge",
    "reference": "reference-based rubric, not an LLM judge",
    "local": "local model as judge",
}
NOT_COMPARABLE = "†"
AVERAGE = "average"  # the task name of a macro-average column (and its key in the paper's rows)
_PAPER_KEYS = {"@shown": "acc"}  # bench.paper metric keys for column metrics


def method_name(variant: str) -> str:
    return METHOD_NAMES.get(variant, variant)


def _fmt_setting(v) -> str:
    return MISSING if v is None or v == "" else str(v)


def roles(variant_cfg: dict) -> tuple[str, str]:
    """(NTP role, Mixup role) of a variant, as in PAPER.md §4.4: loss / regulariser (μ) / equal-weight / only."""
    ntp_w = float(variant_cfg.get("ntp_weight", 1.0) or 0.0)
    mu = float(variant_cfg.get("mu", 0.0) or 0.0)
    ntp_role = "loss" if ntp_w > 0 else MISSING
    if mu <= 0:
        mix_role = MISSING
    elif ntp_w <= 0:
        mix_role = "loss (Mixup only)"
    elif math.isclose(mu, ntp_w):
        mix_role = "loss (equal weight)"
    else:
        mix_role = f"regulariser (μ={mu:g})"
    return ntp_role, mix_role


# ---------------------------------------------------------------------------------------------------- columns


def _first_per_task(ctx: Comparison) -> dict[str, TaskResult]:
    out: dict[str, TaskResult] = {}
    for s in ctx.results:
        out.setdefault(s.task, s)
    return out


def _headline_cols(ctx: Comparison) -> list[tuple]:
    cols = []
    for task, s in _first_per_task(ctx).items():
        m = headline_metric(s)
        cols.append((f"{task} {m}{' (%)' if is_percent(s, m) else ''}", task, "@headline"))
    return cols


def _every_metric_cols(ctx: Comparison) -> list[tuple]:
    cols = []
    for task, s in _first_per_task(ctx).items():
        keys = list(dict.fromkeys(k for x in ctx.results if x.task == task for k in x.metrics if "/" not in k))
        cols += [(f"{task} {k}{' (%)' if is_percent(s, k) else ''}", task, k) for k in keys]
    return cols


def _present(ctx: Comparison, cols) -> list:
    tasks = set(ctx.tasks())
    return [c for c in cols if c[1] in tasks]


def _columns(ctx: Comparison, spec: Layout) -> list[tuple]:
    if spec.columns == "headline":
        return _headline_cols(ctx)
    if spec.columns == "every-metric":
        return _every_metric_cols(ctx)
    cols = _present(ctx, spec.columns)
    if not cols and spec.empty_fallback == "headline":  # e.g. the embedded default under mixup-role
        return _headline_cols(ctx)
    if spec.average and len(cols) == len(spec.columns):
        cols.append((spec.average[0], AVERAGE, None))
    return cols + _present(ctx, spec.extra_columns)


# ---------------------------------------------------------------------------------------------------- rows


def _run_column(ctx: Comparison, spec: Layout) -> bool:
    if spec.run_column == "always":
        return True
    if spec.run_column == "runs":
        return len({s.run for s in ctx.results}) > 1
    seen: set = set()
    for sys in ctx.by_system:  # "duplicates": the same system in two runs
        if sys[1:] in seen:
            return True
        seen.add(sys[1:])
    return False


def _variant_of(ctx: Comparison, run, train_data, model, variant) -> dict:
    results = ctx.by_system.get((run, train_data, model, variant), {})
    return next(iter(results.values())).variant_cfg if results else {}


def _row_judges(ctx: Comparison, sys: tuple) -> str:
    """The judge(s) behind a row's judged cells."""
    judged = [s for s in ctx.by_system.get(sys, {}).values() if s.judge_kind != "none"]
    return "; ".join(dict.fromkeys(f"{s.judge} ({JUDGE_KINDS.get(s.judge_kind, s.judge_kind)})"
                                   for s in judged)) or MISSING


def judges_differ(ctx: Comparison) -> list[str]:
    """The tasks whose judged results come from more than one judge (rows then say which judge is theirs)."""
    return [t for t in ctx.tasks()
            if len({s.judge for s in ctx.results if s.task == t and s.judge_kind != "none"}) > 1]


def _labeller(ctx: Comparison, spec: Layout, paper: bool, with_run: bool, with_judge: bool = False):
    def label(train_data, model, variant, prow, run=""):
        row = {}
        if paper:
            row["Source"] = paper_data.LABEL if prow else "ours"
        if with_run:
            row["Run"] = "" if prow else run
        row.update({"SFT data": train_data or MISSING, "Model": model or MISSING, "Method": method_name(variant)})
        if with_judge:
            row["Judge"] = "the paper's" if prow else _row_judges(ctx, (run, train_data, model, variant))
        if spec.labels:
            # a paper row carries the paper's own settings; ours, the settings the run recorded
            cfg = prow.get("settings", {}) if prow else _variant_of(ctx, run, train_data, model, variant)
            if spec.labels == "roles":
                row.update(zip(("NTP role", "Mixup role"), roles(cfg)))
            else:
                row.update({k: _fmt_setting(cfg.get(k)) for k in SETTINGS})
        return row
    return label


def _label_cols(spec: Layout, with_run: bool, with_judge: bool = False) -> list[str]:
    extra = {"roles": ["NTP role", "Mixup role"], "settings": list(SETTINGS)}.get(spec.labels, [])
    return (["Run"] if with_run else []) + ["SFT data", "Model", "Method"] + (["Judge"] if with_judge else []) + extra


def _paper_rows(ctx: Comparison, layout: str, cols, label_fn) -> dict[tuple, list[dict]]:
    """Paper rows per (train_data, model) group of ours, as table rows (with the paper's own NTP deltas)."""
    out: dict[tuple, list[dict]] = {}
    for train_data, model in dict.fromkeys((s[1], s[2]) for s in ctx.by_system):
        prs = paper_data.paper_rows(layout, train_data, model)
        base = next((p for p in prs if p["variant"] == BASELINE), None)
        rows = []
        for p in prs:
            row = label_fn(p["train_data"], p["model"], p["variant"], p)  # the paper's own names
            for label, task, metric in cols:
                key = task if task == AVERAGE else f"{task}/{_PAPER_KEYS.get(metric, metric)}"
                v = p["metrics"].get(key)
                if v is None:
                    continue
                cell = Cell(value=v)
                if base is not None and p is not base and base["metrics"].get(key) is not None:
                    cell.delta = v - base["metrics"][key]
                row[label] = cell
            rows.append(row)
        if rows:
            out[(train_data, model)] = rows
    return out


def _assemble(ctx: Comparison, spec: Layout, paper: bool) -> Table:
    """Rows for every system (plus paper rows after each group when asked); drops empty value columns.

    A column whose results were made another way than its benchmark's protocol is marked with a dagger."""
    with_run = _run_column(ctx, spec)
    with_judge = bool(judges_differ(ctx))  # rows judged by different judges: each row names its own
    label_cols = _label_cols(spec, with_run, with_judge)
    label_fn = _labeller(ctx, spec, paper, with_run, with_judge)
    apart = {s.task for s in ctx.results if s.conformant is False}
    cols = [(f"{label} {NOT_COMPARABLE}" if task in apart else label, task, metric)
            for label, task, metric in _columns(ctx, spec)]
    value_cols = [c[0] for c in cols]
    avg_tasks = spec.average[1] if spec.average else ()
    rows, groups_done = [], set()
    prows = _paper_rows(ctx, spec.name, cols, label_fn) if paper else {}
    systems = ctx.systems()
    for i, sys in enumerate(systems):
        row = label_fn(sys[1], sys[2], sys[3], None, run=sys[0])
        for label, task, metric in cols:
            if task == AVERAGE:
                row[label] = ctx.macro_cell(sys, avg_tasks, label)
            else:
                row[label] = ctx.cell(sys, task, metric, label)
        rows.append(row)
        group = (sys[1], sys[2])
        last_of_group = i + 1 == len(systems) or (systems[i + 1][1], systems[i + 1][2]) != group
        if last_of_group and group in prows and group not in groups_done:
            rows.extend(prows[group])
            groups_done.add(group)
    value_cols = [c for c in value_cols if any(isinstance(r.get(c), Cell) for r in rows)]
    if paper:
        label_cols = ["Source"] + label_cols
    tasks = [t for c in cols for t in (avg_tasks if c[1] == AVERAGE else (c[1],)) if c[0] in value_cols]
    return Table(spec.name, label_cols, value_cols, rows, tasks=list(dict.fromkeys(tasks)))


def _require(ctx: Comparison, spec: Layout) -> None:
    present = ctx.tasks()
    if spec.requires and not set(spec.requires) & set(present):
        fail(f"layout {spec.name!r} needs scores for {', '.join(spec.requires)}; these runs have "
             f"{', '.join(present)} (try --layout default)")


def _auto(ctx: Comparison) -> str:
    tasks = set(ctx.tasks())
    return next((name for name in AUTO_ORDER if tasks & set(LAYOUT_SPECS[name].auto)), "default")


# ---------------------------------------------------------------------------------------------------- notes


def _layout_notes(ctx: Comparison, spec: Layout) -> list[str]:
    if spec.note != "mcq_metrics":
        return []
    # the MCQ metrics this note defines, as the tasks' summaries name their headline metric
    shown = sorted({m for m in map(headline_metric, ctx.results) if m in MCQ_METRICS})
    return [f"Accuracy in % ({' / '.join(shown)}: " + ", ".join(f"{m} = {MCQ_METRICS.get(m, m)}" for m in shown)
            + "). " + HEALTH_NOTE]


def _protocol_notes(ctx: Comparison, tasks: Iterable[str]) -> list[str]:
    """One note per task: the protocol its numbers follow; a dagger where it is not the benchmark's own."""
    notes = []
    for task in tasks:
        ss = [s for s in ctx.results if s.task == task]
        protocols = list(dict.fromkeys(s.protocol for s in ss if s.protocol))
        if not protocols:
            continue
        mark = f"{NOT_COMPARABLE} " if any(s.conformant is False for s in ss) else ""
        notes.append(f"{mark}{task}: {'; '.join(protocols)}")
    return notes


def _judge_notes(ctx: Comparison, tasks: Iterable[str]) -> list[str]:
    notes = []
    for task in tasks:
        ss = [s for s in ctx.results if s.task == task]
        judged = [s for s in ss if s.judge_kind != "none"]
        failed = ", ".join(f"{s.variant} {s.n_failed}" for s in ss)
        if judged:
            judges = dict.fromkeys(f"{s.judge} ({JUDGE_KINDS.get(s.judge_kind, s.judge_kind)})" for s in judged)
            reps = sorted({s.repeats for s in judged})
            rep = f"; median of {'/'.join(map(str, reps))} judge repeats" if reps != [1] else ""
            names = dict.fromkeys(c for s in judged for c in (s.failures or {}))  # the causes the summaries name
            causes = {c: sum((s.failures or {}).get(c, 0) for s in judged) for c in names}
            why = f" - failed verdicts by cause: {', '.join(f'{c} {n}' for c, n in causes.items())}" \
                if any(causes.values()) else ""
            notes.append(f"{task}: judged by {'; '.join(judges)}{rep}; unjudged items (n_failed): {failed}{why}")
            base = [s for s in judged if s.pairwise_baseline]
            if base:
                notes.append(f"{task}: pairwise - each row's value is its adjusted win rate (ties count half) in "
                             f"FastChat's matches against the {', '.join(dict.fromkeys(s.variant for s in base))} "
                             "row's answers, both orders per match; that row is 50 by definition, so Δ is the "
                             "adjusted win rate minus 50")
            for s in judged:
                if not s.pairwise_baseline:
                    notes.append(f"{task} judge reliability, {s.variant}: {describe(s.reliability)}")
        elif any(s.n_failed for s in ss):
            notes.append(f"{task}: unscorable items (n_failed): {failed}")
    return notes


def _coverage_notes(ctx: Comparison) -> list[str]:
    """What the table lacks: (variant, task) pairs the runs' configs list but that have no scores yet (an
    unfinished run), and scores left by an earlier config of a run directory (not shown)."""
    results = ctx.loaded
    notes = []
    for run in dict.fromkeys(r for r, _, _ in getattr(results, "missing", [])):
        pairs = [f"{f} on {t}" for r, f, t in results.missing if r == run]
        status = results.status.get(run)
        why = f" (provenance status: {status})" if status and status != "done" else ""
        notes.append(f"INCOMPLETE: run {run} has no scores yet for {', '.join(pairs)}{why}: those rows/cells are "
                     "missing - finish the run (re-run the same `bench run` command) for the whole table.")
    for run in dict.fromkeys(r for r, _, _ in getattr(results, "left_out", [])):
        folders = sorted({f for r, f, _ in results.left_out if r == run})
        notes.append(f"not shown: scores of {', '.join(folders)} in run {run}, left by an earlier config of that "
                     "directory (its config.yaml no longer lists them).")
    return notes


def _notes(ctx: Comparison, table: Table, spec: Layout, paper: bool) -> list[str]:
    used_tasks = table.tasks or ctx.tasks()
    notes = _coverage_notes(ctx)
    if any(isinstance(r.get(c), Cell) and r[c].lo is not None and not r[c].per_seed
           for r in table.rows for c in table.value_cols):
        notes.append(f"value (+Δ [lo, hi]): Δ = this row − the {METHOD_NAMES[BASELINE]} row of the same SFT data "
                     f"× model; [lo, hi] = paired-bootstrap 95% CI over example ids ({ctx.n_resamples} resamples, "
                     f"seed {ctx.seed}).")
    if ctx.n_seeds:
        notes.append(f"Runs over {'/'.join(map(str, sorted(ctx.n_seeds)))} training seeds: value = mean over seeds; "
                     f"Δ = this row − the {METHOD_NAMES[BASELINE]} row, mean over seeds; [lo, hi] = two-level paired "
                     "bootstrap 95% CI (resample seeds, then example ids within each resampled seed; "
                     f"{ctx.n_resamples} resamples, seed {ctx.seed}); 'seeds' lists each seed's own Δ.")
    if ctx.no_ci:
        notes.append(f"Δ without CI for {', '.join(sorted(ctx.no_ci))}: no per-item values to resample "
                     "(AlpacaEval's LC win rate is a GLM fitted on the whole set; average length is a corpus "
                     "statistic).")
    notes += [f"partial pairing: {p}" for p in dict.fromkeys(ctx.partial)]
    notes += _layout_notes(ctx, spec)
    notes += _protocol_notes(ctx, used_tasks)
    notes += _judge_notes(ctx, used_tasks)
    mixed = [t for t in judges_differ(ctx) if t in used_tasks]
    if mixed:
        notes.append(f"DIFFERENT JUDGES for {', '.join(mixed)}: the Judge column says which judge made each row's "
                     "numbers; numbers of different judges are not comparable, and no Δ is shown against an NTP row "
                     "judged by another judge.")
    if ctx.repeats_resampled:
        notes.append("With judge repeats the CIs resample each item's repeats as well (two-level: items, then "
                     "repeats within each drawn item, combined as the scorer does: "
                     f"{', '.join(sorted(ctx.repeats_resampled))}), so they carry judge noise too.")
    if paper:
        if any(r.get("Source") == paper_data.LABEL for r in table.rows):
            srcs = dict.fromkeys(p["source"] for p in paper_data.PAPER_ROWS if p["layout"] == table.layout)
            notes.append(f"'{paper_data.LABEL}' rows: the paper's reported numbers ({'; '.join(srcs)}); their Δ is the "
                         "paper's own difference from its NTP row, without CI; cells the paper does not report "
                         f"are {MISSING}.")
        else:
            notes.append("--paper: no paper numbers for this layout and these models / training sets.")
    return notes


def build_table(run_dirs: Sequence[str | Path], layout: str = "default", paper: bool = False,
                n_resamples: int = 2000, seed: int = 0) -> Table:
    """Load the runs and build ``layout`` (see :mod:`bench.tables`), notes included."""
    if layout not in LAYOUTS:
        close = difflib.get_close_matches(layout, list(LAYOUTS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        fail(f"unknown layout {layout!r}{hint}; choose from {', '.join(LAYOUTS)}")
    results = load_results(run_dirs)
    if not results:
        left = ", ".join(sorted({f for _, f, _ in results.left_out}))
        fail(f"{', '.join(map(str, run_dirs))}: no scores of the variants and tasks the run config lists yet "
             f"(only {left}, left by an earlier config)")
    ctx = Comparison(results, n_resamples, seed)
    spec = LAYOUT_SPECS[_auto(ctx) if layout == "auto" else layout]
    _require(ctx, spec)
    table = _assemble(ctx, spec, paper and spec.paper)
    table.notes = _notes(ctx, table, spec, paper)
    table.warnings = [n for n in table.notes if n.startswith(("INCOMPLETE", "DIFFERENT JUDGES", "not shown"))]
    return table

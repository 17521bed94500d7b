"""What a table reads from run directories (through :mod:`bench.rundir`), and what the metrics mean.

A :class:`TaskResult` is one task summary with its per-item values and the variant's settings as trained; a variant
trained over several seeds becomes one TaskResult holding the per-seed ones (:func:`merge_seeds`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..rundir import (SEED_SEP, ItemValue, ItemValues, MetricUnit, Provenance, RunConfigRecord, RunDir, TaskSummary,
                      TrainRecord, fail, split_seed)


@dataclass
class TaskResult:
    """One ``scores/<variant>/<task>.json`` with its per-item values and the variant's settings."""

    run: str
    variant: str
    task: str
    kind: str
    model: str
    train_data: str
    judge: str
    judge_kind: str
    metrics: dict
    n_items: int | None
    n_failed: int
    repeats: int
    metric_shown: str | None
    items: list[ItemValue] | None  # one per (example_id, turn) with a value (ItemValues.combined)
    variant_cfg: dict = field(default_factory=dict)
    failures: dict | None = None  # failed verdicts by cause: {transport, refused, unparsable, malformed}
    task_rank: int = 1 << 30  # position in the run config's task list (tables keep that column order)
    protocol: str | None = None  # the peer protocol the numbers follow (scorer + judge prompts)
    conformant: bool | None = None  # False: made another way, not comparable with the published benchmark
    seed: int | None = None  # run.seeds: the training seed of a "<variant>@s<seed>" summary
    seeds: dict[int, "TaskResult"] | None = None  # a variant's results over seeds, merged (see merge_seeds)
    variant_rank: int = 1 << 30  # position in the run config's variant list (tables keep that row order)
    reliability: dict | None = None  # the judge's reliability on this task (bench.reliability)
    repeat_combine: str | None = None  # how judge repeats became item values: "median" | "mean"
    pairwise_baseline: bool = False  # MT-Bench pairwise: the reference row the others were compared with
    units: dict[str, MetricUnit] = field(default_factory=dict)  # metric -> unit and fraction (TaskSummary.units)
    # the summary it was read from: its headline metric and which item values stand behind each metric
    summary: TaskSummary | None = field(default=None, repr=False, compare=False)

    @property
    def system(self) -> tuple[str, str, str, str]:
        return (self.run, self.train_data, self.model, self.variant)


def _variant_cfg(rd: RunDir, folder: str, cfg: RunConfigRecord, prov: Provenance | None) -> dict:
    """The variant's settings as this run recorded them: its train.json, else provenance.json's variants, else
    the config's sweep entry; only the name when the run recorded none (never today's variant registry)."""
    path = rd.train_record(folder)
    if path.exists():
        v = TrainRecord.read(path).variant
        if v:
            return v
    recorded = ((prov.variants if prov else None) or {}).get(folder)
    if isinstance(recorded, dict):
        return recorded
    return cfg.variant_settings(split_seed(folder)[0]) or {"name": split_seed(folder)[0]}


def _read_items(path: Path) -> list[ItemValue] | None:
    values = ItemValues.read(path)
    return None if values is None else values.combined()


class Results(list):
    """The :class:`TaskResult` list of some run directories, with what they lack: ``missing`` (run, variant
    folder, task) the run's config lists but that has no task summary yet (an unfinished run), ``left_out``
    (run, variant folder, task) summaries the run's config no longer lists (left by an earlier config of the same
    directory: not shown), and ``status`` (run -> provenance status, e.g. running)."""

    missing: list[tuple[str, str, str]]
    left_out: list[tuple[str, str, str]]
    status: dict[str, str]


def expected_folders(cfg: RunConfigRecord) -> list[str] | None:
    """The variant folders a run's config makes (``<variant>@s<seed>`` with run.seeds); None without a config."""
    variants = cfg.variants()
    if not variants:
        return None
    seeds = cfg.run.get("seeds")
    if isinstance(seeds, list) and seeds:
        return [f"{v}{SEED_SEP}{k}" for k in seeds for v in variants]
    return variants


def load_results(run_dirs: Sequence[str | Path]) -> Results:
    """Every task summary of the given run directories that their configs list (plus what is missing, and what
    was left out as another config's; see :class:`Results`); a missing or empty run directory is a UserError."""
    if not run_dirs:
        fail("no run directory given")
    labels = _run_labels([Path(d) for d in run_dirs])
    out: list[TaskResult] = []
    missing: list[tuple[str, str, str]] = []
    left_out: list[tuple[str, str, str]] = []
    status: dict[str, str] = {}
    for run_dir, label in zip(map(Path, run_dirs), labels):
        if not run_dir.is_dir():
            fail(f"{run_dir}: no such run directory")
        rd = RunDir(run_dir).check()
        files = rd.summaries()
        if not files:
            fail(f"{run_dir}: not a bench run directory with results (no scores/<variant>/<task>.json)")
        cfg = RunConfigRecord.read(rd)
        try:
            prov = Provenance.read(rd) if rd.provenance.exists() else None
        except Exception:  # noqa: BLE001 - a table needs the scores, not the provenance record: say so, go on
            prov = None
            status[label] = "provenance.json damaged"
        if prov is not None and prov.status:
            status[label] = prov.status
        task_order, variant_order = cfg.tasks(), cfg.variants()
        expected = expected_folders(cfg)
        # Without run.seeds in the config, seed folders (v@sN) of a listed variant count as that variant's.
        seeded = isinstance(cfg.run.get("seeds"), list) and bool(cfg.run.get("seeds"))
        as_listed = (lambda f: f) if seeded else (lambda f: split_seed(f)[0])
        if expected is not None:
            present = {(as_listed(p.parent.name), p.stem) for p in files}
            missing += [(label, f, t) for f in expected for t in task_order if (f, t) not in present]
        for path in files:
            if expected is not None and (as_listed(path.parent.name) not in expected or
                                         (task_order and path.stem not in task_order)):
                left_out.append((label, path.parent.name, path.stem))
                continue
            s = TaskSummary.read(path)
            variant, seed = split_seed(s.variant)
            out.append(TaskResult(
                run=label, variant=variant, task=s.task, kind=s.kind,
                model=str(s.model or cfg.model_name), train_data=str(s.train_data or cfg.train_data_name),
                judge=s.judge, judge_kind=s.judge_kind, metrics=s.metrics, n_items=s.n_items, n_failed=s.n_failed,
                repeats=s.repeats, metric_shown=s.metric_shown,
                items=_read_items(rd.item_values(path.parent.name, path.stem)),
                variant_cfg=_variant_cfg(rd, path.parent.name, cfg, prov), failures=s.failures, seed=seed,
                task_rank=task_order.index(s.task) if s.task in task_order else 1 << 30,
                variant_rank=variant_order.index(variant) if variant in variant_order else 1 << 30,
                protocol=s.protocol, conformant=s.conformant, reliability=s.reliability,
                repeat_combine=s.repeat_combine, pairwise_baseline=bool(s.pairwise_baseline), units=s.units(),
                summary=s))
    results = Results(merge_seeds(out))
    results.missing, results.left_out, results.status = missing, left_out, status
    return results


def merge_seeds(results: list[TaskResult]) -> list[TaskResult]:
    """One TaskResult per system and task: a variant trained over several seeds becomes a TaskResult whose
    ``seeds`` holds the per-seed ones and whose metrics are their means (metrics every seed has)."""
    groups: dict[tuple, list[TaskResult]] = {}
    out: list[TaskResult] = []
    for s in results:
        if s.seed is None:
            out.append(s)
        else:
            groups.setdefault((*s.system, s.task), []).append(s)
    for members in groups.values():
        members.sort(key=lambda m: m.seed)
        first = members[0]
        keys = [k for k, v in first.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and all(isinstance(m.metrics.get(k), (int, float)) for m in members)]
        metrics = {k: sum(float(m.metrics[k]) for m in members) / len(members) for k in keys}
        out.append(replace(first, metrics=metrics, items=None, seed=None, seeds={m.seed: m for m in members},
                           n_failed=sum(m.n_failed for m in members)))
    return out


def _run_labels(dirs: list[Path]) -> list[str]:
    """Short unique labels for run directories (their names, or their paths when names collide)."""
    names = [_printable(d.resolve().name or str(d)) for d in dirs]
    return names if len(set(names)) == len(names) else [_printable(str(d)) for d in dirs]


def _printable(name: str) -> str:
    """A path name as text a table can hold: bytes that are not UTF-8 (kept by the OS as surrogates) become �."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def results_frame(run_dirs: Sequence[str | Path]):
    """All summary metrics as a long DataFrame: run, train_data, model, variant, task, metric, value."""
    rows = [{"run": s.run, "train_data": s.train_data, "model": s.model, "variant": s.variant, "task": s.task,
             "metric": k, "value": v} for s in load_results(run_dirs) for k, v in s.metrics.items()]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- metrics


def _summary(s: TaskResult) -> TaskSummary:
    """The task summary behind a result (one made from its fields when it was built by hand)."""
    return s.summary or TaskSummary(task=s.task, variant=s.variant, metrics=s.metrics, kind=s.kind,
                                    metric_shown=s.metric_shown)


def headline_metric(s: TaskResult) -> str:
    """The one metric a task is summarised by: the scorer's primary as its summary records it (``metric_shown``;
    an older summary: as its kind implied, :meth:`~bench.rundir.TaskSummary.headline`)."""
    return _summary(s).headline()


def resolve(s: TaskResult, metric: str) -> str:
    """A column's metric spec for this result: ``@headline``, ``@shown`` (the MCQ metric shown), or a name."""
    if metric == "@headline":
        return headline_metric(s)
    if metric == "@shown":
        return s.metric_shown or "acc"
    if metric == "exact_match" and "exact_match" not in s.metrics and "em" in s.metrics:
        return "em"
    return metric


def metric_unit(s: TaskResult, key: str) -> MetricUnit:
    """The unit the summary records for metric ``key``; a ``category/<c>`` value has its headline metric's."""
    unit = s.units.get(key)
    if unit is None and key.startswith("category/"):
        unit = s.units.get(headline_metric(s))
    return unit or MetricUnit()


def is_percent(s: TaskResult, key: str) -> bool:
    """Stored as a fraction (0-1) and shown in percent (the scorer's ``Metric.fraction``); win rates stored in
    percent already are not."""
    return metric_unit(s, key).fraction


def item_scale(s: TaskResult, key: str) -> float:
    """The factor from stored item values to the metric's display unit: 100 for a percent metric (its item values
    are fractions), else 1."""
    return 100.0 if metric_unit(s, key).percent else 1.0


def item_values(s: TaskResult, key: str) -> dict | None:
    """Per-item values behind metric ``key`` keyed by (example_id, turn), in the metric's display unit, or None
    when the metric has no per-item values (LC win rate, average length, an MCQ metric other than the one shown):
    which lines of the item values stand behind it is what the summary records
    (:meth:`~bench.rundir.TaskSummary.items_behind`)."""
    if not s.items:
        return None
    recs = s.items
    selection = _summary(s).items_behind(key)
    if selection == "none":
        return None
    if selection == "turn":
        m = re.search(r"(\d+)$", key)
        recs = [r for r in recs if m and r.turn is not None and int(r.turn) == int(m.group(1))]
    elif selection == "category":
        recs = [r for r in recs if r.category == key.split("/", 1)[-1]]
    scale = item_scale(s, key)
    return {(r.example_id, r.turn): float(r.value) * scale for r in recs}


def item_repeats(s: TaskResult, key: str) -> dict | None:
    """The judge repeats behind :func:`item_values` (same keys and unit) for items that stored them; else None."""
    values = item_values(s, key)
    if not values or not s.items:
        return None
    scale = item_scale(s, key)
    reps = {(r.example_id, r.turn): [float(x) * scale for x in r.repeats]
            for r in s.items if isinstance(r.repeats, list) and len(r.repeats) > 1}
    return {k: v for k, v in reps.items() if k in values} or None


def metric_value(s: TaskResult, key: str) -> float | None:
    """The summary value of ``key`` in display units (fractions in percent), from the items when absent."""
    if s.seeds:  # the mean over seeds of each seed's value
        vals = [metric_value(m, key) for m in s.seeds.values()]
        return None if any(v is None for v in vals) else sum(vals) / len(vals)
    v = s.metrics.get(key)
    if v is None:
        vals = item_values(s, key)
        return sum(vals.values()) / len(vals) if vals else None
    return float(v) * (100.0 if is_percent(s, key) else 1.0)

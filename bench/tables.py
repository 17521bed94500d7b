"""Comparison tables from one or more `bench run` directories, in the paper's layouts.

Reads ``scores/<variant>/<task>.json`` (summary metrics), ``scores/<variant>/<task>.items.jsonl`` (per-item values)
and ``variants/<variant>/train.json`` (the variant's settings); see notes/RUNDIR.md for the contract.

Layouts: ``main`` (MT-Bench turn 1/2/overall, AlpacaEval 2 WR/LC WR/length), ``health`` (MedQA-4/5, PubMedQA,
MedMCQA, their macro average, MMLU-medical as an extra block), ``mixup-role`` (PAPER.md §4.4's shape), ``ablation``
(one row per run × variant with its settings and every metric), ``default`` (every task's headline metric;
what `bench run` prints), ``auto`` (main, else health, else default, depending on the tasks present).

Every row other than the baseline (``ntp``) shows its difference from the baseline row of the same training set ×
model: ``value (+delta [lo, hi])`` with a paired-bootstrap 95 % interval over example ids (:mod:`bench.bootstrap`).
Metrics with no per-item values (AlpacaEval's LC win rate is a GLM fitted on the whole set; the average length is
a corpus statistic) show the difference without an interval. MCQ and exact-match fractions are shown in percent.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import yaml

from sftmix.errors import UserError

from . import paper as paper_data
from .bootstrap import aggregate_repeats, paired_bootstrap, paired_bootstrap_macro, two_level_bootstrap

LAYOUTS = ("default", "auto", "main", "health", "mixup-role", "ablation")
FORMATS = ("md", "csv", "latex")
BASELINE = "ntp"
METHOD_NAMES = {"ntp": "NTP", "sftmix": "SFTMix"}
MAIN_TASKS = ("mt_bench", "alpaca_eval")
HEALTH_TASKS = ("medqa_4", "medqa_5", "pubmedqa", "medmcqa")
EXTRA_HEALTH_TASKS = ("mmlu_medical",)
JUDGE_KINDS = {
    "llm": "LLM judge",
    "reference": "reference-based rubric, not an LLM judge",
    "local": "local model as judge",
}
MISSING = "—"
NOT_COMPARABLE = "†"


# ---------------------------------------------------------------------------------------------------- loading


@dataclass
class Score:
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
    items: list[dict] | None
    variant_cfg: dict = field(default_factory=dict)
    failures: dict | None = None  # failed verdicts by cause: {transport, refused, unparsable}
    task_rank: int = 1 << 30  # position in the run config's task list (tables keep that column order)
    protocol: str | None = None  # the peer protocol the numbers follow (scorer + judge prompts)
    conformant: bool | None = None  # False: made another way, not comparable with the published benchmark
    seed: int | None = None  # run.seeds: the training seed of a "<variant>@s<seed>" score
    seeds: dict[int, "Score"] | None = None  # a variant's scores over seeds, merged (see merge_seeds)

    @property
    def system(self) -> tuple[str, str, str, str]:
        return (self.run, self.train_data, self.model, self.variant)


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def _read_items(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            for k in ("example_id", "value"):
                if k not in r:
                    raise UserError(f"{path}: line {lineno}: missing field {k!r}")
            r["example_id"] = str(r["example_id"])
            r.setdefault("turn", None)
            records.append(r)
    # The contract stores medians already; re-aggregating makes a file with one line per repeat safe too.
    return aggregate_repeats(records)


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    return cfg if isinstance(cfg, dict) else {}


def _variant_cfg(run_dir: Path, variant: str) -> dict:
    path = run_dir / "variants" / variant / "train.json"
    if path.exists():
        v = _read_json(path).get("variant")
        if isinstance(v, dict):
            return v
    from sftmix.variants import VARIANTS  # fallback for runs without train.json: the registered definition

    return VARIANTS.get(variant).to_dict() if variant in VARIANTS else {"name": variant}


def load_scores(run_dirs: Sequence[str | Path]) -> list[Score]:
    """Every score of the given run directories; a missing or empty run directory is a UserError."""
    if not run_dirs:
        raise UserError("no run directory given")
    labels = _run_labels([Path(d) for d in run_dirs])
    out: list[Score] = []
    for run_dir, label in zip(map(Path, run_dirs), labels):
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such run directory")
        files = sorted(p for p in (run_dir / "scores").glob("*/*.json"))
        if not files:
            raise UserError(f"{run_dir}: not a bench run directory with results (no scores/<variant>/<task>.json)")
        cfg = _run_config(run_dir)
        run_cfg = cfg.get("run") or {}
        model_cfg = cfg.get("model") or {}
        default_model = run_cfg.get("model_name") or model_cfg.get("model") or ""
        default_data = run_cfg.get("train_data_name") or ""
        task_order = [t if isinstance(t, str) else (t or {}).get("name") for t in run_cfg.get("tasks") or []]
        for path in files:
            s = _read_json(path)
            variant = s.get("variant") or path.parent.name
            at_seed = re.fullmatch(r"(.+)@s(\d+)", variant)
            variant, seed = (at_seed.group(1), int(at_seed.group(2))) if at_seed else (variant, None)
            task = s.get("task") or path.stem
            metrics = s.get("metrics")
            if not isinstance(metrics, dict):
                raise UserError(f"{path}: missing field 'metrics' (a mapping of metric name to number)")
            out.append(Score(
                run=label, variant=variant, task=task, kind=s.get("kind") or "chat",
                model=str(s.get("model") or default_model), train_data=str(s.get("train_data") or default_data),
                judge=str(s.get("judge") or "none"), judge_kind=str(s.get("judge_kind") or "none"),
                metrics=metrics, n_items=s.get("n_items"), n_failed=int(s.get("n_failed") or 0),
                repeats=int(s.get("repeats") or 1), metric_shown=s.get("metric_shown"),
                items=_read_items(path.with_name(f"{path.stem}.items.jsonl")),
                variant_cfg=_variant_cfg(run_dir, path.parent.name), failures=s.get("failures"), seed=seed,
                task_rank=task_order.index(task) if task in task_order else 1 << 30,
                protocol=s.get("protocol"), conformant=s.get("conformant")))
    return merge_seeds(out)


def merge_seeds(scores: list[Score]) -> list[Score]:
    """One Score per system and task: a variant trained over several seeds becomes a Score whose ``seeds`` holds
    the per-seed Scores and whose metrics are their means (metrics every seed has)."""
    groups: dict[tuple, list[Score]] = {}
    out: list[Score] = []
    for s in scores:
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
        from dataclasses import replace

        out.append(replace(first, metrics=metrics, items=None, seed=None, seeds={m.seed: m for m in members},
                           n_failed=sum(m.n_failed for m in members)))
    return out


def _run_labels(dirs: list[Path]) -> list[str]:
    """Short unique labels for run directories (their names, or their paths when names collide)."""
    names = [d.resolve().name or str(d) for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]


def scores_frame(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """All summary metrics as a long DataFrame: run, train_data, model, variant, task, metric, value."""
    rows = [{"run": s.run, "train_data": s.train_data, "model": s.model, "variant": s.variant, "task": s.task,
             "metric": k, "value": v} for s in load_scores(run_dirs) for k, v in s.metrics.items()]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- metrics


def headline_metric(s: Score) -> str:
    """The one metric a task is summarised by: chat overall/win rate, the MCQ metric shown, exact match."""
    if s.kind == "mcq":
        return s.metric_shown or "acc"
    if s.kind == "exact":
        return "exact_match" if "exact_match" in s.metrics or "em" not in s.metrics else "em"
    for k in ("overall", "win_rate", "score"):
        if k in s.metrics:
            return k
    plain = [k for k in s.metrics if "/" not in k]
    return plain[0] if plain else "overall"


def _resolve(s: Score, metric: str) -> str:
    if metric == "@headline":
        return headline_metric(s)
    if metric == "@shown":
        return s.metric_shown or "acc"
    if metric == "exact_match" and "exact_match" not in s.metrics and "em" in s.metrics:
        return "em"
    return metric


def _is_percent(s: Score, key: str) -> bool:
    return s.kind in ("mcq", "exact")  # stored as fractions 0-1; win rates are already percent


def _item_scale(s: Score, key: str) -> float:
    return 100.0 if s.kind in ("mcq", "exact") or key == "win_rate" else 1.0


def item_values(s: Score, key: str) -> dict | None:
    """Per-item values behind metric ``key`` keyed by (example_id, turn), in the metric's display unit, or None
    when the metric has no per-item values (LC win rate, average length, an MCQ metric other than the one shown)."""
    if not s.items:
        return None
    recs = s.items
    if s.kind == "mcq" and key != (s.metric_shown or "acc"):
        return None
    if s.kind == "exact" and key not in ("exact_match", "em"):
        return None
    if s.kind not in ("mcq", "exact"):
        m = re.fullmatch(r"turn(\d+)", key)
        if m:
            recs = [r for r in recs if r.get("turn") is not None and int(r["turn"]) == int(m.group(1))]
        elif key.startswith("category/"):
            recs = [r for r in recs if r.get("category") == key.split("/", 1)[1]]
        elif key not in ("overall", "win_rate", "score", headline_metric(s)):
            return None
    scale = _item_scale(s, key)
    return {(r["example_id"], r.get("turn")): float(r["value"]) * scale for r in recs}


def metric_value(s: Score, key: str) -> float | None:
    """The summary value of ``key`` in display units (percent for MCQ/exact), from the items when absent."""
    if s.seeds:  # the mean over seeds of each seed's value
        vals = [metric_value(m, key) for m in s.seeds.values()]
        return None if any(v is None for v in vals) else sum(vals) / len(vals)
    v = s.metrics.get(key)
    if v is None:
        vals = item_values(s, key)
        return sum(vals.values()) / len(vals) if vals else None
    return float(v) * (100.0 if _is_percent(s, key) else 1.0)


# ---------------------------------------------------------------------------------------------------- cells


@dataclass
class Cell:
    value: float | None = None
    delta: float | None = None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    per_seed: dict[int, float] | None = None  # run.seeds: each seed's Δ

    def text(self, digits: int = 2) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return MISSING
        out = f"{self.value:.{digits}f}"
        if self.delta is not None and not math.isnan(self.delta):
            ci = f" [{self.lo:.{digits}f}, {self.hi:.{digits}f}]" if self.lo is not None else ""
            seeds = f"; seeds {', '.join(f'{d:+.{digits}f}' for d in self.per_seed.values())}" if self.per_seed else ""
            out += f" ({self.delta:+.{digits}f}{ci}{seeds})"
        return out

    def per_seed_text(self) -> str:
        return ";".join(f"s{k}:{v:+.6g}" for k, v in (self.per_seed or {}).items())


@dataclass
class Table:
    """A rendered-ready table: label columns, value columns (Cells) and the notes printed under it."""

    layout: str
    label_cols: list[str]
    value_cols: list[str]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # the tasks behind the value columns

    def display_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{**{c: r.get(c, "") for c in self.label_cols},
                              **{c: r[c].text() if isinstance(r.get(c), Cell) else MISSING for c in self.value_cols}}
                             for r in self.rows], columns=self.label_cols + self.value_cols)

    def numeric_frame(self) -> pd.DataFrame:
        """One column per number: value, and ``Δ``, ``Δ lo``, ``Δ hi``, ``n`` for columns that have deltas."""
        with_delta = {c for c in self.value_cols for r in self.rows
                      if isinstance(r.get(c), Cell) and r[c].delta is not None}
        seeded = any(isinstance(r.get(c), Cell) and r[c].per_seed for r in self.rows for c in self.value_cols)
        data = []
        for r in self.rows:
            d = {c: r.get(c, "") for c in self.label_cols}
            for c in self.value_cols:
                cell = r.get(c) if isinstance(r.get(c), Cell) else Cell()
                d[c] = cell.value
                if c in with_delta:
                    d.update({f"{c} Δ": cell.delta, f"{c} Δ lo": cell.lo, f"{c} Δ hi": cell.hi, f"{c} n": cell.n})
                    if seeded:
                        d[f"{c} Δ per seed"] = cell.per_seed_text()
            data.append(d)
        df = pd.DataFrame(data)
        for c in with_delta:  # counts stay integers beside the NaNs of baseline rows
            df[f"{c} n"] = df[f"{c} n"].astype("Int64")
        return df


class _Ctx:
    """Shared state of one table build: the scores, the bootstrap settings, and the notes collected."""

    def __init__(self, scores: list[Score], n_resamples: int, seed: int):
        self.scores = sorted(scores, key=lambda s: s.task_rank)  # stable: otherwise file order
        self.n_resamples, self.seed = n_resamples, seed
        self.by_system: dict[tuple, dict[str, Score]] = {}
        for s in scores:
            self.by_system.setdefault(s.system, {})[s.task] = s
        self.partial: list[str] = []
        self.no_ci: set[str] = set()
        self.n_seeds: set[int] = set()  # seed counts behind two-level intervals

    def systems(self) -> list[tuple]:
        """Systems grouped by (train_data, model) in order of appearance, the baseline first in each group."""
        groups: dict[tuple, list[tuple]] = {}
        for sys in self.by_system:
            groups.setdefault((sys[1], sys[2]), []).append(sys)
        from sftmix.variants import VARIANTS

        order = {name: i for i, name in enumerate(VARIANTS)}  # the registry lists NTP, SFTMix, then ablations
        return [s for g in groups.values()
                for s in sorted(g, key=lambda x: (x[3] != BASELINE, order.get(x[3], len(order))))]

    def baseline(self, sys: tuple) -> tuple | None:
        if sys[3] == BASELINE:
            return None
        same_run = (sys[0], sys[1], sys[2], BASELINE)
        if same_run in self.by_system:
            return same_run
        return next((o for o in self.by_system if o[1:] == (sys[1], sys[2], BASELINE)), None)

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(s.task for s in self.scores))

    def cell(self, sys: tuple, task: str, metric: str, label: str) -> Cell | None:
        s = self.by_system[sys].get(task)
        if s is None:
            return None
        key = _resolve(s, metric)
        cell = Cell(value=metric_value(s, key))
        base_sys = self.baseline(sys)
        b = self.by_system.get(base_sys, {}).get(task) if base_sys else None
        if b is None or cell.value is None:
            return cell
        if s.seeds and b.seeds:
            return self._seeded_cell(cell, s, b, key, metric, label, sys)
        a_items, b_items = item_values(b, _resolve(b, metric)), item_values(s, key)
        if a_items and b_items:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # partial overlap becomes a note below the table
                r = paired_bootstrap(a_items, b_items, self.n_resamples, self.seed)
            if not r["complete"]:
                self.partial.append(f"{sys[3]} vs {BASELINE} on {task} ({label}): Δ and CI over the {r['n']} items "
                                    f"both have ({r['n_a']} {BASELINE}, {r['n_b']} {sys[3]})")
            cell.delta, cell.lo, cell.hi, cell.n = r["delta"], r["lo"], r["hi"], r["n"]
        else:
            base_value = metric_value(b, _resolve(b, metric))
            if base_value is not None:
                cell.delta = cell.value - base_value
                self.no_ci.add(label)
        return cell

    def _seeded_cell(self, cell: Cell, s: Score, b: Score, key: str, metric: str, label: str, sys: tuple) -> Cell:
        """Mean over the seeds both have; Δ with a two-level paired bootstrap CI (seeds, then items) and per seed."""
        shared = [k for k in s.seeds if k in b.seeds]
        pairs = {k: (item_values(b.seeds[k], _resolve(b.seeds[k], metric)), item_values(s.seeds[k], key))
                 for k in shared}
        if shared and all(a and v for a, v in pairs.values()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = two_level_bootstrap(pairs, self.n_resamples, self.seed)
            if not r["complete"] or len(shared) != len(s.seeds) or len(shared) != len(b.seeds):
                self.partial.append(f"{sys[3]} vs {BASELINE} on {s.task} ({label}): seeds {shared} and the "
                                    "items both have")
            cell.delta, cell.lo, cell.hi, cell.n, cell.per_seed = r["delta"], r["lo"], r["hi"], r["n"], r["per_seed"]
            self.n_seeds.add(len(shared))
        else:
            per_seed = {k: metric_value(s.seeds[k], key) - metric_value(b.seeds[k], _resolve(b.seeds[k], metric))
                        for k in shared}
            if per_seed:
                cell.delta, cell.per_seed = sum(per_seed.values()) / len(per_seed), per_seed
                self.no_ci.add(label)
        return cell

    def macro_cell(self, sys: tuple, tasks: Sequence[str], label: str) -> Cell | None:
        """Unweighted mean over ``tasks`` of the shown metric; its delta bootstraps each task independently."""
        scores = [self.by_system[sys].get(t) for t in tasks]
        if any(s is None for s in scores):
            return None
        values = [metric_value(s, _resolve(s, "@shown")) for s in scores]
        if any(v is None for v in values):
            return None
        cell = Cell(value=sum(values) / len(values))
        base_sys = self.baseline(sys)
        base = [self.by_system.get(base_sys, {}).get(t) for t in tasks] if base_sys else [None]
        if any(b is None for b in base):
            return cell
        pairs = [(item_values(b, _resolve(b, "@shown")), item_values(s, _resolve(s, "@shown")))
                 for b, s in zip(base, scores)]
        if all(a and b for a, b in pairs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = paired_bootstrap_macro(pairs, self.n_resamples, self.seed)
            cell.delta, cell.lo, cell.hi, cell.n = r["delta"], r["lo"], r["hi"], r["n"]
        else:
            cell.delta = cell.value - sum(metric_value(b, _resolve(b, "@shown")) for b in base) / len(base)
            self.no_ci.add(label)
        return cell


def _method(variant: str) -> str:
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


# ---------------------------------------------------------------------------------------------------- layouts

# (column label, task, metric) per paper layout; "@shown" is the MCQ metric named by the score's metric_shown.
MAIN_COLS = [("MT-Bench turn 1", "mt_bench", "turn1"), ("MT-Bench turn 2", "mt_bench", "turn2"),
             ("MT-Bench overall", "mt_bench", "overall"), ("AE2 WR", "alpaca_eval", "win_rate"),
             ("AE2 LC WR", "alpaca_eval", "lc_win_rate"), ("AE2 avg length", "alpaca_eval", "avg_length")]
HEALTH_COLS = [("MedQA-4", "medqa_4", "@shown"), ("MedQA-5", "medqa_5", "@shown"),
               ("PubMedQA", "pubmedqa", "@shown"), ("MedMCQA", "medmcqa", "@shown")]
HEALTH_AVG = "Average (of 4)"
HEALTH_EXTRA = [("MMLU-medical [extra, not in paper]", "mmlu_medical", "@shown")]
ROLE_COLS = [("MT-Bench overall", "mt_bench", "overall"), ("AE2 LC WR", "alpaca_eval", "lc_win_rate")]
# paper.py metric keys for the columns above
_PAPER_KEYS = {"@shown": "acc"}


def _needs_run_col(ctx: _Ctx) -> bool:
    seen: set = set()
    for sys in ctx.by_system:
        if sys[1:] in seen:
            return True
        seen.add(sys[1:])
    return False


def _columns_present(ctx: _Ctx, cols) -> list:
    tasks = set(ctx.tasks())
    return [c for c in cols if c[1] in tasks]


def _paper_rows(ctx: _Ctx, layout: str, cols, label_fn) -> dict[tuple, list[dict]]:
    """Paper rows per (train_data, model) group of ours, as table rows (with the paper's own NTP deltas)."""
    out: dict[tuple, list[dict]] = {}
    for train_data, model in dict.fromkeys((s[1], s[2]) for s in ctx.by_system):
        prs = paper_data.paper_rows(layout, train_data, model)
        base = next((p for p in prs if p["variant"] == BASELINE), None)
        rows = []
        for p in prs:
            row = label_fn(p["train_data"], p["model"], p["variant"], p)  # the paper's own names
            for label, task, metric in cols:
                key = task if task == "average" else f"{task}/{_PAPER_KEYS.get(metric, metric)}"
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


def _assemble(ctx: _Ctx, layout: str, label_cols: list[str], cols, label_fn, paper: bool,
              special=None) -> Table:
    """Rows for every system (plus paper rows after each group when asked); drops empty value columns.

    A column whose scores were made another way than its benchmark's protocol is marked with a dagger."""
    apart = {s.task for s in ctx.scores if s.conformant is False}
    cols = [(f"{label} {NOT_COMPARABLE}" if task in apart else label, task, metric) for label, task, metric in cols]
    value_cols = [c[0] for c in cols]
    rows, groups_done = [], set()
    prows = _paper_rows(ctx, layout, cols, label_fn) if paper else {}
    systems = ctx.systems()
    for i, sys in enumerate(systems):
        row = label_fn(sys[1], sys[2], sys[3], None, run=sys[0])
        for label, task, metric in cols:
            if task == "average":
                row[label] = special(sys, label) if special else None
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
    tasks = [t for c in cols for t in (HEALTH_TASKS if c[1] == "average" else (c[1],)) if c[0] in value_cols]
    return Table(layout, label_cols, value_cols, rows, tasks=list(dict.fromkeys(tasks)))


def _labeller(paper: bool, with_run: bool, extra=None):
    def label(train_data, model, variant, prow, run=""):
        row = {}
        if paper:
            row["Source"] = paper_data.LABEL if prow else "ours"
        if with_run:
            row["Run"] = "" if prow else run
        row.update({"SFT data": train_data or MISSING, "Model": model or MISSING, "Method": _method(variant)})
        if extra:
            row.update(extra(variant, prow, run, train_data, model))
        return row
    return label


def _require(ctx: _Ctx, tasks: Iterable[str], layout: str) -> None:
    present = ctx.tasks()
    if not set(tasks) & set(present):
        raise UserError(f"layout {layout!r} needs scores for {', '.join(tasks)}; these runs have "
                        f"{', '.join(present)} (try --layout default)")


def _layout_main(ctx: _Ctx, paper: bool) -> Table:
    _require(ctx, MAIN_TASKS, "main")
    with_run = _needs_run_col(ctx)
    label_cols = (["Run"] if with_run else []) + ["SFT data", "Model", "Method"]
    return _assemble(ctx, "main", label_cols, _columns_present(ctx, MAIN_COLS), _labeller(paper, with_run),
                     paper)


def _layout_health(ctx: _Ctx, paper: bool) -> Table:
    _require(ctx, HEALTH_TASKS + EXTRA_HEALTH_TASKS, "health")
    with_run = _needs_run_col(ctx)
    label_cols = (["Run"] if with_run else []) + ["SFT data", "Model", "Method"]
    cols = _columns_present(ctx, HEALTH_COLS)
    if len(cols) == len(HEALTH_COLS):
        cols = cols + [(HEALTH_AVG, "average", None)]
    cols += _columns_present(ctx, HEALTH_EXTRA)
    table = _assemble(ctx, "health", label_cols, cols, _labeller(paper, with_run), paper,
                      special=lambda sys, label: ctx.macro_cell(sys, HEALTH_TASKS, label))
    shown = sorted({s.metric_shown or "acc" for s in ctx.scores if s.kind == "mcq"})
    table.notes.append(f"Accuracy in % ({' / '.join(shown)}: "
                       + ", ".join(f"{m} = {_MCQ_METRICS.get(m, m)}" for m in shown) + "). "
                       f"{HEALTH_AVG} = unweighted macro mean of MedQA-4, MedQA-5, PubMedQA and MedMCQA; its Δ "
                       "bootstraps each benchmark independently. MMLU-medical is an extra task, not a paper column.")
    return table


_MCQ_METRICS = {"acc": "lm-eval acc, argmax of option log-likelihood",
                "acc_norm": "lm-eval acc_norm, argmax of log-likelihood per character of the option",
                "acc_bytes": "lm-eval acc_bytes, argmax of log-likelihood per UTF-8 byte of the option"}


def _layout_mixup_role(ctx: _Ctx, paper: bool) -> Table:
    with_run = _needs_run_col(ctx)
    cols = _columns_present(ctx, ROLE_COLS)
    if not cols:  # e.g. the embedded default: the roles with whatever headline metrics the run has
        cols = _headline_cols(ctx)

    def extra(variant, prow, run, train_data, model):
        cfg = _variant_of(ctx, run, train_data, model, variant) if not prow else _registered(variant)
        ntp_role, mix_role = roles(cfg)
        return {"NTP role": ntp_role, "Mixup role": mix_role}

    label_cols = (["Run"] if with_run else []) + ["SFT data", "Model", "Method", "NTP role", "Mixup role"]
    return _assemble(ctx, "mixup-role", label_cols, cols, _labeller(paper, with_run, extra), paper)


def _variant_of(ctx: _Ctx, run, train_data, model, variant) -> dict:
    scores = ctx.by_system.get((run, train_data, model, variant), {})
    return next(iter(scores.values())).variant_cfg if scores else _registered(variant)


def _registered(variant: str) -> dict:
    from sftmix.variants import VARIANTS

    return VARIANTS.get(variant).to_dict() if variant in VARIANTS else {}


def _first_per_task(ctx: _Ctx) -> dict[str, Score]:
    out: dict[str, Score] = {}
    for s in ctx.scores:
        out.setdefault(s.task, s)
    return out


def _headline_cols(ctx: _Ctx) -> list[tuple]:
    cols = []
    for task, s in _first_per_task(ctx).items():
        m = headline_metric(s)
        cols.append((f"{task} {m}{' (%)' if _is_percent(s, m) else ''}", task, "@headline"))
    return cols


def _layout_default(ctx: _Ctx, paper: bool) -> Table:
    with_run = len({s.run for s in ctx.scores}) > 1
    label_cols = (["Run"] if with_run else []) + ["SFT data", "Model", "Method"]
    return _assemble(ctx, "default", label_cols, _headline_cols(ctx), _labeller(False, with_run), False)


_SETTINGS = ("pairing", "alpha", "mu", "ntp_weight", "reference_model")


def _layout_ablation(ctx: _Ctx, paper: bool) -> Table:
    cols = []
    for task, s in _first_per_task(ctx).items():
        keys = list(dict.fromkeys(k for x in ctx.scores if x.task == task for k in x.metrics if "/" not in k))
        for k in keys:
            cols.append((f"{task} {k}{' (%)' if _is_percent(s, k) else ''}", task, k))

    def extra(variant, prow, run, train_data, model):
        cfg = _variant_of(ctx, run, train_data, model, variant)
        return {k: _fmt_setting(cfg.get(k)) for k in _SETTINGS}

    label_cols = ["Run", "SFT data", "Model", "Method", *_SETTINGS]
    return _assemble(ctx, "ablation", label_cols, cols, _labeller(False, True, extra), False)


def _auto(ctx: _Ctx) -> str:
    tasks = set(ctx.tasks())
    if tasks & set(MAIN_TASKS):
        return "main"
    if tasks & set(HEALTH_TASKS):
        return "health"
    return "default"


_BUILDERS = {"main": _layout_main, "health": _layout_health, "mixup-role": _layout_mixup_role,
             "ablation": _layout_ablation, "default": _layout_default}


# ---------------------------------------------------------------------------------------------------- notes


def _protocol_notes(ctx: _Ctx, tasks: Iterable[str]) -> list[str]:
    """One note per task: the protocol its numbers follow; a dagger where it is not the benchmark's own."""
    notes = []
    for task in tasks:
        ss = [s for s in ctx.scores if s.task == task]
        protocols = list(dict.fromkeys(s.protocol for s in ss if s.protocol))
        if not protocols:
            continue
        mark = f"{NOT_COMPARABLE} " if any(s.conformant is False for s in ss) else ""
        notes.append(f"{mark}{task}: {'; '.join(protocols)}")
    return notes


def _judge_notes(ctx: _Ctx, tasks: Iterable[str]) -> list[str]:
    notes = []
    for task in tasks:
        ss = [s for s in ctx.scores if s.task == task]
        judged = [s for s in ss if s.judge_kind != "none"]
        failed = ", ".join(f"{s.variant} {s.n_failed}" for s in ss)
        if judged:
            judges = dict.fromkeys(f"{s.judge} ({JUDGE_KINDS.get(s.judge_kind, s.judge_kind)})" for s in judged)
            reps = sorted({s.repeats for s in judged})
            rep = f"; median of {'/'.join(map(str, reps))} judge repeats" if reps != [1] else ""
            causes = {c: sum((s.failures or {}).get(c, 0) for s in judged) for c in ("transport", "refused", "unparsable")}
            why = f" - failed verdicts by cause: {', '.join(f'{c} {n}' for c, n in causes.items())}" \
                if any(causes.values()) else ""
            notes.append(f"{task}: judged by {'; '.join(judges)}{rep}; unjudged items (n_failed): {failed}{why}")
        elif any(s.n_failed for s in ss):
            notes.append(f"{task}: unscorable items (n_failed): {failed}")
    return notes


def _notes(ctx: _Ctx, table: Table, paper: bool) -> list[str]:
    used_tasks = table.tasks or ctx.tasks()
    notes = []
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
    notes += table.notes
    notes += _protocol_notes(ctx, used_tasks)
    notes += _judge_notes(ctx, used_tasks)
    if paper:
        if any(r.get("Source") == paper_data.LABEL for r in table.rows):
            srcs = dict.fromkeys(p["source"] for p in paper_data.PAPER_ROWS if p["layout"] == table.layout)
            notes.append(f"'{paper_data.LABEL}' rows: the paper's reported numbers ({'; '.join(srcs)}); their Δ is the "
                         "paper's own difference from its NTP row, without CI; cells the paper does not report "
                         f"are {MISSING}.")
        else:
            notes.append("--paper: no paper numbers for this layout and these models / training sets.")
    return notes


# ---------------------------------------------------------------------------------------------------- output


def build_table(run_dirs: Sequence[str | Path], layout: str = "default", paper: bool = False,
                n_resamples: int = 2000, seed: int = 0) -> Table:
    """Load the runs and build ``layout`` (see the module docstring), notes included."""
    if layout not in LAYOUTS:
        from sftmix.registry import nearest

        raise UserError(f"unknown layout {layout!r}{nearest(layout, LAYOUTS)}; choose from {', '.join(LAYOUTS)}")
    ctx = _Ctx(load_scores(run_dirs), n_resamples, seed)
    if layout == "auto":
        layout = _auto(ctx)
    table = _BUILDERS[layout](ctx, paper)
    table.notes = _notes(ctx, table, paper)
    return table


def _md(df: pd.DataFrame) -> str:
    def esc(x) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def format_table(table: Table, fmt: str = "md") -> str:
    """``md``: pipe table + notes; ``csv``: numbers only (Δ, CI and n in their own columns, no notes);
    ``latex``: a tabular environment + notes as % comments."""
    if fmt == "md":
        return _md(table.display_frame()) + "\n\n" + "\n".join(f"- {n}" for n in table.notes) + "\n"
    if fmt == "csv":
        return table.numeric_frame().to_csv(index=False)
    if fmt in ("latex", "tex"):
        # pandas' to_latex goes through Styler, which needs jinja2 (a torch dependency, so always installed).
        tex = table.display_frame().to_latex(index=False, escape=True)
        return tex + "".join(f"% {n}\n" for n in table.notes)
    raise UserError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")


def render_table(run_dirs: Sequence[str | Path], layout: str = "default", fmt: str = "md", paper: bool = False,
                 n_resamples: int = 2000, seed: int = 0) -> str:
    """The table ``layout`` of the given run directories as text in ``fmt`` (md, csv, latex)."""
    if fmt not in FORMATS + ("tex",):
        raise UserError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    return format_table(build_table(run_dirs, layout, paper, n_resamples, seed), fmt)


def write_tables(run_dir: str | Path, layout: str = "default", formats: Sequence[str] = ("md", "csv", "latex"),
                 paper: bool = False) -> list[Path]:
    """Write ``RUN/tables/<layout>.{md,csv,tex}`` atomically; returns the paths."""
    from sftmix.io import write_text

    table = build_table([run_dir], layout, paper)
    paths = []
    for fmt in formats:
        path = Path(run_dir) / "tables" / f"{table.layout}.{'tex' if fmt == 'latex' else fmt}"
        write_text(path, format_table(table, fmt))
        paths.append(path)
    return paths

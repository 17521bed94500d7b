"""What `bench view` shows, gathered from run directories into plain data (the page embeds it as JSON).

Reads only through :mod:`bench.rundir` (generations, judgments, state, provenance, plots, the contamination report)
and :mod:`bench.tables` (the tables exactly as `bench table` builds them; each variant's per-item values in the
tables' display units). Nothing here imports ``sftmix``.

Items are keyed by (task, example id). A *column* is one trained system of one run: a variant folder
(``sftmix``, ``sftmix@s1``) of a run; its baseline is the same run's ``ntp`` at the same seed, as in the tables.
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import plots
from ..rundir import (ContaminationReport, Judgments, Provenance, RunConfigRecord, RunDir, StageState, TaskSummary,
                      Verdict, fail, split_seed)
from ..rundir.generations import GenerationRecord, read_generations
from ..tables import (BASELINE, LAYOUTS, METHOD_NAMES, Cell, Table, TaskResult, build_table, headline_metric,
                      load_results)
from ..tables.results import _run_labels, _summary, item_scale, item_values


@dataclass
class Column:
    """One system's answers: ``key`` is its ``data-variant`` label (``variant`` folder, ``run:variant`` when
    several runs are shown)."""

    key: str
    run: str  # the run's label (as the tables label runs)
    folder: str  # the variant folder (``sftmix@s1``)
    rd: RunDir
    baseline: str | None = None  # the key of the column this one is compared with

    def to_json(self) -> dict:
        variant, seed = split_seed(self.folder)
        label = METHOD_NAMES.get(variant, variant) + (f" (seed {seed})" if seed is not None else "")
        return {"key": self.key, "run": self.run, "variant": variant, "seed": seed, "label": label,
                "baseline": self.baseline}


def _clean(x: Any) -> Any:
    """JSON-safe: NaN and infinities become None (the page shows them as missing)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------------ summary


def _stage_times(rd: RunDir) -> list[dict]:
    out = []
    for path in rd.state_files():
        stage = path.stem.replace("__", "/")
        st = StageState.read(rd, stage)
        if st is not None:
            out.append({"stage": stage, "status": st.status, "seconds": st.seconds})
    return out


def _fingerprints(rd: RunDir) -> list[dict]:
    """Per (variant, task) summary: the hashes and settings it was made with."""
    keys = ("data_hash", "prompt_hash", "scorer", "scorer_version", "judge", "judge_kind", "judge_config",
            "judge_fingerprint", "protocol", "repeats", "n_items", "n_failed", "config_hash", "git_commit",
            "stage_key")
    out = []
    for path in rd.summaries():
        d = TaskSummary.read(path).to_dict()
        out.append({"variant": path.parent.name, "task": path.stem, **{k: d.get(k) for k in keys if k in d}})
    return out


def run_summary(run_dir: Path, label: str) -> dict:
    """A run's summary and provenance: config hash, commit, model, data, judge, prompt fingerprints, stages."""
    rd = RunDir(run_dir)
    prov = Provenance.read(rd) or Provenance(None)
    cfg = RunConfigRecord.read(rd)
    git = prov.git
    model = prov.model or {}
    train = prov.train_data or {}
    facts = [
        ("run", str(run_dir)),
        ("status", prov.status),
        ("config hash", prov.config_hash),
        ("git commit", (git.commit or "") + (" (uncommitted changes)" if git.dirty else "") if git else None),
        ("model", model.get("id") or cfg.model_name or None),
        ("chat template hash", prov.chat_template_hash),
        ("training data", cfg.train_data_name or train.get("name") or train.get("path")),
        ("training data hash", train.get("sha256_16") or train.get("hash")),
        ("seed(s)", ", ".join(map(str, prov.seeds)) if prov.seeds else prov.seed),
        ("variants", ", ".join(cfg.variants()) or None),
        ("tasks", ", ".join(t for t in cfg.tasks() if t) or None),
        ("backend", (prov.backend or {}).get("name")),
        ("judge", ", ".join(f"{k}: {v}" for k, v in (prov.judge or {}).items()) or None),
    ]
    task_data = [{"task": t, **{k: v for k, v in (d or {}).items()}} for t, d in (prov.task_data or {}).items()]
    return _clean({
        "label": label,
        "facts": [{"name": k, "value": None if v in (None, "") else str(v)} for k, v in facts],
        "task_data": task_data,
        "protocols": prov.protocols,
        "fingerprints": _fingerprints(rd),
        "stages": _stage_times(rd),
        "provenance": prov.to_dict() if rd.provenance.exists() else None,
    })


# ------------------------------------------------------------------------------------------------ tables


def table_data(run_dirs: Sequence[Path], layout: str, paper: bool, n_resamples: int, seed: int) -> dict:
    """The table ``layout`` as `bench table` builds it: its display strings (exactly what `bench table` prints)
    and each cell's numbers."""
    table: Table = build_table(run_dirs, layout, paper, n_resamples, seed)
    shown = table.display_frame()
    rows = []
    for r, (_, text_row) in zip(table.rows, shown.iterrows()):
        cells = []
        for c in table.label_cols + table.value_cols:
            cell = r.get(c)
            num = None
            if c in table.value_cols and isinstance(cell, Cell):
                num = {"value": cell.value, "delta": cell.delta, "lo": cell.lo, "hi": cell.hi, "n": cell.n}
            cells.append({"text": str(text_row[c]), "num": num})
        rows.append(cells)
    return _clean({"layout": table.layout, "label_cols": table.label_cols, "value_cols": table.value_cols,
                   "rows": rows, "notes": table.notes})


def table_layouts(wanted: Sequence[str]) -> list[str]:
    """The layouts asked for, checked, without repeats."""
    bad = [w for w in wanted if w not in LAYOUTS]
    if bad:
        fail(f"unknown layout {bad[0]!r}; choose from {', '.join(LAYOUTS)}")
    return list(dict.fromkeys(wanted))


# ------------------------------------------------------------------------------------------------ plots


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


PLOT_TITLES = {"confidence": "Confidence histogram with the median split", "training_loss": "Training loss per variant"}


def run_plots(run_dir: Path) -> list[dict]:
    """The run's ``plots/*.png`` as data URIs; the training-loss and per-category plots are drawn in memory when
    the run has the data but not the file (e.g. a `bench judge` folder). Nothing is written into the run."""
    rd = RunDir(run_dir)
    out = {p.stem: {"name": p.stem, "uri": _data_uri(p.read_bytes()), "drawn": False} for p in rd.plot_files()}
    if "training_loss" not in out:
        fig = plots.loss_figure(run_dir)
        if fig is not None:
            out["training_loss"] = {"name": "training_loss", "uri": _data_uri(plots.png_bytes(fig)), "drawn": True}
    tasks = {p.stem for p in rd.summaries()}
    if any(plots.category_plot_name(t) not in out for t in tasks):
        for task, fig in plots.category_figures(run_dir).items():
            name = plots.category_plot_name(task)
            if name not in out:
                out[name] = {"name": name, "uri": _data_uri(plots.png_bytes(fig)), "drawn": True}
    order = ["confidence", "training_loss"]
    items = sorted(out.values(), key=lambda d: (order.index(d["name"]) if d["name"] in order else 9, d["name"]))
    for d in items:
        d["title"] = PLOT_TITLES.get(d["name"]) or (d["name"].replace("_categories", "") + ": score per category")
    return items


# ------------------------------------------------------------------------------------------------ items


def dirty_items(rd: RunDir) -> dict[str, set[str]] | None:
    """{task: ids of dirty items} from the run's contamination summary (``contamination.json``); None when the run
    has none (:meth:`~bench.rundir.ContaminationReport.dirty_ids`)."""
    return ContaminationReport.dirty_ids(rd)


def _generation_path(rd: RunDir, folder: str, task: str) -> Path | None:
    path = rd.generations(folder, task)
    if path.exists():
        return path
    alt = rd.generate_output(task)  # a `bench generate` folder that `bench judge` scored under a label
    return alt if rd.generate_marker.exists() and alt.exists() else None


def _verdict_text(raw: Any) -> str | None:
    """The judge's reply as text; a log-probability reply also lists its top tokens."""
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        text = raw.get("text") or ""
        top = raw.get("top_logprobs") or []
        if top:
            text += ("\n" if text else "") + "top log-probabilities of the first token: " + ", ".join(
                f"{t.get('token')!r} {float(t.get('logprob')):.3f}" for t in top if isinstance(t, dict))
        return text
    return json.dumps(raw, ensure_ascii=False)


def _prompt_turns(rec: GenerationRecord) -> tuple[str | None, str | None]:
    """(system message, this turn's user message) of a generation record's ``messages``."""
    msgs = rec.messages or []
    system = next((m.get("content") for m in msgs if m.get("role") == "system"), None)
    user = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"), None)
    return system, user


def _mcq_choice_text(rec: GenerationRecord, index: Any) -> str | None:
    conts = rec.continuations or []
    if isinstance(index, int) and 0 <= index < len(conts):
        return conts[index]
    return None


class _ItemBuilder:
    def __init__(self):
        self.items: dict[tuple[str, str], dict] = {}
        self.order: list[tuple[str, str]] = []

    def item(self, task: str, eid: str) -> dict:
        key = (task, eid)
        if key not in self.items:
            self.items[key] = {"task": task, "id": eid, "turns": [], "cells": {}}
            self.order.append(key)
        return self.items[key]


def _add_generations(it: dict, recs: list[GenerationRecord]) -> dict:
    """Item-level fields (category, prompt per turn, reference, choices) from one column's records, and that
    column's answers per turn. What a record shows follows from its fields, whatever its kind: a text record's
    ``reference``, else its gold ``answer`` when that is text (a short answer; an MCQ answer is a choice index), and
    its parsed ``pred`` (a generated MCQ answer's choice) when the scorer recorded one."""
    cell: dict[str, Any] = {"answers": []}
    for rec in sorted(recs, key=lambda r: int(r.turn or 0)):
        t = int(rec.turn or 0)
        if it.get("category") is None and rec.category is not None:
            it["category"] = str(rec.category)
        while len(it["turns"]) <= t:
            it["turns"].append({})
        turn = it["turns"][t]
        if rec.scoring == "loglik":
            if rec.context is not None:
                turn.setdefault("prompt", rec.context)
            if rec.continuations:
                it.setdefault("choices", rec.continuations)
            if rec.answer is not None:
                it.setdefault("answer", rec.answer)
                turn.setdefault("reference", _mcq_choice_text(rec, rec.answer))
            pred = rec.values.get("pred")
            cell["pred"] = pred
            cell["logliks"] = rec.logliks
            cell["answers"].append(_mcq_choice_text(rec, pred))
            continue
        if rec.text is None and rec.continuations and rec.logliks is not None:
            # a log-likelihood request of another kind (perplexity: the text scored as the continuation of its
            # context): the scored text is the item's, the column's answer is the model's log-likelihood of it
            if rec.context:
                turn.setdefault("prompt", rec.context)
            scored = rec.answer if isinstance(rec.answer, str) else "".join(rec.continuations)
            turn.setdefault("reference", scored)
            while len(cell["answers"]) < t:
                cell["answers"].append(None)
            cell["answers"].append("log-likelihood " + ", ".join(f"{float(x):.3f}" for x in rec.logliks))
            cell["logliks"] = rec.logliks
            continue
        system, user = _prompt_turns(rec)
        if system is not None:
            it.setdefault("system", system)
        if user is not None:
            turn.setdefault("prompt", user)
        ref = rec.reference
        if ref is None and isinstance(rec.answer, str):
            ref = rec.answer
        if ref is not None:
            turn.setdefault("reference", str(ref))
        while len(cell["answers"]) < t:
            cell["answers"].append(None)
        cell["answers"].append(rec.text)
        if "pred" in rec.values:
            cell["pred"] = rec.values["pred"]
    return cell


def _verdicts(recs: list[Verdict], offset: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in recs:
        v = {"turn": int(r.turn or 0) - offset, "repeat": int(r.repeat or 0), "score": r.score,
             "failed": r.failed, "failure": r.failure, "error": r.error, "text": _verdict_text(r.raw),
             "judge": r.judge or None, "form": r.form or None}
        if (r.meta or {}).get("swapped") is not None:
            v["swapped"] = bool(r.meta["swapped"])
        out.setdefault(r.example_id, []).append({k: x for k, x in v.items() if x is not None})
    for vs in out.values():
        vs.sort(key=lambda v: (v["turn"], v["repeat"]))
    return out


def _columns(results: list[TaskResult], run_dirs: Sequence[Path], labels: list[str]) -> dict:
    """(column key -> Column, result per (column key, task)) for every variant folder of every run."""
    several = len(run_dirs) > 1
    rd_of = dict(zip(labels, (RunDir(d) for d in run_dirs)))
    cols: dict[str, Column] = {}
    per: dict[tuple[str, str], TaskResult] = {}
    for r in results:
        members = r.seeds.items() if r.seeds else [(None, r)]
        for seed, m in members:
            folder = r.variant if seed is None else f"{r.variant}@s{seed}"
            key = f"{r.run}:{folder}" if several else folder
            cols.setdefault(key, Column(key, r.run, folder, rd_of[r.run]))
            per[(key, r.task)] = m
    for c in cols.values():
        variant, seed = split_seed(c.folder)
        if variant != BASELINE:
            base = BASELINE if seed is None else f"{BASELINE}@s{seed}"
            base_key = f"{c.run}:{base}" if several else base
            c.baseline = base_key if base_key in cols else None
    # baseline first, then the tables' row order (run config order), then seeds
    rank = {}
    for r in results:
        rank[(r.run, r.variant)] = (r.variant != BASELINE, r.variant_rank,
                                    list(METHOD_NAMES).index(r.variant) if r.variant in METHOD_NAMES else 9)
    order = sorted(cols.values(), key=lambda c: (labels.index(c.run), rank.get((c.run, split_seed(c.folder)[0])),
                                                 split_seed(c.folder)[1] or 0))
    return {c.key: c for c in order}, per


def _score(values: list) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def items_data(run_dirs: Sequence[Path], results: list[TaskResult]) -> dict:
    """Columns, tasks and every item with each column's answers, values, verdicts and difference from NTP."""
    run_dirs = [Path(d) for d in run_dirs]
    labels = _run_labels(run_dirs)
    cols, per = _columns(results, run_dirs, labels)
    b = _ItemBuilder()
    tasks: dict[str, dict] = {}
    dirty: dict[str, set[str]] | None = None
    for rd in {c.rd.root: c.rd for c in cols.values()}.values():
        d = dirty_items(rd)
        if d is not None:
            dirty = {**(dirty or {}), **{t: (dirty or {}).get(t, set()) | ids for t, ids in d.items()}}
    for (key, task), res in per.items():
        col = cols[key]
        metric = headline_metric(res)
        unit = "%" if item_scale(res, metric) == 100.0 else ""
        info = tasks.setdefault(task, {"name": task, "kind": res.kind, "metric": metric, "unit": unit,
                                       "judged": res.judge_kind != "none", "judges": [], "rank": res.task_rank})
        if res.judge_kind != "none" and res.judge not in info["judges"]:
            info["judges"].append(res.judge)
        offset = _summary(res).first_turn()  # verdicts and item values may number turns from 1 (FastChat)
        gen_path = _generation_path(col.rd, col.folder, task)
        gens: dict[str, list[GenerationRecord]] = {}
        for rec in read_generations(gen_path) if gen_path else []:
            gens.setdefault(rec.example_id, []).append(rec)
        verdicts = _verdicts(Judgments.read(col.rd.judgments(col.folder, task)), offset)
        values = item_values(res, metric) or {}
        by_item: dict[str, dict[int, float]] = {}
        for (eid, turn), v in values.items():
            by_item.setdefault(str(eid), {})[int(turn or 0) - offset] = v
        for eid in list(dict.fromkeys([*gens, *by_item, *verdicts])):
            it = b.item(task, eid)
            cell = _add_generations(it, gens.get(eid, []))
            n = max(len(cell["answers"]), len(it["turns"]), 1 + max(by_item.get(eid) or {0: None}))
            cell["values"] = [by_item.get(eid, {}).get(t) for t in range(n)]
            cell["score"] = _score(cell["values"])
            if eid in verdicts:
                cell["verdicts"] = verdicts[eid]
            it["cells"][key] = cell
    items = []
    for key in b.order:
        it = b.items[key]
        task = it["task"]
        cells = it["cells"]
        it["diff"] = {k: cells[k]["score"] - cells[c.baseline]["score"]
                      for k, c in cols.items()
                      if c.baseline and k in cells and c.baseline in cells
                      and cells[k]["score"] is not None and cells[c.baseline]["score"] is not None}
        scores = {round(c["score"], 9) for c in cells.values() if c["score"] is not None}
        it["disagree"] = len(scores) > 1
        it["failed"] = any(v.get("failed") for c in cells.values() for v in c.get("verdicts", []))
        if dirty is not None and task in dirty:  # items of a task the report does not cover stay unknown
            it["dirty"] = it["id"] in dirty[task]
        items.append(it)
    task_list = sorted(tasks.values(), key=lambda t: (t["rank"], t["name"]))
    for t in task_list:
        del t["rank"]
    names = [t["name"] for t in task_list]
    items.sort(key=lambda it: names.index(it["task"]))  # stable: each task's items in file order
    for t in task_list:
        its = [it for it in items if it["task"] == t["name"]]
        t["n_items"] = len(its)
        t["categories"] = sorted({it["category"] for it in its if it.get("category") is not None})
        t["n_turns"] = max((len(it["turns"]) for it in its), default=1)
    return _clean({"columns": [c.to_json() for c in cols.values()], "tasks": task_list, "items": items,
                   "contamination": dirty is not None})


# ------------------------------------------------------------------------------------------------ all of it


def gather(run_dirs: Sequence[str | Path], layouts: Sequence[str] = ("auto",), paper: bool = False,
           n_resamples: int = 2000, seed: int = 0) -> dict:
    """Everything the page shows, for the given run directories."""
    run_dirs = [Path(d) for d in run_dirs]
    results = load_results(run_dirs)  # also refuses a missing, empty or unreadable run directory
    labels = _run_labels(run_dirs)
    wanted = table_layouts(layouts)
    tables = []
    for layout in wanted:
        t = table_data(run_dirs, layout, paper, n_resamples, seed)
        if all(t["layout"] != x["layout"] for x in tables):
            tables.append(t)
    if list(layouts) == ["auto"] and tables[0]["layout"] != "default":
        tables.append(table_data(run_dirs, "default", paper, n_resamples, seed))
    return {
        "runs": [run_summary(d, label) for d, label in zip(run_dirs, labels)],
        "tables": tables,
        "plots": [{"run": label, "plots": run_plots(d)} for d, label in zip(run_dirs, labels)],
        "browser": items_data(run_dirs, results),
        "settings": {"layouts": list(layouts), "paper": paper, "resamples": n_resamples, "bootstrap_seed": seed},
    }

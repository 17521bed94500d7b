"""One contamination check: a training set against several tasks' items, with the report each task gets.

The report of a task (stored as ``RUN/contamination/<task>.json``, :class:`bench.rundir.ContaminationReport`) says
what was compared and how (method, n, normalisation and which implementation ran, the fields on each side), on
which data (the training data's identity and row hash, the task's data and item hashes), and its result: the item
ids checked, and for each dirty item every training row index (0-based, in the order the training file loads)
and row id, with the longest matched span for the first few rows.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from tqdm.auto import tqdm

from core.errors import UserError
from core.io import hash_obj, stable_json

from .fields import TRAIN_FIELDS, item_fields, item_texts
from .janitor import RULES, implementation, normaliser
from .minhash import detect_near
from .ngram import EvalText, detect

if TYPE_CHECKING:
    from ..tasks import Task

METHODS = ("ngram", "minhash")
# Bumped when a change here changes which items are flagged (it keys the pipeline's contamination stage).
METHOD_VERSION = 1


@dataclass(frozen=True)
class Settings:
    """How to compare: ``ngram`` (lm-eval's exact word n-gram overlap, ``n`` words) or ``minhash`` (near
    duplicates: Jaccard of word ``shingle``-gram sets >= ``threshold``, MinHash LSH with ``num_perm``
    permutations). ``max_matches``: matched spans stored per dirty item (its row list is always complete)."""

    n: int = 13
    method: str = "ngram"
    threshold: float = 0.8
    shingle: int = 5
    num_perm: int = 128
    max_matches: int = 10

    @classmethod
    def of(cls, args) -> Settings:
        """The settings of a run config's ``contamination`` section (:class:`bench.config.ContaminationArgs`)."""
        return cls(n=args.n, method=args.method, threshold=args.threshold, shingle=args.shingle,
                   num_perm=args.num_perm, max_matches=args.max_matches)

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"contamination method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.n < 1:
            raise UserError(f"contamination n must be >= 1, got {self.n}")

    def key(self) -> dict:
        """What determines the result (``max_matches`` only trims the spans shown)."""
        d = {"method": self.method, "n": self.n, "version": METHOD_VERSION, "max_matches": self.max_matches}
        if self.method == "minhash":
            d.update(threshold=self.threshold, shingle=self.shingle, num_perm=self.num_perm)
        return d

    def describe(self) -> str:
        if self.method == "ngram":
            return f"{self.n}-gram overlap"
        return f"near duplicates (Jaccard of {self.shingle}-word shingles >= {self.threshold:g}, MinHash LSH)"


def rows_hash(rows: Sequence[dict]) -> str:
    """Short sha256 of the rows as loaded (row by row: the whole set is never serialised at once)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(stable_json(row).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def _row_id(row: dict, index: int) -> str:
    rid = row.get("id")  # as sftmix.data.example_id: the row's own id, else its position
    return str(index) if rid is None else str(rid)


def check(train_rows: Sequence[dict], train_data: dict, tasks: Sequence[tuple["Task", list[dict]]],
          settings: Settings = Settings(), progress: bool = True) -> dict[str, dict]:
    """Compare ``train_rows`` (described by ``train_data``: its identity, split, limit) with each task's items;
    return each task's report as a dict (see the module docstring)."""
    t0 = time.time()
    norm = normaliser()
    texts: list[EvalText] = []
    for s, (task, items) in enumerate(tasks):
        fields = item_fields(task)
        for i, item in enumerate(items):
            texts += [EvalText(s, i, name, text, " ".join(norm(text).split()))
                      for name, text in item_texts(item, fields, task.kind)]
    n_items = [len(items) for _, items in tasks]

    def bar(rows):
        return tqdm(rows, desc="contamination: training rows", unit="row", file=sys.stderr,
                    disable=not progress, mininterval=1.0)

    if settings.method == "ngram":
        found = detect(train_rows, texts, n_items, settings.n, progress=bar, max_matches=settings.max_matches)
    else:
        found = detect_near(train_rows, texts, n_items, n=settings.n, threshold=settings.threshold,
                            shingle=settings.shingle, num_perm=settings.num_perm, progress=bar,
                            max_matches=settings.max_matches)
    seconds = round(time.time() - t0, 2)
    train = {**train_data, "n_rows": len(train_rows), "rows_hash": rows_hash(train_rows)}
    reports = {}
    for (task, items), f in zip(tasks, found):
        dirty = {}
        for i, rows in f.dirty.items():
            dirty[str(items[i]["id"])] = {"rows": rows, "row_ids": [_row_id(train_rows[r], r) for r in rows],
                                          "matches": f.matches.get(i, [])}
        n = len(items)
        reports[task.name] = {
            "task": task.name, "kind": task.kind, "n_items": n, "n_dirty": len(dirty),
            "dirty_pct": round(100.0 * len(dirty) / n, 4) if n else 0.0,
            **settings.key(),
            "normalisation": RULES, "implementation": implementation(),
            "fields": {"item": list(item_fields(task)), "train": list(TRAIN_FIELDS)},
            "train_data": train,
            "task_data": {"data_hash": task.data_hash, "source": task.source, "items_hash": hash_obj(items)},
            "item_ids": [str(it["id"]) for it in items], "dirty": dirty, "seconds": seconds,
        }
    return reports


def dirty_rows(reports: dict[str, dict]) -> dict[str, dict]:
    """The ``--json`` form: ``{task: {"n_items": N, "dirty": {item id: [training row index, ...]}}}``."""
    return {task: {"n_items": r["n_items"], "dirty": {i: d["rows"] for i, d in r["dirty"].items()}}
            for task, r in reports.items()}


def summary_lines(reports: dict[str, dict], show: int = 5) -> list[str]:
    """A report as text: one line per task, then the first ``show`` dirty items of each with their longest match."""
    if not reports:
        return ["contamination: no tasks"]
    first = next(iter(reports.values()))
    t = first["train_data"]
    method = Settings(**{k: first[k] for k in ("n", "method", "threshold", "shingle", "num_perm") if k in first})
    lines = [f"contamination: {method.describe()} between {t.get('source')} ({t['n_rows']} rows"
             f"{', sha256 ' + t['sha256_16'] if t.get('sha256_16') else ''}) and {len(reports)} task(s); "
             f"normalisation: {first['normalisation']} [{first['implementation']}]", ""]
    lines += ["| task | items | dirty | dirty % | item fields compared |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['task']} | {r['n_items']} | {r['n_dirty']} | {r['dirty_pct']:.2f} | "
              f"{', '.join(r['fields']['item'])} |" for r in reports.values()]
    for r in reports.values() if show > 0 else ():
        if not r["dirty"]:
            continue
        lines += ["", f"{r['task']}: {r['n_dirty']} dirty item(s)" + (f", the first {show}:" if r['n_dirty'] > show
                                                                      else ":")]
        for item_id, d in list(r["dirty"].items())[:show]:
            rows = ", ".join(map(str, d["rows"][:8])) + (f", ... ({len(d['rows'])} rows)" if len(d["rows"]) > 8 else "")
            lines.append(f"  {item_id}: training rows {rows}")
            m = max(d["matches"], key=lambda m: m.get("words", m.get("similarity", 0))) if d["matches"] else None
            if m and "span" in m:
                lines.append(f"    row {m['row']}: {m['words']} words, {m['item_field']} ~ {m['train_field']}: "
                             f"{_one_line(m['span'])!r}")
            elif m:
                lines.append(f"    row {m['row']}: Jaccard {m['similarity']:.3f}, {m['item_field']} ~ "
                             f"{m['train_field']}")
    return lines


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"

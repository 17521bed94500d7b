"""The typed records of a run directory, each with ``read`` and ``write`` (the format: docs/RUNDIR.md)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .paths import RunDir, fail, iter_jsonl, read_json, write_json, write_jsonl


def _split(cls, d: dict) -> tuple[dict, dict]:
    """(the dataclass's own fields, everything else) of a record's JSON object. An own field stored as an
    explicit null stays in the rest too, so that writing the record back keeps the null (files stay identical)."""
    names = {f.name for f in fields(cls)} - {"extra"}
    own = {k: v for k, v in d.items() if k in names}
    return own, {k: v for k, v in d.items() if k not in names or v is None}


@dataclass
class StageState:
    """``state/<stage>.json``: the stage key it was run under and how far it got (running/incomplete/done)."""

    key: str
    status: str
    time: float
    extra: dict = field(default_factory=dict)  # e.g. seconds

    def write(self, rd: RunDir, stage: str) -> None:
        write_json(rd.state(stage), {"key": self.key, "status": self.status, "time": self.time, **self.extra})

    @classmethod
    def read(cls, rd: RunDir, stage: str) -> "StageState | None":
        path = rd.state(stage)
        if not path.exists():
            return None
        own, extra = _split(cls, read_json(path))
        if not isinstance(own.get("key"), str) or not isinstance(own.get("status"), str):
            fail(f"{path}: damaged (no stage key or status)")
        return cls(key=own.get("key"), status=own.get("status"), time=own.get("time"), extra=extra)


def _none_if_nan(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass
class TaskSummary:
    """``scores/<v>/<task>.json``: one (variant, task)'s metrics and how they were made.

    ``metrics`` maps metric names to numbers (None for undefined ones; ``category/<c>`` for per-category values).
    Fields other than the typed ones (hashes, scorer, judge config, stage key, ...) travel in ``extra``."""

    task: str
    variant: str
    metrics: dict
    kind: str = "chat"
    model: str | None = None
    train_data: str | None = None
    judge: str = "none"
    judge_kind: str = "none"
    n_items: int | None = None
    n_failed: int = 0
    repeats: int = 1
    metric_shown: str | None = None  # mcq: which metric the task reports (acc, acc_norm, ...)
    failures: dict | None = None  # failed verdicts by cause: {transport, refused, unparsable, malformed}
    protocol: str | None = None  # the peer protocol the numbers follow (scorer + judge prompts)
    conformant: bool | None = None  # False: made another way, not comparable with the published benchmark
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        d["metrics"] = {k: _none_if_nan(v) for k, v in self.metrics.items()}
        return {**self.extra, **d}

    def write(self, rd: RunDir) -> Path:
        rd.mark_version()
        path = rd.summary(self.variant, self.task)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, d: dict, *, variant: str, task: str, where: Path | str = "summary") -> "TaskSummary":
        if not isinstance(d.get("metrics"), dict):
            fail(f"{where}: missing field 'metrics' (a mapping of metric name to number)")
        bad = next((k for k, v in d["metrics"].items()
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))), None)
        if bad is not None:
            fail(f"{where}: metric {bad!r} is {d['metrics'][bad]!r}, not a number or null")
        own, extra = _split(cls, d)
        own["variant"], own["task"] = own.get("variant") or variant, own.get("task") or task
        own["kind"] = own.get("kind") or "chat"
        for k, default in (("n_failed", 0), ("repeats", 1)):
            try:
                own[k] = int(own.get(k) or default)
            except (TypeError, ValueError):
                fail(f"{where}: {k} is {own.get(k)!r}, not a count")
        for k in ("judge", "judge_kind"):
            own[k] = str(own.get(k) or "none")
        return cls(**own, extra=extra)

    @classmethod
    def read(cls, path: Path) -> "TaskSummary":
        """One summary file; variant and task default to its folder and file names."""
        return cls.from_dict(read_json(path), variant=path.parent.name, task=path.stem, where=path)


@dataclass
class ItemValues:
    """``scores/<v>/<task>.items.jsonl``: one record per (example_id, turn) with its ``value`` (plus e.g.
    ``category``). Values are in the metric's stored unit (fractions for mcq/exact); repeats are already combined."""

    rows: list[dict]

    def write(self, rd: RunDir, variant: str, task: str) -> Path:
        rd.mark_version()
        path = rd.item_values(variant, task)
        write_jsonl(path, self.rows)
        return path

    @classmethod
    def read(cls, path: Path) -> "ItemValues | None":
        """The file's records, checked (``example_id`` as a string, ``turn`` present); None when there is none."""
        if not path.exists():
            return None
        rows = []
        for lineno, r in iter_jsonl(path):
            if not isinstance(r, dict):
                fail(f"{path}: line {lineno}: expected a JSON object")
            for k in ("example_id", "value"):
                if k not in r:
                    fail(f"{path}: line {lineno}: missing field {k!r}")
            v = r["value"]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                fail(f"{path}: line {lineno}: value {v!r} is not a number or null")
            r["example_id"] = str(r["example_id"])
            r.setdefault("turn", None)
            rows.append(r)
        return cls(rows)


@dataclass
class ContaminationReport:
    """``contamination/<task>.json``: which of the task's items share text with the run's training data
    (:mod:`bench.contamination`). ``item_ids``: every item checked; ``dirty``: item id -> ``{"rows": [training row
    index, ...], "row_ids": [...], "matches": [{row, item_field, train_field, words, span, train_span}, ...]}``.
    How it was made (method, n, normalisation, fields, data hashes, stage key) travels in ``extra``."""

    task: str
    n_items: int
    item_ids: list[str]
    dirty: dict[str, dict]
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.extra, "task": self.task, "n_items": self.n_items, "item_ids": self.item_ids,
                "dirty": self.dirty}

    def write(self, rd: RunDir) -> Path:
        rd.mark_version()
        path = rd.contamination_report(self.task)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, path: Path) -> "ContaminationReport":
        d = read_json(path)
        own, extra = _split(cls, d)
        ids, dirty = own.get("item_ids"), own.get("dirty")
        if not isinstance(ids, list) or not isinstance(dirty, dict) \
                or not all(isinstance(v, dict) and isinstance(v.get("rows"), list) for v in dirty.values()):
            fail(f"{path}: not a contamination report (needs item_ids and dirty: {{item id: {{rows: [...]}}}})")
        return cls(task=str(own.get("task") or path.stem), n_items=int(own.get("n_items") or len(ids)),
                   item_ids=[str(i) for i in ids], dirty={str(k): v for k, v in dirty.items()}, extra=extra)

    @classmethod
    def write_summary(cls, rd: RunDir) -> Path:
        """Rewrite ``contamination.json`` (every task's ``{"n_items", "dirty": {item id: [rows]}}``) from the
        full reports in ``contamination/``."""
        rd.mark_version()
        summary = {t: {"n_items": r.n_items, "dirty": {i: d["rows"] for i, d in r.dirty.items()}}
                   for t, r in cls.read_all(rd).items()}
        write_json(rd.contamination, summary)
        return rd.contamination

    @classmethod
    def read_all(cls, rd: RunDir) -> dict[str, "ContaminationReport"]:
        """Task -> its report, for every report in the run directory."""
        return {r.task: r for r in map(cls.read, rd.contamination_reports())}

    def clean_ids(self) -> set[str]:
        """The checked items that share nothing with the training data."""
        return set(self.item_ids) - set(self.dirty)


@dataclass
class TrainRecord:
    """``variants/<v>/train.json`` (written by :func:`sftmix.recipe.finetune`): the variant's settings as trained
    and the trainer's log history (one dict per logging step: step, loss, ntp_loss, mixup_loss, ...)."""

    variant: dict
    log_history: list[dict]
    extra: dict = field(default_factory=dict)

    def write(self, rd: RunDir, name: str) -> Path:
        path = rd.train_record(name)
        write_json(path, {**self.extra, "variant": self.variant, "log_history": self.log_history})
        return path

    @classmethod
    def read(cls, path: Path) -> "TrainRecord":
        d = read_json(path)
        own, extra = _split(cls, d)
        variant = own.get("variant") if isinstance(own.get("variant"), dict) else {}
        history = [h for h in own.get("log_history") or [] if isinstance(h, dict)]
        return cls(variant=variant, log_history=history, extra=extra)

    def losses(self) -> list[float]:
        return [h["loss"] for h in self.log_history if "loss" in h]


@dataclass
class Provenance:
    """``provenance.json``: how the results were made (config hash, seeds, git, packages, hardware, backend,
    judge, protocols, data hashes, variants, stage keys) and whether the last run finished (``status``)."""

    config_hash: str | None
    status: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.extra, "config_hash": self.config_hash, **({"status": self.status} if self.status else {})}

    def write(self, rd: RunDir) -> None:
        write_json(rd.provenance, self.to_dict())

    @classmethod
    def read(cls, rd: RunDir) -> "Provenance | None":
        if not rd.provenance.exists():
            return None
        try:
            d = read_json(rd.provenance)
        except Exception as e:
            fail(f"{e}; the record of how the results were made is damaged - delete it and re-run the same command "
                 "(it is written again; config.yaml keeps the config)")
        own, extra = _split(cls, d)
        return cls(config_hash=own.get("config_hash"), status=own.get("status"), extra=extra)


@dataclass
class RunConfigRecord:
    """``config.yaml``, the resolved config, as reporting reads it: names and orders, nothing to train with."""

    run: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # the training data section (source, split, max_examples, ...)

    @classmethod
    def read(cls, rd: RunDir) -> "RunConfigRecord":
        if not rd.config.exists():
            return cls()
        import yaml

        try:
            cfg = yaml.safe_load(rd.config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            fail(f"{rd.config}: invalid YAML ({(str(e).splitlines() or [type(e).__name__])[0]})")
        except UnicodeDecodeError:
            fail(f"{rd.config}: not UTF-8 text: the file is damaged")
        cfg = cfg if isinstance(cfg, dict) else {}
        return cls(**{k: cfg.get(k) if isinstance(cfg.get(k), dict) else {}
                      for k in ("run", "model", "data", "generation")})

    @property
    def model_name(self) -> str:
        return self.run.get("model_name") or self.model.get("model") or ""

    @property
    def train_data_name(self) -> str:
        return self.run.get("train_data_name") or ""

    def tasks(self) -> list[str]:
        return [t if isinstance(t, str) else (t or {}).get("name") for t in self.run.get("tasks") or []]

    def variants(self) -> list[str]:
        """The run's variant names in the config's order (sweep entries by their ``name``)."""
        names = [v if isinstance(v, str) else (v or {}).get("name") for v in self.run.get("variants") or []]
        return [n for n in names if n]

    def variant_settings(self, name: str) -> dict | None:
        """A sweep entry's own settings (``{name, base, **overrides}``), or None for a plain name."""
        for v in self.run.get("variants") or []:
            if isinstance(v, dict) and v.get("name") == name:
                return dict(v)
        return None

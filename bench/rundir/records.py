"""The typed records of a run directory, each with ``read`` and ``write`` (the format: docs/RUNDIR.md)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import compat
from .paths import RunDir, fail, iter_jsonl, read_json, write_json, write_jsonl


def _split(cls, d: dict) -> tuple[dict, dict]:
    """(the dataclass's own fields, everything else) of a record's JSON object (:func:`.compat.split`)."""
    return compat.split((f.name for f in fields(cls)), d)


@dataclass
class StageState:
    """``state/<stage>.json``: the stage key it was run under, how far it got (queued / running / incomplete /
    done / failed / interrupted) and where it ran. ``StageState(key, status, time, {"seconds": 3.2, ...})`` takes
    the other fields as a dict too (they are moved into their typed fields); fields no version names stay in
    ``extra``. Optional fields are left out of the file while None."""

    key: str
    status: str
    time: float
    extra: dict = field(default_factory=dict)
    seconds: float | None = None
    executor: str | None = None  # local / processes / slurm / ray
    host: str | None = None
    pid: int | None = None
    job_id: str | None = None
    attempt: int | None = None
    counters: dict | None = None  # model / judge requests the stage made
    error: str | None = None  # failed: its one line
    deterministic: bool | None = None  # failed on bad input: not retried
    log: str | None = None  # the worker's log file

    def __post_init__(self) -> None:
        typed = _STATE_FIELDS.intersection(self.extra)
        if typed:
            extra = dict(self.extra)
            for k in typed:
                if extra[k] is not None:  # an explicit null stays in extra, so the file keeps it
                    setattr(self, k, extra.pop(k))
            self.extra = extra

    def details(self) -> dict:
        """Every field but the key, status and time, as stored."""
        return {**self.extra, **{k: getattr(self, k) for k in _STATE_FIELDS if getattr(self, k) is not None}}

    def write(self, rd: RunDir, stage: str) -> None:
        write_json(rd.state(stage), {"key": self.key, "status": self.status, "time": self.time, **self.details()})

    @classmethod
    def read(cls, rd: RunDir, stage: str) -> "StageState | None":
        path = rd.state(stage)
        if not path.exists():
            return None
        d = read_json(path)
        if not isinstance(d.get("key"), str) or not isinstance(d.get("status"), str):
            fail(f"{path}: damaged (no stage key or status)")
        rest = {k: v for k, v in d.items() if k not in ("key", "status", "time")}
        return cls(key=d["key"], status=d["status"], time=d.get("time"), extra=rest)


_STATE_FIELDS = frozenset(f.name for f in fields(StageState)) - {"key", "status", "time", "extra"}


def _none_if_nan(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass(frozen=True)
class MetricUnit:
    """How a metric is stored and shown (from the scorer's :class:`bench.scorers.Metric`): ``unit`` as tables
    label it ("%", "1-10", "bits", "chars", "" for none) and ``fraction``: the summary value is stored 0-1 and shown
    x100. Item values behind a "%" metric are stored as fractions either way (a win rate's items are 0-1)."""

    unit: str = ""
    fraction: bool = False
    # which per-item values stand behind it (the scorer's Metric.items): "all" (every line's value), "turn" (the
    # lines of turn N, N the number ending the metric's name), "category" (the lines of category c, for
    # "category/<c>"), "none"; None: not recorded (an older summary, read by its kind: compat.legacy_items)
    items: str | None = None

    @property
    def percent(self) -> bool:
        return self.unit == "%"

    def to_dict(self) -> dict:
        return {"unit": self.unit, "fraction": self.fraction, **({"items": self.items} if self.items else {})}


ITEM_SELECTIONS = ("all", "turn", "category", "none")  # MetricUnit.items


@dataclass
class TaskSummary:
    """``scores/<v>/<task>.json``: one (variant, task)'s metrics and how they were made.

    ``metrics`` maps metric names to numbers (None for undefined ones; ``category/<c>`` for per-category values).
    Every field docs/RUNDIR.md names is typed here; optional ones are omitted from the file when None, so files
    written before a field existed keep their bytes. Fields no version names travel in ``extra``."""

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
    metric_shown: str | None = None  # the headline metric (the scorer's primary); older chat summaries have none
    failures: dict[str, int] | None = None  # failed verdicts by cause (judgments.FAILURES)
    protocol: str | None = None  # the peer protocol the numbers follow (scorer + judge prompts)
    conformant: bool | None = None  # False: made another way, not comparable with the published benchmark
    seed: int | None = None
    # how it was made: the scorer, the judge's config and prompt fingerprint, the task's data and prompt hashes
    scorer: str | None = None
    scorer_version: str | None = None
    judge_config: str | None = None
    judge_fingerprint: str | None = None
    data_hash: str | None = None
    prompt_hash: str | None = None
    # judged tasks: how far the verdicts can be trusted (bench.reliability), how repeats became item values
    reliability: dict | None = None
    repeat_combine: str | None = None  # "median" | "mean"
    both_orders: bool | None = None  # judge.swap: pairwise verdicts asked in both orders
    pairwise_baseline: bool | None = None  # MT-Bench pairwise: the baseline's own row
    versus: str | None = None  # MT-Bench pairwise: the baseline variant compared with
    lc_note: str | None = None  # AlpacaEval: why the length-controlled win rate is missing
    # metric -> its unit and whether it is stored as a fraction (the scorer's Metric); None in older summaries,
    # which read as compat.legacy_metric_units says (see units())
    metric_units: dict[str, MetricUnit] | None = None
    # the number of the first turn in its judgments and item values (FastChat's judged turns: 1; generations
    # records count from 0); None in older summaries (compat.legacy_turn_base)
    turn_base: int | None = None
    # which run and stage made it (bench run; `bench judge` records none of these)
    run: str | None = None
    stage_key: str | None = None
    config_hash: str | None = None
    git_commit: str | None = None
    provenance: str | None = None  # the run's provenance file name
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        d["metrics"] = {k: _none_if_nan(v) for k, v in self.metrics.items()}
        if self.metric_units is not None:  # a unit without a recorded selection is written as it was read
            d["metric_units"] = {k: u.to_dict() for k, u in self.metric_units.items()}
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
        absent = compat.ABSENT["TaskSummary"]
        own["kind"] = own.get("kind") or absent["kind"]
        for k in ("n_failed", "repeats"):
            try:
                own[k] = int(own.get(k) or absent[k])
            except (TypeError, ValueError):
                fail(f"{where}: {k} is {own.get(k)!r}, not a count")
        for k in ("judge", "judge_kind"):
            own[k] = str(own.get(k) or absent[k])
        units = own.get("metric_units")
        if units is not None:
            if not isinstance(units, dict) or not all(isinstance(u, dict) for u in units.values()):
                fail(f"{where}: metric_units is {units!r}, not a mapping of metric name to {{unit, fraction}}")
            bad = next((u["items"] for u in units.values() if u.get("items") not in (None, *ITEM_SELECTIONS)), None)
            if bad is not None:
                fail(f"{where}: metric_units has items {bad!r}, not one of {', '.join(ITEM_SELECTIONS)}")
            own["metric_units"] = {k: MetricUnit(str(u.get("unit") or ""), bool(u.get("fraction")), u.get("items"))
                                   for k, u in units.items()}
        if own.get("turn_base") is not None and (isinstance(own["turn_base"], bool)
                                                  or not isinstance(own["turn_base"], int)):
            fail(f"{where}: turn_base is {own['turn_base']!r}, not a turn number")
        return cls(**own, extra=extra)

    def _selections_recorded(self) -> bool:
        return bool(self.metric_units) and self.metric_shown is not None and all(
            u.items is not None for u in self.metric_units.values())

    def headline(self) -> str:
        """The one metric the task is summarised by: ``metric_shown`` (the scorer's primary), or in an older
        summary what its kind implied (:func:`.compat.legacy_headline`)."""
        if self._selections_recorded():
            return str(self.metric_shown)
        return compat.legacy_headline(self.kind, self.metric_shown, self.metrics)

    def items_behind(self, key: str) -> str:
        """Which item values stand behind metric ``key``: "all", "turn", "category" or "none" (as
        :attr:`MetricUnit.items`). A ``category/<c>`` metric has its category's items when the headline has items;
        the headline has every item unless the scorer said otherwise; an older summary: its kind's rule."""
        if not self._selections_recorded():
            return compat.legacy_items(self.kind, self.metric_shown, self.metrics, key)
        units, headline = self.metric_units or {}, self.headline()
        if key in units:
            return units[key].items or "none"
        if key.startswith("category/"):
            return "category" if self.items_behind(headline) != "none" else "none"
        return "all" if key == headline else "none"

    def first_turn(self) -> int:
        """The number its judgments and item values give a conversation's first turn (generations records: 0)."""
        return self.turn_base if self.turn_base is not None else compat.legacy_turn_base(self.kind)

    def units(self) -> dict[str, MetricUnit]:
        """Every metric's unit: as recorded, else (an older summary) as :func:`.compat.legacy_metric_units`
        infers it from the kind; metrics the scorer does not describe (counts, ``category/<c>``) are absent."""
        if self.metric_units is not None:
            return dict(self.metric_units)
        return {k: MetricUnit(u, f) for k, (u, f) in compat.legacy_metric_units(self.kind, self.metrics).items()}

    @classmethod
    def read(cls, path: Path) -> "TaskSummary":
        """One summary file; variant and task default to its folder and file names."""
        return cls.from_dict(read_json(path), variant=path.parent.name, task=path.stem, where=path)


@dataclass(slots=True)
class ItemValue:
    """One line of the item values: an item's (and turn's) ``value`` in the metric's stored unit (fractions for
    mcq/exact), its ``category``, and with more than one judge repeat each repeat's value (``repeats``, in repeat
    order). ``extra``: the line's other fields (mcq: every metric's value of the item, ``acc``, ``acc_norm``, ...)."""

    example_id: str
    value: float | None
    turn: int | None = None
    category: str | None = None
    repeats: list[float] | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {**self.extra, "example_id": self.example_id, "value": self.value, "turn": self.turn,
             "category": self.category}
        if self.repeats is not None:
            d["repeats"] = self.repeats
        return d

    @classmethod
    def from_dict(cls, r: dict, where: str = "item value") -> "ItemValue":
        """One stored line (a scorer's row); ``example_id`` becomes a string, absent fields read as
        :data:`.compat.ABSENT` says."""
        if not isinstance(r, dict):
            fail(f"{where}: expected a JSON object")
        r = dict(r)
        for k in ("example_id", "value"):
            if k not in r:
                fail(f"{where}: missing field {k!r}")
        v = r.pop("value")
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            fail(f"{where}: value {v!r} is not a number or null")
        a = _ITEM_ABSENT
        return cls(str(r.pop("example_id")), v, r.pop("turn", a["turn"]), r.pop("category", a["category"]),
                   r.pop("repeats", a["repeats"]), r)


_ITEM_ABSENT = compat.ABSENT["ItemValue"]


@dataclass
class ItemValues:
    """``scores/<v>/<task>.items.jsonl``: one :class:`ItemValue` per (example_id, turn); repeats already combined
    (an older file with one line per repeat is combined by :meth:`combined`). Built from the rows a scorer returns
    (dicts) or from :class:`ItemValue` objects."""

    rows: list[ItemValue]

    def __post_init__(self) -> None:
        self.rows = [r if isinstance(r, ItemValue) else ItemValue.from_dict(r) for r in self.rows]

    def write(self, rd: RunDir, variant: str, task: str) -> Path:
        rd.mark_version()
        path = rd.item_values(variant, task)
        write_jsonl(path, [r.to_dict() for r in self.rows])
        return path

    @classmethod
    def read(cls, path: Path) -> "ItemValues | None":
        """The file's records, checked (``example_id`` as a string); None when there is none."""
        if not path.exists():
            return None
        rows = [ItemValue.from_dict(r, f"{path}: line {lineno}") for lineno, r in iter_jsonl(path)]
        values = cls.__new__(cls)
        values.rows = rows
        return values

    def combined(self) -> list[ItemValue]:
        """One row per (example_id, turn) with a value: rows whose value is null (failed) are left out, and several
        rows of one item (an older file's judge repeats) become one with their median (:func:`.compat
        .combine_repeats`) and the first row's other fields."""
        groups: dict[tuple, list[ItemValue]] = {}
        for r in self.rows:
            if r.value is not None:
                groups.setdefault((r.example_id, r.turn), []).append(r)
        out = []
        for rs in groups.values():
            first = rs[0]
            value = float(first.value) if len(rs) == 1 else compat.combine_repeats([float(r.value) for r in rs])
            extra = first.extra if "repeat" not in first.extra else {k: v for k, v in first.extra.items()
                                                                      if k != "repeat"}
            out.append(ItemValue(first.example_id, value, first.turn, first.category, first.repeats, extra))
        return out


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

    @staticmethod
    def dirty_ids(rd: RunDir) -> dict[str, set[str]] | None:
        """{task: ids of its dirty items} from ``contamination.json``; None when the run has none. Also reads the
        shapes `bench contamination --json` wrote by hand (``{"tasks": {...}}``, ``dirty`` as a list of ids)."""
        if not rd.contamination.exists():
            return None
        rep = read_json(rd.contamination)
        tasks = rep.get("tasks") if isinstance(rep.get("tasks"), dict) else rep
        out: dict[str, set[str]] = {}
        for task, entry in tasks.items():
            if isinstance(entry, dict) and "dirty" in entry:
                dirty = entry["dirty"]
                out[task] = {str(k) for k in (dirty.keys() if isinstance(dirty, dict) else dirty or [])}
        return out

    def clean_ids(self) -> set[str]:
        """The checked items that share nothing with the training data."""
        return set(self.item_ids) - set(self.dirty)


@dataclass
class TrainRecord:
    """``variants/<v>/train.json`` (written by :func:`sftmix.recipe.finetune`, which never imports bench): the
    variant's settings as trained and the trainer's log history (one dict per logging step: step, loss, ntp_loss,
    mixup_loss, ...); optional fields are left out of the file while None."""

    variant: dict
    log_history: list[dict]
    metrics: dict | None = None  # the Trainer's final train_runtime, train_loss, ...
    config: dict | None = None  # the train config
    data_identity: dict | None = None
    data_stats: dict | None = None
    confidence: str | None = None  # the confidence table the variant trained with
    model_path: str | None = None  # the base model
    reused_from: str | None = None  # the dynamics folder whose model was adopted
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        return {**self.extra, **d}

    def write(self, rd: RunDir, name: str) -> Path:
        path = rd.train_record(name)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, path: Path) -> "TrainRecord":
        d = read_json(path)
        own, extra = _split(cls, d)
        own["variant"] = own.get("variant") if isinstance(own.get("variant"), dict) else {}
        own["log_history"] = [h for h in own.get("log_history") or [] if isinstance(h, dict)]
        for k in ("metrics", "config", "data_identity", "data_stats"):
            if own.get(k) is not None and not isinstance(own[k], dict):  # not this version's shape: kept as is
                extra[k] = own.pop(k)
        return cls(**own, extra=extra)

    def losses(self) -> list[float]:
        return [h["loss"] for h in self.log_history if "loss" in h]


@dataclass
class GitInfo:
    """The code a run used: the checkout's commit (``"unknown"`` outside a git checkout) and whether it had
    uncommitted changes (None when unknown); :func:`bench.provenance.git_commit` makes its JSON."""

    commit: str = "unknown"
    dirty: bool | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.extra, "commit": self.commit, "dirty": self.dirty}

    @classmethod
    def from_dict(cls, d: dict) -> "GitInfo":
        own, extra = _split(cls, d)
        return cls(commit=str(own.get("commit") or "unknown"), dirty=own.get("dirty"), extra=extra)


@dataclass
class Provenance:
    """``provenance.json``: how the results were made and whether the last run finished (``status``: running /
    done / failed / interrupted). Every field docs/RUNDIR.md names is typed here; the file's JSON is the same as
    when it was a plain mapping (a field is omitted while None unless the file stored an explicit null, which stays;
    unknown fields stay in ``extra``). ``Provenance(config_hash, status, {...})`` takes the other fields as a
    mapping too (they are moved into their typed fields), as `bench run` builds them."""

    config_hash: str | None
    status: str | None = None
    extra: dict = field(default_factory=dict)
    seed: int | None = None  # the training seed (train.seed)
    seeds: list[int] | None = None  # run.seeds: the seeds each variant trained with
    git: GitInfo | None = None
    packages: dict[str, str] | None = None  # package -> version (python's too)
    hardware: dict | None = None  # platform, CPUs, torch threads and how they were chosen, GPUs
    backend: dict | None = None  # the generation backend's name and settings
    judge: dict | None = None  # {kind, model}: the run's judge
    protocols: dict[str, str] | None = None  # task -> the peer protocol its numbers follow
    model: dict | None = None  # {id, path}
    chat_template_hash: str | None = None
    train_data: dict | None = None  # source, sha256_16, ...
    task_data: dict[str, dict] | None = None  # task -> {data_hash, prompt_hash, source}
    variants: dict[str, dict] | None = None  # variant -> its settings
    stage_keys: dict[str, str] | None = None  # stage -> the key it ran under
    executor: dict | None = None  # the executor settings that were set
    last_run: dict | None = None  # the last finished run's summary (stages run, requests, judge cost, ...)
    stopped: dict | None = None  # failed / interrupted: {time, error, hint}

    def __post_init__(self) -> None:
        typed = _PROV_FIELDS.intersection(self.extra)
        if typed:
            extra = dict(self.extra)
            for k in typed:
                # an explicit null stays in extra, so the file keeps it; so does a git entry of another shape
                if extra[k] is not None and (k != "git" or isinstance(extra[k], (dict, GitInfo))):
                    setattr(self, k, extra.pop(k))
            self.extra = extra
        if isinstance(self.git, dict):
            self.git = GitInfo.from_dict(self.git)

    @property
    def git_commit(self) -> str | None:
        return self.git.commit if self.git is not None else None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _PROV_FIELDS if getattr(self, k) is not None}
        if self.git is not None:
            d["git"] = self.git.to_dict()
        return {**self.extra, "config_hash": self.config_hash, **({"status": self.status} if self.status else {}),
                **d}

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
        rest = {k: v for k, v in d.items() if k not in ("config_hash", "status")}
        return cls(config_hash=d.get("config_hash"), status=d.get("status"), extra=rest)


_PROV_FIELDS = frozenset(f.name for f in fields(Provenance)) - {"config_hash", "status", "extra"}


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


@dataclass
class JobRecord:
    """``executor/jobs/<stage>.json``: the job the coordinator last submitted for a stage (which executor, the
    engine's job id, the coordinator's host, the attempt, when). A later coordinator waits for that job while it
    lives, and ``bench status`` says whether it does. Fields no version names stay in ``extra``."""

    stage: str
    executor: str
    job_id: str
    host: str
    attempt: int = 1
    time: float = 0.0
    extra: dict = field(default_factory=dict)

    def write(self, rd: RunDir) -> None:
        write_json(rd.stage_job(self.stage), {"stage": self.stage, "executor": self.executor, "job_id": self.job_id,
                                              "host": self.host, "attempt": self.attempt, "time": self.time,
                                              **self.extra})

    @classmethod
    def read(cls, rd: RunDir, stage: str) -> "JobRecord | None":
        path = rd.stage_job(stage)
        if not path.exists():
            return None
        d = read_json(path)
        if not isinstance(d, dict):
            fail(f"{path}: damaged (not a JSON object)")
        own, rest = _split(cls, d)
        return cls(stage=str(own.get("stage") or stage), executor=str(own.get("executor") or ""),
                   job_id=str(own.get("job_id") or ""), host=str(own.get("host") or ""),
                   attempt=int(own.get("attempt") or 1), time=float(own.get("time") or 0.0),
                   extra=rest)

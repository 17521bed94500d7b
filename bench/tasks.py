"""Evaluation tasks as data: one YAML file per task in ``bench/task_files/`` (shipped with the package), in other
packages' folders (entry points ``sftmix_bench.tasks``) and in any folder named in ``BENCH_TASKS_DIR``.

A task file names its data source, how a record becomes normalised fields, the prompt format, generation settings
and its scorer. Example (MedQA, lm-eval's prompt)::

    name: medqa_4
    kind: mcq                      # optional: the scorer's kind (chat, mcq, exact, perplexity, or a plugin's)
    data:
      hub: {path: GBaker/MedQA-USMLE-4-options-hf, split: test}
      local: null                  # a json/jsonl/parquet/csv file or dataset folder; beats the hub
      fallback: {package: lm_eval, file: ..., parser: mmlu_cot_prompts}   # an installed package's copy, offline
    fields: {id: id, question: sent1, choices: "[ending0, ending1, ending2, ending3]", answer: label}
    prompt: "Question: {{ question }}\\n{% for l, c in options %}{{ l }}. {{ c }}\\n{% endfor %}Answer:"
    continuation: " {{ label }}"
    scorer: mcq
    contamination: [question, choices]   # item fields `bench contamination` compares (default: the kind's)

``fields`` values are Jinja *expressions* over one raw record (``_index`` is the row number), so a mapping can
combine or index fields (``"[opa, opb, opc, opd]"``, ``"context.contexts"``). A task whose data comes in several
layouts lists them under ``layouts: {name: fields}``; the first whose raw fields the data has is used. Every raw
field an expression reads (except for ``id``, ``category`` and ``reference``) must be present: data in another
layout is refused in one line that names the missing fields. ``prompt`` and ``continuation`` are
Jinja templates over the normalised item. Source order: ``--data-path``/``local`` > hub (skipped when offline) >
``fallback``; with none usable the error says so in one line.

The scorer owns the task's *kind*: which fields an item of that kind needs and what the model is asked
(:mod:`bench.scorers`); this module knows no kind. This module holds the :class:`Task` (a YAML file -> normalised
items, prompts, settings) and the registry of task names; :mod:`bench.task_sources` reads the data (sources and file
parsers), :mod:`bench.task_fields` the ``fields:`` expressions and templates.
"""
from __future__ import annotations

import os
import re
import types
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml

from bench import task_sources
from bench.backends.base import GenSettings
from bench.scorers import Scorer, get_scorer
from bench.task_fields import compile_expr, required_fields, template
from bench.task_schema import check_task_file
from bench.task_sources import PARSERS  # noqa: F401  (part of this module's API)
from core.errors import UserError, first_line, os_error
from core.io import hash_obj, package_file  # noqa: F401  (package_file: part of this module's API)
from core.registry import Registry, nearest

SOURCES = ("hub", "local", "fallback", "bigbench", "bbh")
LETTERS = tuple("ABCDEFGHIJ")  # the default labels' first ten (a task's `labels` default; more follow: see letters)
# Normalised item keys that a `fields:` mapping may set; any other key is kept as an extra prompt variable.
# ``labels``: the data's own option labels per item (a list, or null when its options have none).
STANDARD_FIELDS = ("id", "category", "turns", "reference", "question", "choices", "answer", "labels")


def letters(n: int) -> list[str]:
    """``n`` option labels: A..Z, then AA, AB, ... (spreadsheet columns), so any number of choices has one."""
    out = []
    for i in range(n):
        label, i = "", i + 1
        while i:
            i, r = divmod(i - 1, 26)
            label = chr(65 + r) + label
        out.append(label)
    return out


BUNDLED_TASKS = Path(__file__).resolve().parent / "task_files"  # package data: installed with the package
TASK_PLUGINS = "sftmix_bench.tasks"  # entry-point group of other packages' task folders


def _plugin_dirs() -> list[Path]:
    """Task folders other installed packages declare in the ``sftmix_bench.tasks`` entry-point group: the entry
    point loads a package (its folder holds the YAML files), a path, or a function returning a path."""
    dirs = []
    for ep in entry_points(group=TASK_PLUGINS):
        dist = getattr(ep.dist, "name", None) or "?"
        try:
            obj = ep.load()
            obj = obj() if callable(obj) and not isinstance(obj, types.ModuleType) else obj
            path = Path(obj.__file__).parent if isinstance(obj, types.ModuleType) else Path(obj)
        except Exception as e:  # noqa: BLE001 - any failure of third-party code: one line naming the plugin
            raise UserError(f"task plugin {ep.name!r} ({ep.value}, from package {dist}) failed to load: "
                            f"{type(e).__name__}: {first_line(e)}") from None
        if not path.is_dir():
            raise UserError(f"task plugin {ep.name!r} (from package {dist}) names {path}, which is not a folder")
        dirs.append(path)
    return dirs


def tasks_dirs() -> list[Path]:
    """Where task YAML files are found, in order: the package's own (``bench/task_files``), each installed plugin's
    folder (entry-point group ``sftmix_bench.tasks``), a checkout's ``tasks/`` folder when there is one (where task
    files lived before), then each folder in ``BENCH_TASKS_DIR`` (os.pathsep-separated)."""
    dirs = [BUNDLED_TASKS, *_plugin_dirs()]
    legacy = Path(__file__).resolve().parents[1] / "tasks"
    if legacy.is_dir():
        dirs.append(legacy)
    dirs += [Path(p) for p in os.environ.get("BENCH_TASKS_DIR", "").split(os.pathsep) if p]
    return dirs


def limit_rows(rows: list, limit: int | None, mode: str = "first") -> list:
    """``limit`` rows: the first ones (lm-eval's ``--limit``), or ``spread``: evenly spaced over the source order
    (row ``floor(i * n / limit)``), so that a task whose file is grouped by subject or subtask (MMLU, HHH) is
    sampled across all of them rather than from the first group only."""
    if limit is None or limit >= len(rows):
        return list(rows)
    if mode == "first":
        return list(rows[:limit])
    if mode == "spread":
        return [rows[i * len(rows) // limit] for i in range(limit)]
    raise UserError(f"run.limit_mode must be first or spread, got {mode!r}")


@dataclass
class Task:
    name: str
    kind: str  # the scorer's kind (see bench.scorers): what an item holds and what the model is asked
    scorer: str
    data: dict
    fields: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, dict[str, str]] | None = None  # alternative field mappings, tried in order
    description: str = ""
    prompt: str | None = None  # mcq/exact: the question prompt (jinja); chat: optional per-turn wrapper
    continuation: str = " {{ label }}"  # mcq: one continuation per option
    labels: list[str] = field(default_factory=lambda: list(LETTERS))
    system: str | None = None
    chat_template: bool = False  # mcq: wrap the prompt in the model's chat template (lm-eval default: raw text)
    mcq_mode: str = "loglik"  # loglik | generate (generate, then parse the letter)
    generation: dict = field(default_factory=dict)
    greedy: bool = True  # False: use category_temperatures where the item's category has one
    category_temperatures: dict[str, float] = field(default_factory=dict)
    reference_categories: list[str] | None = None  # chat: only these categories get a reference (None = all)
    n_items: int | None = None
    n_turns: int = 1  # chat: user turns per item (MT-Bench: 2), for plans made without the data
    layout: str | None = None  # set by load_records: the layout the data fitted
    target_delimiter: str = " "  # mcq: lm-eval's delimiter between context and choice (not counted in acc_norm)
    path: str = ""
    data_hash: str | None = None  # set by load_records
    source: str | None = None  # which source load_records used
    parametric: bool = False  # the name takes a parameter: ``bigbench:navigate`` -> this YAML with param navigate
    param: str | None = None  # set by load_task for a parametric name
    # item fields the contamination check compares with the training data (None: the kind's default, see
    # bench.contamination.fields); lists (turns, choices, references) count element by element
    contamination: list[str] | None = None

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Task":
        path = Path(path)
        raw = _read_yaml(path)
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a task file must be a mapping")
        kinds: tuple[str, ...] = ()
        if "scorer" in raw:  # the kind is the scorer's: looked up first, so that the schema checks that one
            try:
                scorer = get_scorer(raw["scorer"])
            except UserError as e:
                raise UserError(f"{path}: {e}") from None
            kind = scorer.kind or scorer.name
            raw.setdefault("kind", kind)
            if raw["kind"] != kind:
                raise UserError(f"{path}: scorer {scorer.name!r} scores {kind!r} tasks, but kind is {raw['kind']!r} "
                                f"(leave kind out: it is the scorer's)")
            kinds = (kind,)
        check_task_file(cls, path, raw, kinds=kinds, sources=SOURCES, standard=STANDARD_FIELDS)  # bench.task_schema
        layouts = raw.get("layouts")
        for where, mapping in ([("fields", raw.get("fields", {}))] if not layouts else
                               [(f"layouts.{n}", m) for n, m in layouts.items()]):
            for key in mapping:
                compile_expr(mapping[key], f"{path}: {where}.{key}")  # fail on syntax errors at load time
        return cls(**raw, path=str(path))

    def load_records(self, limit: int | None = None, local: str | os.PathLike | None = None,
                     limit_mode: str = "first") -> list[dict]:
        """Normalised items (``limit`` of them: the first, or ``spread`` evenly over the source order). Sets
        ``self.data_hash`` and ``self.source``."""
        rows, self.source = task_sources.load_rows(self, local)
        self._pick_layout(rows)
        if limit is not None:
            if limit < 0:
                raise UserError(f"--limit must be >= 0, got {limit}")
            rows = limit_rows(rows, limit, limit_mode)
        refs = task_sources.load_references(self)
        items = [self._normalise(i, r, refs) for i, r in enumerate(rows)]
        seen: set[str] = set()
        for i, it in enumerate(items):
            if it["id"] in seen:
                raise UserError(f"task {self.name} ({self.source}) row {i}: duplicate id {it['id']!r}")
            seen.add(it["id"])
        self.data_hash = hash_obj(items)
        return items

    @property
    def field_map(self) -> dict[str, str]:
        """The field mapping in use: the chosen layout's, else ``fields``."""
        return self.layouts[self.layout] if self.layouts and self.layout else self.fields

    def _pick_layout(self, rows: list[dict]) -> None:
        """Choose the field mapping the data fits (``layouts``), and refuse rows missing a field it reads."""
        if not rows:
            return
        candidates = self.layouts or {"": self.fields}
        missing = {name: sorted(required_fields(mapping) - set(rows[0])) for name, mapping in candidates.items()}
        chosen = next((name for name, miss in missing.items() if not miss), None)
        if chosen is None:
            if self.layouts:
                why = "; ".join(f"{name} needs {', '.join(sorted(required_fields(self.layouts[name])))} (missing "
                                f"{', '.join(miss)})" for name, miss in missing.items())
                raise UserError(f"task {self.name} ({self.source}): the data fits no known layout: {why}")
            raise UserError(f"task {self.name} ({self.source}) row 0: missing field(s) {', '.join(missing[''])} "
                            f"(has {', '.join(sorted(rows[0])[:12])})")
        self.layout = chosen or None
        need = required_fields(self.field_map)
        for i, row in enumerate(rows):
            gone = need - set(row)
            if gone:
                raise UserError(f"task {self.name} ({self.source}) row {i}: missing field(s) {', '.join(sorted(gone))}")

    @property
    def scorer_obj(self) -> Scorer:
        """The task's own scorer (``judge.mode: pairwise`` may score with another one:
        :func:`bench.evaluate.task_scorer`)."""
        return get_scorer(self.scorer)

    def _normalise(self, index: int, row: dict, refs: dict) -> dict:
        where = f"task {self.name} ({self.source}) row {index}"
        ctx = {**row, "_index": index}
        item: dict[str, Any] = {"extra": {}}
        for key, expr in self.field_map.items():
            value = compile_expr(expr, f"{self.path}: fields.{key}")(**ctx)
            value = None if isinstance(value, jinja2.Undefined) else value
            (item if key in STANDARD_FIELDS else item["extra"])[key] = value
        item["id"] = str(item.get("id") if item.get("id") is not None else index)
        item.setdefault("category", None)
        if item["id"] in refs:  # data.references: reference answers from a separate file
            item["reference"] = refs[item["id"]]
        self.scorer_obj.prepare_item(self, item, where)
        return item

    # ---------------------------------------------------------------- prompts
    @property
    def prompt_hash(self) -> str:
        return hash_obj({k: getattr(self, k) for k in (
            "kind", "fields", "prompt", "continuation", "labels", "system", "chat_template", "mcq_mode")})

    def item_labels(self, item: dict) -> list[str | None]:
        """The option labels of an mcq item: the data's own (``labels`` field; null: none), else the task's
        ``labels`` - by default A, B, ..., Z, AA, ... for any number of choices; an explicit list may be shorter
        (then only a template that uses no label can render the extra choices)."""
        n = len(item.get("choices") or [])
        if "labels" in item:
            return list(item["labels"]) if item["labels"] is not None else [None] * n
        if list(self.labels) == list(LETTERS):
            return letters(n)
        return list(self.labels[:n])

    def _uses(self, source: str | None, names: set[str]) -> bool:
        return bool(source) and bool(jinja2.meta.find_undeclared_variables(template(source).environment.parse(source))
                                     & names)

    def _check_labels(self, item: dict, labels: list, source: str | None, names: set[str]) -> None:
        n = len(item.get("choices") or [])
        if len(labels) < n and self._uses(source, names):
            raise UserError(f"task {self.name} item {item.get('id')}: {n} choices but {len(labels)} labels "
                            f"({self.path}: give more `labels`, or a prompt and continuation that use none)")

    def render_prompt(self, item: dict) -> str:
        """The question prompt of an mcq/exact item (the log-likelihood context, or the user message)."""
        if not self.prompt:
            return item["question"]
        labels = self.item_labels(item) if item.get("choices") else []
        self._check_labels(item, labels, self.prompt, {"labels", "options"})
        variables = {**item.get("extra", {}), **item, "labels": labels,
                     "options": list(zip(labels, item.get("choices") or []))}
        return template(self.prompt).render(**variables)

    def continuations(self, item: dict) -> list[str]:
        """One continuation per choice (``label``, ``choice``, ``index`` in the template; ``label`` is None for an
        option the data gives no label)."""
        labels = self.item_labels(item)
        self._check_labels(item, labels, self.continuation, {"label"})
        tpl = template(self.continuation)
        return [tpl.render(label=labels[i] if i < len(labels) else None, choice=c, index=i)
                for i, c in enumerate(item["choices"])]

    def check_renders(self, items: list[dict]) -> None:
        """Build every item's model requests (prompts, messages, continuations: :meth:`Scorer.check_item`), so that
        a task that cannot render fails before any training, in one line naming the item (validation)."""
        scorer = self.scorer_obj
        for item in items:
            try:
                scorer.check_item(self, item)
            except UserError:
                raise
            except Exception as e:  # a template error (undefined variable, bad filter) or a field of the wrong type
                raise UserError(f"task {self.name} item {item.get('id')}: cannot render its prompt "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None

    def messages(self, item: dict, turn: int = 0, answers: list[str] = ()) -> list[dict]:
        """Chat messages for ``turn`` (0-based): earlier user turns alternate with the model's own ``answers``; an
        item without ``turns`` is one user message, its rendered prompt."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        if "turns" not in item:
            return msgs + [{"role": "user", "content": self.render_prompt(item)}]
        if len(answers) < turn:
            raise ValueError(f"turn {turn} of {item['id']} needs {turn} earlier answers, got {len(answers)}")
        wrap = template(self.prompt) if self.prompt else None
        for t in range(turn + 1):
            text = item["turns"][t]
            msgs.append({"role": "user", "content": wrap.render(turn=text, item=item) if wrap else text})
            if t < turn:
                msgs.append({"role": "assistant", "content": answers[t]})
        return msgs

    def settings(self, item: dict | None = None, override: dict | None = None) -> GenSettings:
        """Generation settings for an item: the task's, then per-category temperature unless greedy, then overrides."""
        override = dict(override or {})
        greedy = override.pop("greedy", self.greedy)
        values = {**self.generation}
        if not greedy and item is not None and item.get("category") in self.category_temperatures:
            values["temperature"] = float(self.category_temperatures[item["category"]])
        values.update({k: v for k, v in override.items() if k != "mcq_mode"})
        known = {f.name for f in dc_fields(GenSettings)}
        for key in values:
            if key not in known:
                raise UserError(f"task {self.name}: unknown generation setting {key!r}{nearest(key, known)}")
        if "stop" in values:
            values["stop"] = tuple(values["stop"] or ())
        return GenSettings(**values)

    # ---------------------------------------------------------------- data source (bench.task_sources)
    def bigbench_spec(self) -> dict:
        return task_sources.bigbench_spec(self)

    def fallbacks(self) -> list[dict]:
        return task_sources.fallbacks(self)

    def count_items(self) -> int | None:
        return task_sources.count_items(self)

    def describe_source(self) -> str:
        return task_sources.describe_source(self)


def _read_yaml(path: Path):
    """A task file's YAML; unreadable, non-UTF-8 or malformed is a one-line error naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', None) or first_line(e)}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise os_error(e, "read task file", path) from None


# -------------------------------------------------------------------- registry
def task_registry() -> Registry[Path]:
    """Task name -> YAML path, over every tasks folder (a later folder may not redefine a name)."""
    reg: Registry[Path] = Registry("task")
    for d in tasks_dirs():
        for path in sorted(Path(d).glob("*.yaml")):
            raw = _read_yaml(path)
            name = (raw.get("name") if isinstance(raw, dict) else None) or path.stem
            if name in reg:
                raise UserError(f"{path}: task {name!r} is already defined in {reg.get(name)}")
            reg.add(name, path)
    return reg


def load_task(name: str) -> Task:
    """A fresh Task (its own data_hash/source state) for a registered name, or ``base:param`` for a parametric
    task (``bigbench:navigate``: the ``bigbench`` YAML on BIG-bench's navigate task)."""
    base, sep, param = name.partition(":")
    reg = task_registry()
    if not sep or name in reg:
        return Task.from_yaml(reg.get(name))
    task = Task.from_yaml(reg.get(base))
    if not task.parametric:
        raise UserError(f"task {base!r} takes no parameter (got {name!r})")
    if not param or not re.fullmatch(r"[\w.-]+", param):
        raise UserError(f"task {name!r}: the parameter must be a task name like {base}:navigate")
    task.name, task.param = name, param
    return task


def all_tasks() -> list[Task]:
    reg = task_registry()
    return [Task.from_yaml(reg.get(n)) for n in reg]

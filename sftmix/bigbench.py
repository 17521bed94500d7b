"""BIG-bench JSON tasks as data: multiple-choice items for evaluation and instruction rows for training.

A BIG-bench task is ``bigbench/benchmark_tasks/<name>/task.json`` (``examples: [{input, target_scores: {choice:
score}, target}]`` plus optional ``task_prefix``, ``example_input_prefix``, ``example_output_prefix``,
``choice_prefix``, ``append_choices_to_input``); a task with subtasks (``hhh_alignment``) keeps them in
``<name>/<subtask>/task.json`` (or inline under ``subtasks``). Files are found, in order, under a folder given
explicitly, under ``$BIGBENCH_TASKS_DIR``, then inside the installed ``bigbench`` package (located without importing
it: the package pulls in TensorFlow-era dependencies we never need).

**Item split.** Every example goes to one bucket, ``train``, ``validation`` or ``eval``, by the sha256 of its text as
shown (input and appended choices), near-duplicates of one task kept together (:mod:`sftmix.splits`): the bucket of
an example depends only on the task file, not its order, other tasks or the machine. With the same fractions,
training rows (``bigbench:...`` data, split ``train``) and evaluation items (the task YAMLs, split ``eval``) can
never share an example, nor a near-duplicate of one; identical inputs with identical choices share a bucket.

**Rendering** follows BIG-bench's ``default_format_fn``: ``task_prefix`` + ``example_input_prefix`` + input (+ the
choices after ``choice_prefix`` when ``append_choices_to_input``, in the file's order) + ``example_output_prefix``.
The evaluation prompt is that text with the output prefix right-stripped (lm-eval's bigbench context; the choice
follows after a space); a training row is ``{instruction: task_prefix + input + choices, output: the correct
choice}``, since the chat template supplies the Q/A structure.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from core.errors import UserError
from core.io import package_file
from . import splits
from .splits import DEFAULT_FRACTIONS, SPLITS, bucket, check_fractions  # noqa: F401  (this module's API)

PREFIX = "bigbench:"
ENV_DIR = "BIGBENCH_TASKS_DIR"
_DEFAULTS = {"task_prefix": "", "example_input_prefix": "\nQ: ", "example_output_prefix": "\nA: ",
             "choice_prefix": "\n  choice: ", "append_choices_to_input": True}


# ---- locating and reading ------------------------------------------------------------------------------------------
def task_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """The ``task.json`` of task ``name``: ``root`` (a folder of task folders, a task folder or the file itself),
    else ``$BIGBENCH_TASKS_DIR``, else the installed ``bigbench`` package. UserError when none has it."""
    tried = []
    for base in (root, os.environ.get(ENV_DIR) or None):
        if base is None:
            continue
        base = Path(base).expanduser()
        for cand in (base, base / "task.json", base / name / "task.json"):
            if cand.is_file():
                return cand
        tried.append(str(base))
    found = package_file("bigbench", f"benchmark_tasks/{name}/task.json")
    if found is not None:
        return found
    where = f"not under {', '.join(tried)}; " if tried else ""
    raise UserError(f"BIG-bench task {name!r}: {where}no installed bigbench package has it "
                    f"(pip install --no-deps bigbench==1.0.0, or set {ENV_DIR} to a folder of <task>/task.json)")


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a BIG-bench task file ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: a BIG-bench task file must be a JSON object")
    return obj


def _subtasks(path: Path, obj: dict) -> list[tuple[str | None, dict]]:
    """(subtask name or None, task object with examples) for a task file and its subtasks."""
    if obj.get("examples"):
        return [(None, obj)]
    out = []
    for sub in obj.get("subtasks") or []:  # inline subtasks
        if isinstance(sub, dict) and sub.get("examples"):
            out.append((str(sub.get("name", len(out))).split(":")[-1], {**_format_keys(obj), **sub}))
    for sub_file in sorted(path.parent.glob("*/task.json")):  # subtask folders (hhh_alignment)
        out.append((sub_file.parent.name, {**_format_keys(obj), **_read_json(sub_file)}))
    if not out:
        raise UserError(f"{path}: a BIG-bench task needs 'examples' (or subtasks that have them)")
    return out


def _format_keys(obj: dict) -> dict:
    return {k: obj[k] for k in _DEFAULTS if k in obj}


# ---- items -----------------------------------------------------------------------------------------------------
def load_items(name: str, root: str | os.PathLike | None = None, split: str = "all",
               fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[dict]:
    """Multiple-choice items of one task, in file order, restricted to ``split`` (or ``all``).

    Each item: ``id`` (``<subtask/>sha256(input)[:12]``, ``-2``, ``-3`` for repeated inputs), ``category``
    (subtask or None), ``input``, ``choices``, ``answer`` (index of the highest target score, first on ties),
    ``prompt`` (evaluation context), ``instruction`` (training prompt), ``split``.
    """
    if split not in SPLITS + ("all",):
        raise UserError(f"BIG-bench split must be one of {', '.join(SPLITS)}, all; got {split!r}")
    fractions = check_fractions(fractions)
    path = task_path(name, root)
    items, seen = [], {}
    for sub, obj in _subtasks(path, _read_json(path)):
        fmt = {**_DEFAULTS, **_format_keys(obj)}
        for n, ex in enumerate(obj["examples"]):
            where = f"{path}{f' ({sub})' if sub else ''} example {n}"
            if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
                raise UserError(f"{where}: needs a string 'input'")
            scores = ex.get("target_scores")
            if not isinstance(scores, dict) or len(scores) < 2:
                raise UserError(f"{where}: not multiple choice (needs 'target_scores' with 2+ choices)")
            choices = [str(c) for c in scores]
            values = [float(v) for v in scores.values()]
            text = ex["input"]
            base = (f"{sub}/" if sub else "") + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
            seen[base] = seen.get(base, 0) + 1
            shown = text + (fmt["choice_prefix"] + fmt["choice_prefix"].join(choices)
                            if fmt["append_choices_to_input"] else "")
            items.append({
                "id": base if seen[base] == 1 else f"{base}-{seen[base]}", "category": sub, "input": text,
                "choices": choices, "answer": values.index(max(values)), "source": name, "shown": shown,
                "prompt": (fmt["task_prefix"] + fmt["example_input_prefix"] + shown
                           + fmt["example_output_prefix"]).rstrip(),
                # BIG-bench's task_prefix often ends without a separator ("...starting point?"): start the input
                # on its own line, as the evaluation prompt does
                "instruction": "\n".join(x for x in (fmt["task_prefix"].strip(), shown.strip()) if x),
            })
    for it, which in zip(items, splits.assign([it["shown"] for it in items], fractions)):
        it["split"] = which
    return [it for it in items if split in ("all", it["split"])]


# Bump when training rows are rendered or split differently: part of the training data identity (stage keys).
ROWS_VERSION = "3"  # 2: task_prefix and input on separate lines; 3: buckets by near-duplicate groups of the shown text

# ---- training rows -------------------------------------------------------------------------------------------
def parse_source(source: str) -> tuple[list[str], dict[str, Any]]:
    """``bigbench:TASK[,TASK...][?n=N&fractions=A,B,C&root=DIR]`` -> (task names, options)."""
    return splits.parse_source(source, PREFIX, "BIG-bench")


def training_rows(source: str, split: str = "train") -> list[dict]:
    """Alpaca rows (``id``, ``instruction``, ``output``) for a ``bigbench:`` data source, task by task.

    ``n`` keeps each task's first N examples of the split in hash order (a deterministic random subset)."""
    return splits.training_rows(source, PREFIX, "BIG-bench", load_items,
                                lambda it: (it["instruction"], it["choices"][it["answer"]]), split)


def source_files(source: str) -> list[Path]:
    """The task files behind a ``bigbench:`` source (for the data identity that keys training)."""
    names, opts = parse_source(source)
    files = []
    for name in names:
        path = task_path(name, opts["root"])
        files += [path] + sorted(path.parent.glob("*/task.json"))
    return files

"""BIG-Bench Hard (Suzgun et al. 2022, arXiv 2210.09261, MIT licence) as data: evaluation items and training rows.

BBH is 27 task files ``bbh/<task>.json`` (``{"canary": ..., "examples": [{"input", "target"}]}``, 250 examples
each, fewer for causal_judgement, penguins_in_a_table and snarks) in the repository suzgunmirac/BIG-Bench-Hard. They
are read from, in order: a folder (or file) given explicitly, ``$BBH_DIR``, else the download cache
``$SFTMIX_HOME/downloads/bbh-<commit>/``, filled on first use from the repository at the pinned commit
:data:`COMMIT` (or a mirror of its ``bbh/`` folder at ``$BBH_URL``), every file checked against its pinned sha256
(:data:`SHA256`). A local copy may differ from the pinned files: its content is hashed into the data identity
either way, and :func:`is_pinned` tells which it is (recorded in provenance).

**Parsing** (per task; items that do not parse are skipped and counted, e.g. ruin_names' two items whose target is
not one of its options):

- an ``Options:`` block of lettered lines ``(A) text``: choices = the texts, labels = the letters (A..R: up to 18),
  answer = the target's letter;
- an ``Options:`` block of ``- text`` lines (causal_judgement, navigate, formal_fallacies): choices = the texts
  (stripped), no labels, answer = the one equal to the target;
- no options, every target one of a pair (True/False, Yes/No, yes/no, valid/invalid): those two as the choices;
- otherwise free-form (dyck_languages, multistep_arithmetic_two, object_counting, word_sorting): exact match.

An item keeps the raw ``input`` (the prompt, options included, as BBH shows it) and ``target``; ``targets`` lists
the target string each choice would have (``(B)``, ``Yes``), the continuation the log-likelihood protocol scores.

**Splits**: buckets by near-duplicate groups of the input (:mod:`sftmix.splits`), as for BIG-bench's task.json.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from core.errors import UserError
from core.registry import nearest
from . import splits
from core.download import fetch, home, sha256_of

log = logging.getLogger("sftmix")

PREFIX = "bbh:"
ENV_DIR = "BBH_DIR"
ENV_URL = "BBH_URL"
REPO = "suzgunmirac/BIG-Bench-Hard"
COMMIT = "9ee07bd481feebf959a6b59d61ea57bdcf30964d"
BASE_URL = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/bbh"
SHA256 = {
    "boolean_expressions": "ea6c754ec005e2d3f2d085d349a740f593b5764f32ea4638ffed4cfc0061b12a",
    "causal_judgement": "6e8bca44dd402008ed41c07a3d0a1d5e7b03db7001a7e002fcdf4c60985ea081",
    "date_understanding": "0148d4ac5fca05b2f82373e5fef7208e15363b9c6079493034d77b3dab496bf5",
    "disambiguation_qa": "cf06df9ebf911b883671cb1b35d3fbd1a1c306b19b9e9a012407e596c85fe8c6",
    "dyck_languages": "3f9badedf15c2be1ce53d94fdf016299bb30ba231ef087ab9f51a7ed6d0bdc25",
    "formal_fallacies": "4c1adb664821157faade1d4153685403afcc02648f3c180a608a18f17f589629",
    "geometric_shapes": "07be68a124420caa2ebc0b2c858ad79fc55c5c8806170e496e1e17ebfb11f31c",
    "hyperbaton": "b6d7f55c75f5d02f2987a4f3123802dfa093872089a56a334144aae8a7264fdc",
    "logical_deduction_five_objects": "d2df31394b903b7f0e085d42a69572a092987856eac076799017d70ef266fa8f",
    "logical_deduction_seven_objects": "2896c7e3482eea318dd37bcc370d24ec3cc91e8374c1784287b5dbd38a529e33",
    "logical_deduction_three_objects": "e590fae72e3a6041fbd23bd8ff6b74baf44ca563f6ba40a041c55e7b867c1681",
    "movie_recommendation": "a8b53a87ee21a865b7248e694f388a9b8f7cf6b839b11d44796a2dd3fc088983",
    "multistep_arithmetic_two": "c9d5a6433c9b78256422a15c78463949c8bec8d85607aa28b52d7234ad4a8595",
    "navigate": "b7944dfd3c81da5c4815bd75b00d6fa3c64140823498e78ed496f4c3d36f7f0d",
    "object_counting": "8acef14dbbdd40d2326ef7755750b6b5fe919fef06276af1bab3f1c297f022ff",
    "penguins_in_a_table": "bb87ee449698eee51215e025a453b1bcb2f5e6589c2063b2c79e68b8f0655228",
    "reasoning_about_colored_objects": "0a8850cf95166020fce7a78244026ceedd7ea839302471512b4f8744e85a6a49",
    "ruin_names": "b6f723aef2bafdd4c7bfc3c7e0329c7e8a8279391a609969c8ed76c9319f5f7f",
    "salient_translation_error_detection": "becf3eb8dd53c821a555ecd5c1334ecd93eb25f980e63be963c518e7138de5da",
    "snarks": "54a0661fe2de06167645a4965e6bcf963c4ba307e76262a7c750998b0e3d0d0e",
    "sports_understanding": "63ca262858f6176864515cd8cf53cdaa40839ebecc155b726d77930855d167bf",
    "temporal_sequences": "92a1189faaa84aacc4c405aaa13f13f48c2992eb884772eedb622505252baef5",
    "tracking_shuffled_objects_five_objects": "2063a46a4fb484236ed4310523606543a3e1dd4a4dc34eda65d407910ece25a5",
    "tracking_shuffled_objects_seven_objects": "b59fd05b850c37cf57cb514ae1e6975c00b1638ade2291722056b2af3c54084d",
    "tracking_shuffled_objects_three_objects": "546cc7bf10c6a01a6a4c17ae28a4966485f21f29fd5d111f37858ec78e354f6b",
    "web_of_lies": "3e60323f8514a107fdb4edf35f8832a9171c5a09c0eaa47823559de905e8ab8b",
    "word_sorting": "2a6132d2c99f00d0d2eb1113ac6b4a918bd969d863c48749210d969713db8d43",
}
TASKS = tuple(SHA256)
BINARY = (("True", "False"), ("Yes", "No"), ("yes", "no"), ("valid", "invalid"))
_LETTERED = re.compile(r"^\(([A-Z]{1,2})\)\s?(.*?)\s*$")
_DASHED = re.compile(r"^-\s(.*?)\s*$")


# ---- locating ---------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return home() / "downloads" / f"bbh-{COMMIT[:12]}"


def task_file(name: str, root: str | os.PathLike | None = None) -> Path:
    """The ``<name>.json`` of a BBH task: ``root`` (a folder of task files, or the file), else ``$BBH_DIR``, else the
    pinned download (fetched once, sha256-checked). UserError when none can provide it."""
    if name not in SHA256:
        raise UserError(f"unknown BBH task {name!r}{nearest(name, TASKS)} (BIG-Bench Hard has {len(TASKS)} tasks)")
    for base, how in ((root, "the given folder"), (os.environ.get(ENV_DIR) or None, f"${ENV_DIR}")):
        if base is None:
            continue
        base = Path(base).expanduser()
        for cand in (base, base / f"{name}.json", base / "bbh" / f"{name}.json"):
            if cand.is_file():
                return cand
        raise UserError(f"BBH task {name!r}: no {name}.json in {base} ({how})")
    url = f"{(os.environ.get(ENV_URL) or BASE_URL).rstrip('/')}/{name}.json"
    try:
        return fetch(url, SHA256[name], cache_dir() / f"{name}.json", f"BBH task {name}")
    except UserError as e:
        raise UserError(f"{e}; or set ${ENV_DIR} to a folder holding {REPO}'s bbh/*.json") from None


def is_pinned(path: Path, name: str) -> bool:
    """Whether ``path`` holds exactly the pinned file of task ``name``."""
    return sha256_of(path) == SHA256.get(name)


# ---- parsing ----------------------------------------------------------------------------------------------------
def _options(text: str) -> tuple[str, list[str], list[str] | None] | None:
    """(stem, choices, labels or None) from the ``Options:`` block that ends an input, or None without one."""
    head, sep, block = text.rpartition("\nOptions:\n")
    if not sep:
        return None
    lines = [ln for ln in block.split("\n") if ln.strip()]
    lettered = [_LETTERED.match(ln) for ln in lines]
    if lines and all(lettered):
        return head, [m.group(2) for m in lettered], [m.group(1) for m in lettered]
    dashed = [_DASHED.match(ln) for ln in lines]
    if lines and all(dashed):
        return head, [m.group(1) for m in dashed], None
    return None


def parse(name: str, examples: list[dict], where: str = "") -> tuple[str, list[dict], list[str]]:
    """``(kind, items, skipped)``: the task's kind (``mcq`` or ``exact``), its items (without split), and a reason
    per example that could not be used."""
    where = where or f"BBH task {name}"
    for n, ex in enumerate(examples):
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str) or not isinstance(ex.get("target"), str):
            raise UserError(f"{where} example {n}: needs string 'input' and 'target'")
    targets = {ex["target"].strip() for ex in examples}
    pair = next((p for p in BINARY if targets <= set(p)), None)
    with_options = sum(_options(ex["input"]) is not None for ex in examples)
    kind = "mcq" if pair or with_options >= len(examples) / 2 else "exact"
    items, skipped, seen = [], [], {}
    for n, ex in enumerate(examples):
        text, target = ex["input"], ex["target"].strip()
        base = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        seen[base] = seen.get(base, 0) + 1
        item = {"id": base if seen[base] == 1 else f"{base}-{seen[base]}", "category": None, "source": name,
                "input": text, "target": target}
        if kind == "exact":
            items.append({**item, "kind": "exact", "answer": target})
            continue
        opts = _options(text)
        if opts is None and pair:
            choices, labels = list(pair), None
        elif opts is None:
            skipped.append(f"example {n}: no Options block")
            continue
        else:
            _, choices, labels = opts
        shown = [f"({lab})" for lab in labels] if labels else choices
        if len(choices) < 2 or target not in shown:
            skipped.append(f"example {n}: {len(choices)} option(s), target {target!r} is not one of them")
            continue
        items.append({**item, "kind": "mcq", "choices": choices, "labels": labels, "targets": shown,
                      "answer": shown.index(target)})
    return kind, items, skipped


def read_task(name: str, root: str | os.PathLike | None = None) -> tuple[Path, str, list[dict], list[str]]:
    """``(file, kind, items, skipped)`` of one task (items in file order, without split)."""
    path = task_file(name, root)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a BBH task file ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("examples"), list) or not obj["examples"]:
        raise UserError(f"{path}: a BBH task file is {{\"examples\": [{{\"input\", \"target\"}}, ...]}}")
    kind, items, skipped = parse(name, obj["examples"], str(path))
    if not items:
        raise UserError(f"{path}: no usable example ({'; '.join(skipped[:3])})")
    return path, kind, items, skipped


def load_items(name: str, root: str | os.PathLike | None = None, split: str = "all",
               fractions=splits.DEFAULT_FRACTIONS) -> list[dict]:
    """The task's items in file order, restricted to bucket ``split`` (``train`` / ``validation`` / ``eval``) or
    ``all``; each carries ``split``. Near-duplicate inputs share a bucket (:mod:`sftmix.splits`)."""
    if split not in splits.SPLITS + ("all",):
        raise UserError(f"BBH split must be one of {', '.join(splits.SPLITS)}, all; got {split!r}")
    _, _, items, skipped = read_task(name, root)
    if skipped:
        log.debug("BBH %s: %d example(s) skipped: %s", name, len(skipped), "; ".join(skipped))
    buckets = splits.assign([it["input"] for it in items], fractions)
    return [{**it, "split": b} for it, b in zip(items, buckets) if split in ("all", b)]


# ---- training rows ----------------------------------------------------------------------------------------------
# Bump when training rows are rendered or split differently: part of the training data identity (stage keys).
ROWS_VERSION = "1"


def parse_source(source: str) -> tuple[list[str], dict]:
    """``bbh:TASK[,TASK...][?n=N&fractions=A,B,C&root=DIR]`` -> (task names, options)."""
    return splits.parse_source(source, PREFIX, "BBH")


def training_rows(source: str, split: str = "train") -> list[dict]:
    """Alpaca rows for a ``bbh:`` data source, task by task: ``instruction`` = the input as BBH shows it,
    ``output`` = its target, ``source`` = the task (for ``dynamics.split: per_source``). ``n``: each task's first N
    examples of the split in sha256 order."""
    return splits.training_rows(source, PREFIX, "BBH", load_items, lambda it: (it["input"], it["target"]), split)


def source_files(source: str) -> list[Path]:
    """The task files behind a ``bbh:`` source (for the data identity that keys training)."""
    names, opts = parse_source(source)
    return [task_file(name, opts["root"]) for name in names]

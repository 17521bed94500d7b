"""Instruction data: loading, validation, chat rendering and response-only labels.

Rows come in three formats, detected per row: Alpaca (``instruction``, optional ``input``, ``output``), chat
(``messages``: ``[{role, content}]`` with roles system/user/assistant, multi-turn) and prompt/response
(``prompt`` + ``response`` or ``completion``). Every row becomes a message list, is rendered with the tokenizer's
chat template, and gets labels on every assistant turn (content plus the end-of-turn marker the template puts
after it) and -100 everywhere else. No packing: one row, one example.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from core.errors import UserError
from core.io import hash_obj
from . import bbh, bigbench
from .constants import IGNORE_INDEX
from .hub import offline
from .sources import BUNDLED
from .templates import apply_template

log = logging.getLogger("sftmix")

IGNORE = IGNORE_INDEX  # this module's older name for it (tests and callers import it from here)
ROLES = ("system", "user", "assistant")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# Task-file data sources: prefix -> module with training_rows(source, split) and source_files(source).
TASK_SOURCES = {bigbench.PREFIX: bigbench, bbh.PREFIX: bbh}


# ---- loading ------------------------------------------------------------------------------------------------------
def load_rows(source: str | Path, split: str = "train", limit: int | None = None) -> list[dict]:
    """Rows of a data set: ``toy`` (bundled), a local json/jsonl/parquet file or folder, a hub id, or
    ``bigbench:TASK[,TASK...][?n=N&fractions=A,B,C&root=DIR]`` / ``bbh:TASK[,...][?...]`` (the ``split`` bucket of
    BIG-bench JSON tasks or BIG-Bench Hard tasks as Alpaca rows with a ``source``; see :mod:`sftmix.bigbench`,
    :mod:`sftmix.bbh`).

    Every row is validated (format detected, fields typed); errors are UserErrors naming the file, line and field.
    """
    source = str(source)
    path = Path(BUNDLED.get(source, source)).expanduser()
    task_source = next((m for p, m in TASK_SOURCES.items() if source.startswith(p)), None)
    if task_source is not None:  # bigbench:TASK[,TASK...] / bbh:...: the split's examples as Alpaca rows
        rows = task_source.training_rows(source, split)
        rows = rows[:limit] if limit is not None else rows
        where = [f"{r['id']}" for r in rows]
    elif path.suffix.lower() == ".jsonl" and path.is_file():
        rows, lines = _read_jsonl(path, limit)
        where = [f"{path}:{n}" for n in lines]
    else:
        rows = _load_with_datasets(source, path, split)
        rows = rows[:limit] if limit is not None else rows
        where = [f"{path if path.exists() else source}:row {i + 1}" for i in range(len(rows))]
    if not rows:
        raise UserError(f"{source}: the data set is empty")
    for row, w in zip(rows, where):
        to_messages(row, where=w)  # validation only
    return rows


def _read_jsonl(path: Path, limit: int | None) -> tuple[list[dict], list[int]]:
    """Rows and their line numbers; a malformed line is reported before datasets ever sees the file."""
    rows, lines = [], []
    try:
        with open(path, encoding="utf-8-sig") as f:  # a UTF-8 byte-order mark (Windows editors) is fine
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if limit is not None and len(rows) >= limit:
                    break
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
                lines.append(n)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    return rows, lines


def _load_with_datasets(source: str, path: Path, split: str) -> list[dict]:
    import datasets  # ~1 s to import: only .parquet/.json/hub sources need it, not the bundled JSONL

    looks_local = path.exists() or path.suffix.lower() in LOCAL_FORMATS or source.startswith((".", "/", "~"))
    if looks_local and not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        if path.is_file():
            if path.suffix.lower() not in LOCAL_FORMATS:
                raise UserError(f"{path}: unsupported file type (use .jsonl, .json or .parquet)")
            ds = datasets.load_dataset(LOCAL_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
        elif path.is_dir():
            ds = datasets.load_dataset(str(path), split=split)
        else:
            offline()  # no network: offline mode first, so the hub libraries fail at once instead of retrying
            ds = datasets.load_dataset(source, split=split)
    except UserError:
        raise
    except Exception as e:  # OfflineModeIsEnabled, DatasetNotFoundError, ArrowInvalid, connection errors...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        if looks_local:
            raise UserError(f"{path}: cannot read ({type(e).__name__}: {first})") from None
        raise UserError(
            f"cannot load data set {source!r} from the Hugging Face hub ({type(e).__name__}: {first}); "
            "pass a local json/jsonl/parquet path instead"
        ) from None
    return ds.to_list()


# ---- formats ------------------------------------------------------------------------------------------------------
def _str_field(row: dict, key: str, where: str, optional: bool = False) -> str:
    value = row.get(key)
    if value is None:
        if optional:
            return ""
        raise UserError(f"{where}: field {key!r} is missing")
    if not isinstance(value, str):
        raise UserError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def to_messages(row: dict, where: str = "row") -> list[dict]:
    """The row as ``[{role, content}]`` (format detected from its keys); UserError naming ``where`` if invalid."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object, got {type(row).__name__}")
    if row.get("messages") is not None:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise UserError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise UserError(f"{where}: field 'messages[{i}]' must be an object, got {type(m).__name__}")
            role = m.get("role")
            if role not in ROLES:
                raise UserError(f"{where}: field 'messages[{i}].role' must be one of {'/'.join(ROLES)}, got {role!r}")
            out.append({"role": role, "content": _str_field(m, "content", f"{where}: messages[{i}]")})
        if not any(m["role"] == "assistant" for m in out):
            raise UserError(f"{where}: chat has no assistant turn (field 'messages')")
        return out
    # Keys are tested for non-null values: datasets fills other formats' columns with None in mixed files.
    if row.get("instruction") is not None or row.get("output") is not None:
        instruction = _str_field(row, "instruction", where)
        extra = _str_field(row, "input", where, optional=True)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return [{"role": "user", "content": user}, {"role": "assistant", "content": _str_field(row, "output", where)}]
    if row.get("prompt") is not None:
        key = "completion" if row.get("response") is None and row.get("completion") is not None else "response"
        return [{"role": "user", "content": _str_field(row, "prompt", where)},
                {"role": "assistant", "content": _str_field(row, key, where)}]
    keys = ", ".join(sorted(map(str, row))) or "none"
    raise UserError(
        f"{where}: unknown row format (fields: {keys}); expected 'messages', 'instruction'+'output' "
        "or 'prompt'+'response'"
    )


def example_id(row: dict, index: int) -> str:
    """The row's ``id`` when it has one, else its position."""
    rid = row.get("id")
    return str(index) if rid is None else str(rid)


def example_source(row: dict) -> str | None:
    """Which task or data set a row comes from (its ``source`` field; ``dynamics.split: per_source``), or None."""
    src = row.get("source")
    return None if src is None else str(src)


def example_hash(messages: Sequence[dict]) -> str:
    """Content hash of a message list (role and content only)."""
    return hash_obj([{"role": m["role"], "content": m["content"]} for m in messages])


# ---- tokenisation -------------------------------------------------------------------------------------------------
def _render(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(messages: Sequence[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character span of each assistant turn (content + its end-of-turn marker).

    A turn starts where the prefix rendered with the generation prompt ends, and ends where the prefix including
    the turn ends (trailing whitespace excluded), which holds for any template that renders prefixes as prefixes.
    Otherwise the content is searched for in the text and extended over an eos token that follows it.
    """
    text = _render(tokenizer, messages)
    spans, cursor = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
            upto = _render(tokenizer, messages[: i + 1])
        except Exception:
            before = upto = None
        if before is not None and text.startswith(before) and text.startswith(upto) and len(upto) > len(before):
            start, end = len(before), max(len(upto.rstrip()), len(before) + len(m["content"].rstrip()))
        else:
            start = text.find(m["content"], cursor)
            if start < 0:
                raise UserError("the chat template does not render assistant turns verbatim; pass template=chatml|alpaca")
            end = start + len(m["content"])
            eos = getattr(tokenizer, "eos_token", None)
            if eos and text[end:].lstrip(" ").startswith(eos):
                end = text.index(eos, end) + len(eos)
        spans.append((start, min(end, len(text))))
        cursor = end
    return text, spans


def tokenize_chat(messages: Sequence[dict], tokenizer, max_length: int) -> tuple[list[int], list[int], bool]:
    """``(input_ids, labels, truncated)``: labels are the token ids inside assistant spans, -100 elsewhere."""
    text, spans = assistant_spans(messages, tokenizer)
    # The template already printed any BOS it wants.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for t, (s, e) in enumerate(offsets):
        if any(s < b and e > a for a, b in spans):
            labels[t] = ids[t]
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], truncated


@dataclass
class DataStats:
    n_rows: int = 0
    n_truncated: int = 0
    n_dropped: int = 0  # no response token left after truncation
    n_examples: int = 0


def build_examples(
    source_or_rows: str | Path | Sequence[dict],
    tokenizer,
    *,
    template: str | None = None,
    max_length: int = 2048,
    split: str = "train",
    limit: int | None = None,
) -> tuple[list[dict], DataStats]:
    """Load (unless given rows), validate and tokenise: examples ``{id, hash, input_ids, labels, n_response_tokens}``.

    ``template`` names a chat template for tokenizers that have none (see :mod:`sftmix.templates`).
    """
    if max_length < 2:
        raise UserError(f"max_length must be at least 2, got {max_length}")
    if isinstance(source_or_rows, (str, Path)):
        rows = load_rows(source_or_rows, split=split, limit=limit)
        where = str(source_or_rows)
    else:
        rows = list(source_or_rows)[:limit] if limit is not None else list(source_or_rows)
        where = "rows"
        if not rows:
            raise UserError("the data set is empty")
    apply_template(tokenizer, template)
    stats = DataStats(n_rows=len(rows))
    examples, seen = [], {}
    for i, row in enumerate(rows):
        eid = example_id(row, i)
        if eid in seen:
            raise UserError(f"{where}: duplicate id {eid!r} (rows {seen[eid] + 1} and {i + 1})")
        seen[eid] = i
        messages = to_messages(row, where=f"{where}:row {i + 1}")
        ids, labels, truncated = tokenize_chat(messages, tokenizer, max_length)
        stats.n_truncated += truncated
        n_resp = sum(lab != IGNORE_INDEX for lab in labels[1:])  # position 0 is never predicted
        if n_resp == 0:
            stats.n_dropped += 1
            continue
        examples.append({"id": eid, "hash": example_hash(messages), "input_ids": ids, "labels": labels,
                         "n_response_tokens": n_resp, "source": example_source(row)})
    stats.n_examples = len(examples)
    if stats.n_truncated:
        log.info("%d of %d examples truncated to max_length=%d", stats.n_truncated, stats.n_rows, max_length)
    if stats.n_dropped:
        log.warning("dropped %d of %d examples with no response token left after truncation to max_length=%d",
                    stats.n_dropped, stats.n_rows, max_length)
    if not examples:
        raise UserError(f"{where}: no example has a response token within max_length={max_length}")
    return examples, stats


# ---- batching -----------------------------------------------------------------------------------------------------
class PaddedCollator:
    """Right-pads ``input_ids`` (pad id), ``labels`` (-100) and builds ``attention_mask``; keeps ``idx`` if present."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.as_tensor(f["labels"], dtype=torch.long)
            mask[i, :k] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
        if all("idx" in f for f in features):
            batch["idx"] = torch.as_tensor([int(f["idx"]) for f in features], dtype=torch.long)
        return batch

"""Which texts are compared on each side.

A training row gives one text per field, in the formats :mod:`sftmix.data` reads: Alpaca ``instruction``, ``input``,
``output``; chat ``messages[i].content`` (every role); prompt/response ``prompt`` and ``response`` (or
``completion``). An evaluation item gives the fields its task YAML lists under ``contamination:`` (a list of
normalised item keys or extra fields), else its kind's default (its scorer's ``contamination_fields``): a list value
(turns, options, references, PubMedQA's abstract sentences) gives one text per element. N-grams never cross from one
text into the next, on either side: a match is n consecutive words inside one field of each.
"""
from __future__ import annotations

from typing import Any, Iterator

TRAIN_FIELDS = ("instruction", "input", "output", "messages[].content", "prompt", "response", "completion")


def train_texts(row: dict) -> Iterator[tuple[str, str]]:
    """``(field, text)`` of one training row (rows were validated by :func:`sftmix.data.load_rows`)."""
    if row.get("messages") is not None:
        for i, m in enumerate(row["messages"]):
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                yield f"messages[{i}].{m.get('role')}", m["content"]
        return
    if row.get("instruction") is not None or row.get("output") is not None:
        keys: tuple[str, ...] = ("instruction", "input", "output")
    else:
        keys = ("prompt", "completion" if row.get("response") is None else "response")
    for k in keys:
        if isinstance(row.get(k), str):
            yield k, row[k]


def item_fields(task) -> tuple[str, ...]:
    """The item fields ``task`` compares: its YAML's ``contamination:`` list, else its kind's default."""
    declared = getattr(task, "contamination", None)
    return tuple(declared) if declared else tuple(task.scorer_obj.contamination_fields)


def _value(item: dict, name: str, kind: str) -> Any:
    if kind == "mcq" and name == "answer":  # an index: the correct option's text
        choices, idx = item.get("choices") or [], item.get("answer")
        return choices[idx] if isinstance(idx, int) and 0 <= idx < len(choices) else None
    if name in item and name != "extra":
        return item[name]
    return (item.get("extra") or {}).get(name)


def _flatten(name: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _flatten(f"{name}[{i}]", v)
    elif isinstance(value, dict):
        for k in sorted(value):
            yield from _flatten(f"{name}.{k}", value[k])
    # numbers, booleans and None carry no words


def item_texts(item: dict, fields: tuple[str, ...], kind: str) -> Iterator[tuple[str, str]]:
    """``(field, text)`` of one normalised evaluation item, e.g. ``("turns[1]", "...")``, ``("choices[0]", ...)``."""
    for name in fields:
        yield from _flatten(name, _value(item, name, kind))

"""Train / validation / eval buckets that hold out: near-duplicates stay on one side.

Every example of a task goes to one bucket, ``train``, ``validation`` or ``eval``, by the sha256 of a text as a
number in [0, 1) cut at the cumulative fractions (:func:`bucket`). The text is not the example's own but its
**near-duplicate group's**: examples whose texts are near-duplicates (:mod:`sftmix.neardup`: identical after
normalisation, a he/she swap, the same story with another question) are grouped, transitively, and the whole group
takes the bucket of its (lexicographically) smallest member's text (chosen independently of the hash, so unbiased).
So identical inputs always share a bucket, no evaluation item has a near-duplicate training row of its own task,
and an example's bucket depends only on the task's texts (not their order, other tasks or the machine). Training
rows (split ``train``) and evaluation items (split ``eval``) computed from the same file with the same fractions can
never share an example.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from functools import lru_cache
from typing import Callable, Sequence
from urllib.parse import parse_qs

from core.errors import UserError
from .neardup import groups

log = logging.getLogger("sftmix")


class EmptySplit(UserError):
    """A task has no example in the requested bucket (e.g. all its examples form one near-duplicate group): a
    mistake in the input, refused by a dry run too (unlike data that is merely not on this machine)."""

SPLITS = ("train", "validation", "eval")
DEFAULT_FRACTIONS = (0.6, 0.1, 0.3)  # train, validation, eval


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def bucket(text: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """``train`` / ``validation`` / ``eval`` for a text, from its sha256 (uniform in [0, 1))."""
    u, edge = _unit(text), 0.0
    for name, f in zip(SPLITS, fractions):
        edge += f
        if u < edge:
            return name
    return SPLITS[-1]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise UserError(f"split fractions must be 3 numbers >= 0 (train, validation, eval) summing to 1, "
                        f"got {list(fractions)}")
    return fr  # type: ignore[return-value]


def assign(texts: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[str]:
    """The bucket of each text, near-duplicate groups kept together (see the module docstring)."""
    return list(_assign(tuple(texts), check_fractions(fractions)))


@lru_cache(maxsize=64)  # one task file is split by every task and data source that reads it in a process
def _assign(texts: tuple[str, ...], fractions: tuple[float, float, float]) -> tuple[str, ...]:
    group = groups(texts)
    largest = max(Counter(group).values(), default=0)
    if largest > 10 and largest > len(texts) / 4:  # chains of near-duplicates: one bucket gets them all
        log.warning("%d of %d examples form one near-duplicate group (each within a few characters of the next): "
                    "they all go to one bucket", largest, len(texts))
    key: dict[int, str] = {}
    for g, t in zip(group, texts):  # the group's smallest text: chosen independently of its sha256, so unbiased
        key[g] = min(key.get(g, t), t)
    return tuple(bucket(key[g], fractions) for g in group)


def parse_source(source: str, prefix: str, what: str) -> tuple[list[str], dict]:
    """``<prefix>TASK[,TASK...][?n=N&fractions=A,B,C&root=DIR]`` -> (task names, options ``n``, ``fractions``,
    ``root``): the data-source syntax of the task-file sources (``bigbench:``, ``bbh:``)."""
    body = source[len(prefix):]
    names_part, _, query = body.partition("?")
    names = [t.strip() for t in names_part.split(",") if t.strip()]
    if not names:
        raise UserError(f"{source!r}: name at least one {what} task, e.g. {prefix}navigate,hyperbaton")
    opts: dict = {"n": None, "fractions": DEFAULT_FRACTIONS, "root": None}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1]
        if key == "n":
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"{source!r}: n must be an integer >= 1, got {value!r}")
            opts["n"] = int(value)
        elif key == "fractions":
            try:
                opts["fractions"] = check_fractions([float(x) for x in value.split(",")])
            except ValueError:
                raise UserError(f"{source!r}: fractions must be three numbers, got {value!r}") from None
        elif key == "root":
            opts["root"] = value
        else:
            raise UserError(f"{source!r}: unknown option {key!r} (n, fractions, root)")
    return names, opts


def first_n(items: list[dict], n: int | None, text_key: str = "input") -> list[dict]:
    """The first ``n`` items in sha256 order of their text (a deterministic random subset), or all of them."""
    if n is None:
        return items
    return sorted(items, key=lambda it: hashlib.sha256(it[text_key].encode("utf-8")).hexdigest())[:n]


def training_rows(source: str, prefix: str, what: str, load_items: Callable[..., list[dict]],
                  pair: Callable[[dict], tuple[str, str]], split: str = "train") -> list[dict]:
    """Alpaca rows of a task-file data source (``bigbench:``, ``bbh:``), task by task: ``id`` = ``TASK/item id``,
    (``instruction``, ``output``) = ``pair(item)``, ``source`` = the task (for ``dynamics.split: per_source``).
    ``load_items(name, root, split, fractions)`` reads one task's items; ``n`` keeps each task's first N of the
    split (:func:`first_n`)."""
    names, opts = parse_source(source, prefix, what)
    rows = []
    for name in names:
        items = load_items(name, opts["root"], split, opts["fractions"])
        if not items:
            raise EmptySplit(f"{what} task {name!r} has no example in split {split!r}")
        for it in first_n(items, opts["n"]):
            instruction, output = pair(it)
            rows.append({"id": f"{name}/{it['id']}", "instruction": instruction, "output": output, "source": name})
    return rows

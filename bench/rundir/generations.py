"""Generations records: one answered model request per line of ``generations/<v>/<task>.jsonl`` (a run) or
``<task>.generations.jsonl`` (`bench generate`), written and read only here (docs/RUNDIR.md).

Every record names what made it (task, model, backend, prompt and data hashes, repeat), the item and step it
answers (``example_id``, ``turn``), then the request and its answer - a generation (``messages``, ``settings``,
``text``, token counts, ``context_fit`` when the context was too short) or log-likelihoods (``context``,
``continuations``, ``logliks``) - and the fields the task's scorer added
(:meth:`bench.scorers.Scorer.generation_fields`): the gold ``answer``, the turn's ``reference``, ``scoring`` (how an
mcq item was asked) and its per-request ``values`` (``pred``, ``acc``, ``em``, ...), stored flat beside the others.
Reading then writing a file gives the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any

from core.errors import os_error

from .paths import fail, iter_jsonl, write_jsonl

SCORER_FIELDS = ("answer", "reference", "scoring")  # the typed fields a scorer sets
# Fields written only when set (absent rather than null in the file: older files and other kinds lack them).
_OPTIONAL = ("messages", "settings", "text", "prompt_tokens", "completion_tokens", "context_fit", "context",
             "continuations", "logliks", "answer", "reference", "scoring")


@dataclass
class GenerationRecord:
    """One answered model request of one item (see the module docstring)."""

    task: str
    example_id: str
    turn: int = 0  # the request's step: a chat's turn (0-based); 0 for single-request kinds
    category: str | None = None
    model: str | None = None
    backend: str | None = None
    prompt_hash: str | None = None
    data_hash: str | None = None
    repeat: int = 0
    # a generation request and its answer
    messages: list[dict] | None = None
    settings: dict | None = None
    text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    context_fit: dict | None = None  # {prompt_cut, max_new_tokens} when the model's context was too short
    # a log-likelihood request and its answer
    context: str | None = None
    continuations: list[str] | None = None
    logliks: list[float] | None = None
    # the scorer's fields
    answer: Any = None  # the gold answer (mcq: the option index; short answers: the text)
    reference: Any = None  # chat: this turn's reference answer
    scoring: str | None = None  # mcq: loglik | generate
    values: dict[str, Any] = field(default_factory=dict)  # the scorer's per-request values (pred, acc, em, ...)

    def to_dict(self) -> dict:
        """The record as stored: the optional fields only when set, the scorer's values flat beside the others."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "values":
                continue
            v = getattr(self, f.name)
            if v is not None or f.name not in _OPTIONAL:
                out[f.name] = v
        return {**out, **self.values}

    @classmethod
    def from_dict(cls, d: dict, where: str = "generations") -> "GenerationRecord":
        """A stored record; a field of the wrong type is a one-line error naming ``where``."""
        names = {f.name for f in fields(cls)} - {"values"}
        own = {k: v for k, v in d.items() if k in names}
        for key in ("task", "example_id"):
            if not isinstance(own.get(key), str):
                fail(f"{where}: field {key!r} is {own.get(key)!r}, not a string")
        for key in ("turn", "repeat", "prompt_tokens", "completion_tokens"):
            v = own.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                fail(f"{where}: field {key!r} is {v!r}, not a whole number")
        for key in ("text", "context", "scoring"):
            if own.get(key) is not None and not isinstance(own[key], str):
                fail(f"{where}: field {key!r} is {own[key]!r}, not a string")
        lls = own.get("logliks")
        if lls is not None and (not isinstance(lls, list) or not all(isinstance(x, Real) for x in lls)):
            fail(f"{where}: field 'logliks' is {lls!r}, not a list of numbers")
        return cls(**own, values={k: v for k, v in d.items() if k not in names})


def scorer_fields(values: dict, scorer: str) -> dict:
    """A scorer's fields of one record (:meth:`bench.scorers.Scorer.generation_fields`) as
    :class:`GenerationRecord` arguments: ``answer``/``reference``/``scoring`` typed, the rest its ``values``. A
    value named like another field of the record would overwrite it in the file, so it is refused."""
    clash = sorted(set(values) & ({f.name for f in fields(GenerationRecord)} - set(SCORER_FIELDS)))
    if clash:
        raise ValueError(f"scorer {scorer!r}: generation_fields may not set the record's own field(s) "
                         f"{', '.join(clash)}")
    return {**{k: values[k] for k in SCORER_FIELDS if k in values},
            "values": {k: v for k, v in values.items() if k not in SCORER_FIELDS}}


def write_generations(path: Path, records: list[GenerationRecord]) -> None:
    """Atomically, one canonical JSON object per line, in the given order."""
    write_jsonl(Path(path), [r.to_dict() for r in records])


def read_generations(path: Path) -> list[GenerationRecord]:
    """Every record of a generations file; a damaged file (malformed JSON, not objects, not UTF-8, a field of the
    wrong type) is a one-line error naming the file and line."""
    path = Path(path)
    records = []
    try:
        for lineno, raw in iter_jsonl(path):
            if not isinstance(raw, dict):
                fail(f"{path}: line {lineno}: expected a JSON object, got {type(raw).__name__}")
            records.append(GenerationRecord.from_dict(raw, f"{path}: line {lineno}"))
    except UnicodeDecodeError as e:
        fail(f"{path}: not UTF-8 text (byte {e.start}): the file is damaged - delete it to generate it again")
    except OSError as e:
        raise os_error(e, "read", path) from None
    return records


"""Pydantic validation errors as the project's one-line messages, in one place.

Configs (:mod:`sftmix.config`, :mod:`bench.config`), task YAML (:mod:`bench.task_schema`) and judge YAML
(:mod:`bench.judge.config`) are pydantic models (``extra="forbid"``); :func:`one_line` turns the first error of a
:class:`~pydantic.ValidationError` into a :class:`~core.errors.UserError` of one line: an unknown key with the
nearest known one ("did you mean"), a missing key, or a bad value with what the schema expects and the value given.
"""
from __future__ import annotations

import sys
import types
import typing
from typing import Annotated, Any, Callable, Literal

from pydantic import ConfigDict, ValidationError

from .errors import UserError
from .registry import nearest

# Every schema: unknown keys are errors; values from YAML or the command line may be numbers where a name is meant
# (seed-like names, "2024"): accept them as text.
SCHEMA = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def describe_type(tp: Any) -> str:
    """A reader's name for a schema type: ``integer >= 1 or null``, ``one of 'auto', 'true', 'false'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:  # Field(ge=1) keeps its bounds as annotated_types constraints in .metadata
        bounds = [f"{op} {getattr(c, attr)}" for m in args[1:] for c in getattr(m, "metadata", [])
                  for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(c, attr)]
        return " ".join([describe_type(args[0]), " and ".join(bounds)]).strip()
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {describe_type(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return {int: "integer", float: "number", str: "string", bool: "true/false", type(None): "null",
            list: "a list", dict: "a mapping", Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def field_types(cls) -> dict[str, Any]:
    """A model's or dataclass's field name -> annotated type (bounds kept), for :func:`describe_type`."""
    return typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]), include_extras=True)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def one_line(err: ValidationError, data: Any, *, prefix: str = "", unknown: str = "unknown key",
             fields_at: Callable[[tuple], dict[str, Any] | None] | None = None, depth: int = 1) -> UserError:
    """The first error of ``err`` (raised validating ``data``) as one line.

    ``prefix`` starts the line (``"x.yaml: "``); ``unknown`` names an unknown key (``"unknown key"``, ``"unknown
    option"``); ``fields_at(loc)`` gives the schema's fields (name -> annotated type) of the model at a location, for
    "did you mean" and "expected ..."; ``depth``: how many leading parts of an error's location name the field whose
    type and value are shown (1 for a flat file, 2 for ``section.field``)."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = ".".join(str(x) for x in loc)
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        known = (fields_at(loc[:-1]) if fields_at else None) or {}
        return UserError(f"{prefix}{unknown} {where!r}{nearest(str(loc[-1]), known)}")
    if first["type"] == "missing":
        return UserError(f"{prefix}missing required key {where!r}")
    msg = first["msg"][0].lower() + first["msg"][1:]
    head = loc[:depth]
    tp = ((fields_at(head[:-1]) if fields_at else None) or {}).get(head[-1]) if head else None
    value = _lookup(data, head)
    if tp is None:
        return UserError(f"{prefix}bad value for {where}: {msg}, got {short(value)}")
    return UserError(f"{prefix}bad value for {where}: expected {describe_type(tp)} ({msg}), got {short(value)}")

"""A task's ``fields:`` expressions and prompt templates (Jinja), and the checks that turn raw values into
normalised ``choices`` / ``answer``."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import jinja2
import jinja2.meta

from core.errors import UserError

OPTIONAL_FIELDS = ("id", "category", "reference")  # may be absent from the data (id: the row number)

_env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.Undefined)
_strict_env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


@lru_cache(maxsize=None)
def compile_expr(source: Any, where: str) -> Callable[..., Any]:
    """A ``fields:`` value as a callable over a raw record (a YAML literal is returned as is)."""
    if not isinstance(source, str):
        return lambda **_: source  # a literal (list, number) in YAML
    try:
        return _env.compile_expression(source, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"{where}: bad expression {source!r}: {e.message}") from None


def required_fields(mapping: dict[str, Any]) -> set[str]:
    """Raw field names the expressions of ``mapping`` read (``_index`` and the optional keys' excepted)."""
    names: set[str] = set()
    for key, expr in mapping.items():
        if key in OPTIONAL_FIELDS or not isinstance(expr, str):
            continue
        names |= jinja2.meta.find_undeclared_variables(_env.parse("{{ " + expr + " }}"))
    return names - {"_index"}


@lru_cache(maxsize=None)
def template(source: str) -> jinja2.Template:
    """A prompt/continuation template; an undefined variable is an error."""
    return _strict_env.from_string(source)


def parse_choices(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):  # {"A": ..., "B": ...} (MedQA's original layout)
        value = [value[k] for k in sorted(value)]
    elif isinstance(value, list) and value and isinstance(value[0], dict):  # [{"key": "A", "value": ...}] (bigbio)
        value = [v["value"] for v in sorted(value, key=lambda v: v["key"])]
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) for c in value):
        raise UserError(f"{where}: field 'choices' must give 2+ option strings, got {value!r}")
    return value


def answer_index(value: Any, choices: list[str], labels: list[str], where: str) -> int:
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


"""The schema of a task YAML file, as a pydantic model made from :class:`bench.tasks.Task` itself.

Every field of ``Task`` except those set while loading (``path``, ``data_hash``, ``source``, ``layout``, ``param``)
is a key of the file, with the field's type and default (no default: required); unknown keys are errors with the
nearest known key. The rules between keys (a known kind, a data source, fields or layouts, contamination fields that
exist) are validators here. A file that breaks any of them is one line naming the file
(:func:`core.schema.one_line`). The model only checks: the Task is built from the file's own values, so what a
stage key sees is exactly what the file says.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from core.errors import UserError
from core.registry import nearest
from core.schema import SCHEMA, field_types, one_line

# Task fields set while loading, never written in a file.
RUNTIME_FIELDS = frozenset({"path", "data_hash", "source", "layout", "param"})


def _kind(cls, v: Any, info: ValidationInfo) -> Any:
    kinds = info.context["kinds"]
    if v not in kinds:
        raise ValueError(f"kind must be one of {', '.join(kinds)}, got {v!r}")
    return v


def _data(cls, v: Any, info: ValidationInfo) -> Any:
    sources = info.context["sources"]
    if not isinstance(v, dict) or not any(v.get(k) for k in sources):
        raise ValueError(f"data needs at least one of {', '.join(sources)}")
    return v


def _mcq_mode(cls, v: Any) -> Any:
    if v not in ("loglik", "generate"):
        raise ValueError("mcq_mode must be loglik or generate")
    return v


def _layouts(cls, v: Any) -> Any:
    if v is not None and (not isinstance(v, dict) or not v or not all(isinstance(m, dict) for m in v.values())):
        raise ValueError("layouts must map a layout name to a fields mapping")
    return v


def _contamination(cls, v: Any) -> Any:
    if v is not None and (not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v)):
        raise ValueError("contamination must be a non-empty list of item field names")
    return v


def _between_keys(self, info: ValidationInfo):
    if self.layouts and self.fields:
        raise ValueError("give either fields or layouts, not both")
    if self.contamination is not None:
        # the item fields the mapping makes (or standard ones): a typo is an error, not an empty comparison
        known = set(info.context["standard"]) | {k for m in [self.fields or {}, *(self.layouts or {}).values()]
                                                 for k in m}
        for name in self.contamination:
            if name not in known:
                raise ValueError(f"contamination field {name!r} is not an item field{nearest(name, known)} "
                                 f"(known: {', '.join(sorted(known))})")
    return self


@functools.lru_cache(maxsize=None)
def task_file_model(task_cls: type) -> type[BaseModel]:
    """The pydantic model of a task file for dataclass ``task_cls`` (its fields less :data:`RUNTIME_FIELDS`)."""
    hints = field_types(task_cls)
    keys: dict[str, Any] = {}
    for f in dataclasses.fields(task_cls):
        if f.name in RUNTIME_FIELDS:
            continue
        default = ... if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING else \
            (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        keys[f.name] = (hints[f.name], default)
    validators = {
        "kind_known": field_validator("kind", mode="before", check_fields=False)(_kind),
        "data_source": field_validator("data", mode="before", check_fields=False)(_data),
        "mcq_mode_known": field_validator("mcq_mode", mode="before", check_fields=False)(_mcq_mode),
        "layouts_shape": field_validator("layouts", mode="before", check_fields=False)(_layouts),
        "contamination_shape": field_validator("contamination", mode="before", check_fields=False)(_contamination),
        "between_keys": model_validator(mode="after")(_between_keys),
    }
    return create_model("TaskFile", __config__=SCHEMA, __validators__=validators, **keys)


def check_task_file(task_cls: type, path: Path | str, raw: dict, *, kinds, sources, standard) -> None:
    """Validate a task file's mapping ``raw``; a UserError of one line naming ``path`` otherwise."""
    model = task_file_model(task_cls)
    hints = field_types(task_cls)
    try:
        model.model_validate(raw, context={"kinds": tuple(kinds), "sources": tuple(sources),
                                           "standard": tuple(standard)})
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "value_error":  # a rule between keys: its own message, as the validator wrote it
            raise UserError(f"{path}: {first['ctx']['error']}") from None
        raise one_line(e, raw, prefix=f"{path}: ",
                       fields_at=lambda loc: None if loc else {k: hints[k] for k in model.model_fields}) from None

"""Judge configs (``configs/*.yaml``): a judge as data - mode, default model and settings, parser, prompt forms,
optional price - and :func:`load_judge_config`, which reads one and loads its prompt forms."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from core.errors import UserError, first_line
from core.io import hash_obj
from sftmix.keyschema import JUDGE_FINGERPRINT_ADDED, without_added
from core.registry import nearest
from core.schema import SCHEMA, field_types, one_line

from .client import JudgeRequest
from .parser import Parser, parser_from_config
from .prompts import PromptForm, load_form

CONFIG_DIR = Path(__file__).parent / "configs"
MODES = ("single", "pairwise")


@dataclass
class JudgeConfig:
    """A judge as data: mode, default model and settings, parser, prompt forms, optional price."""

    name: str
    mode: str
    model: str
    parser: Parser
    forms: dict[str, PromptForm]
    temperature: float = 0.0
    max_tokens: int = 1024
    price_per_1m: dict[str, dict[str, float]] | None = None  # model -> {input, output}: $ per 1M tokens
    path: str = ""
    logprobs: int | None = None  # ask for the top-N log-probabilities of the reply's tokens (logprob parsers)
    protocol: dict = field(default_factory=dict)  # {origin, name}: the peer protocol this judge reproduces
    both_orders: bool = False  # judge.swap: a pairwise scorer also asks every pair in the other order

    @property
    def conformant(self) -> bool:
        """True when every prompt form comes from the peer the config's protocol names (e.g. FastChat's file)."""
        origin = self.protocol.get("origin")
        return origin is None or all(f.origin == origin for f in self.forms.values())

    def describe(self) -> str:
        """One line: the protocol, the prompt sources, and whether results are comparable with the peer's."""
        name = self.protocol.get("name", self.name)
        sources = ", ".join(dict.fromkeys(f.source for f in self.forms.values()))
        if self.conformant:
            return f"{name} (prompts: {sources})"
        return (f"NOT {name}: prompts from {sources}, not {self.protocol.get('origin')}'s - scores are not "
                "comparable with the published benchmark")

    def form(self, name: str) -> PromptForm:
        if name not in self.forms:
            raise UserError(f"judge config {self.name!r} has no prompt form {name!r}{nearest(name, self.forms)}")
        return self.forms[name]

    def request(self, form: str, *, task: str, example_id: str, turn: int, fields: dict[str, Any],
                meta: dict | None = None) -> JudgeRequest:
        """Render ``form`` with ``fields`` into a :class:`JudgeRequest` carrying this config's parser and settings."""
        pf = self.form(form)
        return JudgeRequest(
            task=task, example_id=str(example_id), turn=turn, messages=pf.render(fields), parse=self.parser,
            temperature=self.temperature, max_tokens=self.max_tokens, form=form, fields=dict(fields),
            meta=dict(meta or {}), config=self.name, logprobs=self.logprobs,
        )

    def fingerprint(self) -> str:
        """Hash of everything that changes a verdict's meaning (prompts, parser, settings)."""
        return hash_obj({"mode": self.mode, "parser": self.parser.__dict__, "temperature": self.temperature,
                         "max_tokens": self.max_tokens, "logprobs": self.logprobs,
                         "forms": {k: (v.system, v.user, v.engine) for k, v in self.forms.items()},
                         **without_added({"both_orders": self.both_orders}, JUDGE_FINGERPRINT_ADDED)})


class JudgeFile(BaseModel):
    """The schema of a judge config file (unknown keys are errors); ``parser`` and ``prompts`` are read further by
    :func:`bench.judge.parser.parser_from_config` and :func:`bench.judge.prompts.load_form`."""

    model_config = SCHEMA
    name: str | None = None
    mode: str
    model: str
    parser: Any
    prompts: dict[str, Any]
    temperature: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    max_tokens: Annotated[int, Field(ge=1)] = 1024
    price_per_1m: dict[str, dict[str, float]] | None = None  # model -> {input, output}: $ per 1M tokens
    logprobs: Annotated[int, Field(ge=1)] | None = None  # top log-probabilities to ask for (logprob parsers)
    protocol: dict[str, str] | None = None  # {origin, name}: the peer protocol this judge reproduces

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> Any:
        if v not in MODES:
            raise ValueError(f"field 'mode' must be one of {MODES}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _logprobs(self):
        if isinstance(self.parser, dict) and self.parser.get("kind") == "logprob" and not self.logprobs:
            raise ValueError("a logprob parser needs 'logprobs: N' (top log-probabilities to ask for)")
        return self


def _judge_file(path: Path, raw: Any) -> JudgeFile:
    """``raw`` validated as a judge config file, or a one-line UserError naming ``path``."""
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a judge config must be a mapping")
    try:
        return JudgeFile.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "value_error":  # a rule of this schema: its own message
            raise UserError(f"{path}: {first['ctx']['error']}") from None
        raise one_line(e, raw, prefix=f"{path}: ", fields_at=lambda loc: None if loc else field_types(JudgeFile)) \
            from None


def judge_config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_judge_config(name_or_path: str | os.PathLike, variables: dict[str, str | None] | None = None) -> JudgeConfig:
    """Load a judge config by name (``configs/<name>.yaml``) or by path to a YAML file.

    ``variables`` fill ``$NAME`` in ``file`` sources before the environment does (e.g. ``FASTCHAT_JUDGE_PROMPTS``
    from ``--judge-prompts``): file paths, relative to the working directory; a None value leaves the environment's.
    """
    path = Path(name_or_path)
    if not path.suffix:
        names = judge_config_names()
        if str(name_or_path) not in names:
            raise UserError(f"unknown judge config {str(name_or_path)!r}{nearest(str(name_or_path), names)}; "
                            f"known: {', '.join(names)}")
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(f"judge config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {first_line(e)}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    spec = _judge_file(path, raw)
    parser = parser_from_config(path, spec.mode, spec.parser)
    # Variables name files the user gave on the command line: relative to the working directory, and must exist.
    variables = {k: str(Path(v).expanduser().resolve()) for k, v in (variables or {}).items() if v}
    for value in variables.values():
        if not Path(value).is_file():
            what = "is not a file" if Path(value).exists() else "does not exist"
            raise UserError(f"judge prompts file {value} {what}")
    forms = {name: load_form(path, name, sources, variables) for name, sources in spec.prompts.items()}
    return JudgeConfig(
        name=spec.name or path.stem, mode=spec.mode, model=spec.model, parser=parser, forms=forms,
        temperature=spec.temperature, max_tokens=spec.max_tokens, price_per_1m=raw.get("price_per_1m"), path=str(path),
        logprobs=spec.logprobs, protocol=dict(spec.protocol or {}),
    )

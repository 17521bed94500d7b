"""Judge configs (``configs/*.yaml``): a judge as data - mode, default model and settings, parser, prompt forms,
optional price - and :func:`load_judge_config`, which reads one and loads its prompt forms."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sftmix.errors import UserError, first_line
from sftmix.io import hash_obj
from sftmix.keyschema import JUDGE_FINGERPRINT_ADDED, without_added
from sftmix.registry import nearest

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
    price_per_1m: dict[str, float] | None = None
    path: str = ""
    extra: dict = field(default_factory=dict)
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
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a judge config must be a mapping")
    for key in ("mode", "model", "parser", "prompts"):
        if key not in raw:
            raise UserError(f"{path}: missing field {key!r}")
    if raw["mode"] not in MODES:
        raise UserError(f"{path}: field 'mode' must be one of {MODES}, got {raw['mode']!r}")
    parser = parser_from_config(path, raw["mode"], raw["parser"])
    # Variables name files the user gave on the command line: relative to the working directory, and must exist.
    variables = {k: str(Path(v).expanduser().resolve()) for k, v in (variables or {}).items() if v}
    for value in variables.values():
        if not Path(value).is_file():
            what = "is not a file" if Path(value).exists() else "does not exist"
            raise UserError(f"judge prompts file {value} {what}")
    forms = {name: load_form(path, name, sources, variables) for name, sources in raw["prompts"].items()}
    known = {"name", "mode", "model", "parser", "prompts", "temperature", "max_tokens", "price_per_1m", "logprobs",
             "protocol"}
    if parser.kind == "logprob" and not raw.get("logprobs"):
        raise UserError(f"{path}: a logprob parser needs 'logprobs: N' (top log-probabilities to ask for)")
    return JudgeConfig(
        name=raw.get("name", path.stem), mode=raw["mode"], model=raw["model"], parser=parser, forms=forms,
        temperature=float(raw.get("temperature", 0.0)), max_tokens=int(raw.get("max_tokens", 1024)),
        price_per_1m=raw.get("price_per_1m"), path=str(path), extra={k: v for k, v in raw.items() if k not in known},
        logprobs=int(raw["logprobs"]) if raw.get("logprobs") else None, protocol=dict(raw.get("protocol") or {}),
    )

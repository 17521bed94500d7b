"""Judges: prompt forms and parsers as data (``configs/*.yaml``), and three judges with one output format.

- :class:`~bench.judge.client.OpenAIJudge` — any OpenAI-compatible chat endpoint (OpenAI, a local vLLM server);
- :class:`~bench.judge.local.LocalJudge` — an in-process ``transformers`` model, same prompts and parsers;
- :class:`~bench.judge.reference.ReferenceJudge` — a deterministic rubric against the reference answer, for offline
  smoke runs. It is not an LLM and names itself ``reference-rubric-v1`` in every verdict.

A judge config (one YAML file; adding a judge = adding a file) names its mode (``single``: a 1-10 rating;
``pairwise``: which of two outputs is better), default model, temperature, max_tokens, the parser, and one or more
prompt *forms* (e.g. ``single``, ``single_ref``, ``multi``, ``multi_ref``, ``pairwise``). Each form lists prompt
sources tried in order; the first that loads wins, so a form can prefer a file shipped by an installed package or
given by the user (FastChat's ``judge_prompts.jsonl``) and fall back to our own inline wording. Source keys:

- ``user`` (+ optional ``system``): inline template text written for this project;
- ``package`` + ``path``: a file inside an installed package, located with ``importlib.util.find_spec`` (the
  package is not imported); ``file``: a local path (``$VARS`` expanded; a source whose variable is unset is
  skipped); ``url``: fetched at run time;
- ``extract``: how to read the file: ``jsonnet_block`` (the ``|||`` text block of a flexeval metric config),
  ``chatml`` (alpaca_eval's ``<|im_start|>role ... <|im_end|>`` templates), ``fastchat_jsonl:NAME`` (the line
  named NAME of FastChat's ``judge_prompts.jsonl``: its ``system_prompt`` and ``prompt_template``); default: the
  whole file is the user template;
- ``engine``: ``format`` (``{name}`` placeholders, FastChat/alpaca_eval style) or ``jinja2``.

Template fields use FastChat's names: ``question``, ``answer``, ``ref_answer_1``, ``question_1``, ``answer_1``,
``question_2``, ``answer_2``, ``ref_answer_2``; pairwise: ``instruction``, ``output_1``, ``output_2``. Jinja2
templates also get flexeval's names (``messages``, ``references``, ``lm_output``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import textwrap
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sftmix.errors import UserError
from sftmix.io import hash_obj
from sftmix.registry import nearest

from .client import BaseJudge, JudgeRequest, OpenAIJudge, Verdict

CONFIG_DIR = Path(__file__).parent / "configs"
MODES = ("single", "pairwise")

__all__ = [
    "BaseJudge", "JudgeConfig", "JudgeRequest", "OpenAIJudge", "Parser", "PromptForm", "Verdict",
    "judge_config_names", "load_judge_config",
]


@dataclass(frozen=True)
class Parser:
    """Turns a judge reply into a number, or None when the reply cannot be parsed.

    ``single`` mode: the first group of ``pattern`` (else ``backup_pattern``) as a float, which must lie in
    ``range``. ``pairwise`` mode: the matched group mapped through ``choices`` to alpaca_eval's preference
    encoding (1.0: output_1 preferred, 2.0: output_2 preferred, 1.5: tie).
    """

    pattern: str
    backup_pattern: str | None = None
    range: tuple[float, float] | None = None
    choices: dict[str, float] | None = None

    def __call__(self, text: str | None) -> float | None:
        if not text:
            return None
        for pat in (self.pattern, self.backup_pattern):
            if not pat:
                continue
            m = re.search(pat, text)
            if m is None:
                continue
            token = m.group(1) if m.groups() else m.group(0)
            if self.choices is not None:
                return self.choices.get(token)
            try:
                value = float(token)
            except ValueError:
                continue
            if self.range and not (self.range[0] <= value <= self.range[1]):
                return None
            return value
        return None


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class PromptForm:
    """One prompt form: optional system text + user template, rendered into chat messages."""

    name: str
    user: str
    system: str | None = None
    engine: str = "format"
    source: str = "inline"

    def render(self, fields: dict[str, Any]) -> list[dict]:
        render = self._jinja if self.engine == "jinja2" else self._format
        messages = [{"role": "system", "content": render(self.system, fields)}] if self.system else []
        return messages + [{"role": "user", "content": render(self.user, fields)}]

    def _format(self, template: str, fields: dict[str, Any]) -> str:
        # One pass with a callback: text inserted from an answer is never scanned for placeholders again.
        def sub(m: re.Match) -> str:
            if m.group(1) not in fields or fields[m.group(1)] is None:
                raise UserError(f"judge prompt form {self.name!r} ({self.source}) needs field {m.group(1)!r}")
            return str(fields[m.group(1)])

        return _PLACEHOLDER.sub(sub, template)

    def _jinja(self, template: str, fields: dict[str, Any]) -> str:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        ctx = dict(fields)
        # flexeval's names for the same things, so its shipped templates render unchanged.
        question = fields.get("question", fields.get("question_1"))
        ctx.setdefault("messages", [{"role": "user", "content": question}])
        ref = fields.get("ref_answer_1")
        ctx.setdefault("references", [ref] if ref else [])
        ctx.setdefault("lm_output", fields.get("answer", fields.get("answer_1")))
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
        return env.from_string(template).render(**ctx)


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
            meta=dict(meta or {}), config=self.name,
        )

    def fingerprint(self) -> str:
        """Hash of everything that changes a verdict's meaning (prompts, parser, settings)."""
        return hash_obj({"mode": self.mode, "parser": self.parser.__dict__, "temperature": self.temperature,
                         "max_tokens": self.max_tokens,
                         "forms": {k: (v.system, v.user, v.engine) for k, v in self.forms.items()}})


def judge_config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_judge_config(name_or_path: str | os.PathLike) -> JudgeConfig:
    """Load a judge config by name (``configs/<name>.yaml``) or by path to a YAML file."""
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
        raise UserError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    for key in ("mode", "model", "parser", "prompts"):
        if key not in raw:
            raise UserError(f"{path}: missing field {key!r}")
    if raw["mode"] not in MODES:
        raise UserError(f"{path}: field 'mode' must be one of {MODES}, got {raw['mode']!r}")
    p = raw["parser"]
    if "pattern" not in p:
        raise UserError(f"{path}: field 'parser.pattern' is required")
    parser = Parser(
        pattern=p["pattern"], backup_pattern=p.get("backup_pattern"),
        range=tuple(p["range"]) if p.get("range") else None,
        choices={str(k): float(v) for k, v in p["choices"].items()} if p.get("choices") else None,
    )
    if raw["mode"] == "pairwise" and parser.choices is None:
        raise UserError(f"{path}: a pairwise judge needs 'parser.choices' (matched text -> 1, 2 or 1.5)")
    forms = {name: _load_form(path, name, sources) for name, sources in raw["prompts"].items()}
    known = {"name", "mode", "model", "parser", "prompts", "temperature", "max_tokens", "price_per_1m"}
    return JudgeConfig(
        name=raw.get("name", path.stem), mode=raw["mode"], model=raw["model"], parser=parser, forms=forms,
        temperature=float(raw.get("temperature", 0.0)), max_tokens=int(raw.get("max_tokens", 1024)),
        price_per_1m=raw.get("price_per_1m"), path=str(path), extra={k: v for k, v in raw.items() if k not in known},
    )


def _load_form(path: Path, name: str, sources: Any) -> PromptForm:
    sources = sources if isinstance(sources, list) else [sources]
    reasons = []
    for src in sources:
        if not isinstance(src, dict):
            raise UserError(f"{path}: prompts.{name}: each source must be a mapping")
        try:
            form = _load_source(path, name, src)
        except _Skip as e:
            reasons.append(str(e))
            continue
        if form is not None:
            return form
    raise UserError(f"{path}: prompts.{name}: no source could be loaded ({'; '.join(reasons)})")


class _Skip(Exception):
    """This source is unavailable here (package missing, variable unset); try the next one."""


def _load_source(path: Path, name: str, src: dict) -> PromptForm:
    engine = src.get("engine", "format")
    if engine not in ("format", "jinja2"):
        raise UserError(f"{path}: prompts.{name}: engine must be 'format' or 'jinja2', got {engine!r}")
    if "user" in src:
        return PromptForm(name=name, user=src["user"], system=src.get("system"), engine=engine,
                          source=f"{path.name}:inline")
    if "package" in src:
        spec = importlib.util.find_spec(src["package"])
        if spec is None or not spec.submodule_search_locations:
            raise _Skip(f"package {src['package']!r} is not installed")
        file = Path(list(spec.submodule_search_locations)[0]) / src["path"]
        if not file.is_file():
            raise _Skip(f"{src['package']} has no file {src['path']!r}")
        text, where = file.read_text(encoding="utf-8"), f"{src['package']}/{src['path']}"
    elif "file" in src:
        expanded = os.path.expandvars(str(src["file"]))
        if not expanded or "$" in expanded:
            raise _Skip(f"{src['file']} is not set")
        file = Path(expanded) if Path(expanded).is_absolute() else path.parent / expanded
        if not file.is_file():
            raise _Skip(f"{file} does not exist")
        text, where = file.read_text(encoding="utf-8"), str(file)
    elif "url" in src:
        try:
            with urllib.request.urlopen(src["url"], timeout=15) as r:
                text = r.read().decode("utf-8")
        except OSError as e:
            raise _Skip(f"{src['url']}: {e}") from None
        where = src["url"]
    else:
        raise UserError(f"{path}: prompts.{name}: a source needs 'user', 'package'+'path', 'file' or 'url'")
    system, user, engine = _extract(text, src.get("extract"), engine, where, path, name)
    return PromptForm(name=name, user=user, system=system, engine=engine, source=where)


def _extract(text: str, how: str | None, engine: str, where: str, path: Path, name: str):
    if not how:
        return None, text, engine
    if how == "jsonnet_block":
        m = re.search(r"\|\|\|[ \t]*\n(.*?)\n[ \t]*\|\|\|", text, re.S)
        if m is None:
            raise UserError(f"{where}: no ||| text block found (prompts.{name} in {path})")
        return None, textwrap.dedent(m.group(1)).strip("\n"), engine
    if how == "chatml":
        turns = dict(re.findall(r"<\|im_start\|>(system|user)\s*\n(.*?)\s*<\|im_end\|>", text, re.S))
        if "user" not in turns:
            raise UserError(f"{where}: no <|im_start|>user block (prompts.{name} in {path})")
        return turns.get("system"), turns["user"], engine
    if how.startswith("fastchat_jsonl:"):
        wanted = how.split(":", 1)[1]
        for line in text.splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("name") == wanted:
                    return row.get("system_prompt") or None, row["prompt_template"], "format"
        raise _Skip(f"{where}: no prompt named {wanted!r}")
    raise UserError(f"{path}: prompts.{name}: unknown extract {how!r} (jsonnet_block, chatml, fastchat_jsonl:NAME)")

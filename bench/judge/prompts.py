"""Judge prompt forms and where their text comes from.

A form lists prompt sources tried in order; the first that loads wins, so a form can prefer a file shipped by an
installed package or given by the user (FastChat's ``judge_prompts.jsonl``) and fall back to our own inline
wording. Source keys:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.download import Unavailable, fetch, home
from core.errors import UserError, first_line

ENGINES = ("format", "jinja2", "replace_first")

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class PromptForm:
    """One prompt form: optional system text + user template, rendered into chat messages."""

    name: str
    user: str
    system: str | None = None
    engine: str = "format"
    source: str = "inline"
    origin: str = "bench"  # whose wording: "fastchat", "alpaca_eval", or "bench" (this project's own text)

    def render(self, fields: dict[str, Any]) -> list[dict]:
        render = {"jinja2": self._jinja, "replace_first": self._replace_first}.get(self.engine, self._format)
        messages = [{"role": "system", "content": render(self.system, fields)}] if self.system else []
        return messages + [{"role": "user", "content": render(self.user, fields)}]

    def _format(self, template: str, fields: dict[str, Any]) -> str:
        # One pass with a callback: text inserted from an answer is never scanned for placeholders again.
        def sub(m: re.Match) -> str:
            if m.group(1) not in fields or fields[m.group(1)] is None:
                raise UserError(f"judge prompt form {self.name!r} ({self.source}) needs field {m.group(1)!r}")
            return str(fields[m.group(1)])

        return _PLACEHOLDER.sub(sub, template)

    def _replace_first(self, template: str, fields: dict[str, Any]) -> str:
        # alpaca_eval's make_prompts: each placeholder (in order of first appearance) replaced once, in sequence.
        names = list(dict.fromkeys(re.findall(r"{([^ \s]+?)}", template)))
        for name in names:
            if fields.get(name) is None:
                raise UserError(f"judge prompt form {self.name!r} ({self.source}) needs field {name!r}")
            template = template.replace("{" + name + "}", str(fields[name]), 1)
        return template

    def _jinja(self, template: str, fields: dict[str, Any]) -> str:
        ctx = dict(fields)
        # flexeval's names for the same things, so its shipped templates render unchanged.
        question = fields.get("question", fields.get("question_1"))
        ctx.setdefault("messages", [{"role": "user", "content": question}])
        ref = fields.get("ref_answer_1")
        ctx.setdefault("references", [ref] if ref else [])
        ctx.setdefault("lm_output", fields.get("answer", fields.get("answer_1")))
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
        return env.from_string(template).render(**ctx)


def load_form(path: Path, name: str, sources: Any, variables: dict[str, str | None]) -> PromptForm:
    sources = sources if isinstance(sources, list) else [sources]
    reasons = []
    for src in sources:
        if not isinstance(src, dict):
            raise UserError(f"{path}: prompts.{name}: each source must be a mapping")
        try:
            form = _load_source(path, name, src, variables)
        except _Skip as e:
            reasons.append(str(e))
            continue
        if form is not None:
            return form
    raise UserError(f"{path}: prompts.{name}: no source could be loaded ({'; '.join(reasons)})")


class _Skip(Exception):
    """This source is unavailable here (package missing, variable unset); try the next one."""


def _expand(value: str, variables: dict[str, str | None]) -> str:
    """``$NAME`` / ``${NAME}`` from ``variables`` first, then the environment."""
    def sub(m: re.Match) -> str:
        key = m.group(1) or m.group(2)
        val = variables.get(key) or os.environ.get(key)
        return val if val else m.group(0)

    return re.sub(r"\$(?:(\w+)|\{(\w+)\})", sub, value)


def download_cached(url: str, sha256: str) -> Path:
    """A file fetched once from ``url`` into ``$SFTMIX_HOME/downloads`` and checked against its sha256
    (:func:`core.download.fetch`). Offline, or when the fetch fails, raises :class:`_Skip` (the next source is
    tried); a checksum mismatch is an error."""
    try:
        return fetch(url, sha256, home() / "downloads" / sha256[:16] / url.rsplit("/", 1)[-1], what=url, timeout=15)
    except Unavailable as e:
        raise _Skip(str(e)) from None


def _load_source(path: Path, name: str, src: dict, variables: dict[str, str | None]) -> PromptForm:
    engine = src.get("engine", "format")
    origin = str(src.get("origin", "bench"))
    if engine not in ENGINES:
        raise UserError(f"{path}: prompts.{name}: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if "user" in src:
        return PromptForm(name=name, user=src["user"], system=src.get("system"), engine=engine,
                          source=f"{path.name}:inline", origin=origin)
    if "package" in src:
        spec = importlib.util.find_spec(src["package"])
        if spec is None or not spec.submodule_search_locations:
            raise _Skip(f"package {src['package']!r} is not installed (pip install {src['package'].replace('_', '-')})")
        file = Path(list(spec.submodule_search_locations)[0]) / src["path"]
        if not file.is_file():
            raise _Skip(f"{src['package']} has no file {src['path']!r}")
        text, where = file.read_text(encoding="utf-8"), f"{src['package']}/{src['path']}"
    elif "file" in src:
        expanded = _expand(str(src["file"]), variables)
        if not expanded or "$" in expanded:
            raise _Skip(f"{src['file']} is not set")
        file = Path(expanded) if Path(expanded).is_absolute() else path.parent / expanded
        if not file.is_file():
            raise _Skip(f"{file} does not exist" if not file.exists() else f"{file} is not a file")
        try:
            text, where = file.read_text(encoding="utf-8"), str(file)
        except UnicodeDecodeError as e:
            raise UserError(f"judge prompts file {file}: not UTF-8 text (byte {e.start})") from None
    elif "url" in src:
        if not src.get("sha256"):
            raise UserError(f"{path}: prompts.{name}: a url source needs its 'sha256'")
        file = download_cached(src["url"], src["sha256"])
        text, where = file.read_text(encoding="utf-8"), src["url"]
    else:
        raise UserError(f"{path}: prompts.{name}: a source needs 'user', 'package'+'path', 'file' or 'url'")
    system, user, engine = _extract(text, src.get("extract"), engine, where, path, name)
    return PromptForm(name=name, user=user, system=system, engine=engine, source=where, origin=origin)


def _extract(text: str, how: str | None, engine: str, where: str, path: Path, name: str):
    if not how:
        return None, text, engine
    if how == "jsonnet_block":
        m = re.search(r"\|\|\|[ \t]*\n(.*?)\n[ \t]*\|\|\|", text, re.S)
        if m is None:
            raise UserError(f"{where}: no ||| text block found (prompts.{name} in {path})")
        return None, textwrap.dedent(m.group(1)).strip("\n"), engine
    if how == "chatml":
        # alpaca_eval's prompt_to_chatml: role line, then the content up to <|im_end|>, stripped.
        turns = {role: body.strip() for role, body in
                 re.findall(r"<\|im_start\|>(system|user)[^\n]*\n(.*?)<\|im_end\|>", text, re.S)}
        if "user" not in turns:
            raise UserError(f"{where}: no <|im_start|>user block (prompts.{name} in {path})")
        return turns.get("system"), turns["user"], engine
    if how.startswith("fastchat_jsonl:"):
        wanted = how.split(":", 1)[1]
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise UserError(f"{where}: line {lineno}: invalid JSON ({first_line(e)})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{where}: line {lineno}: expected a JSON object (FastChat's judge_prompts.jsonl)")
                if row.get("name") == wanted:
                    if not isinstance(row.get("prompt_template"), str):
                        raise UserError(f"{where}: line {lineno}: prompt {wanted!r} has no 'prompt_template' text")
                    return row.get("system_prompt") or None, row["prompt_template"], "format"
        raise _Skip(f"{where}: no prompt named {wanted!r}")
    raise UserError(f"{path}: prompts.{name}: unknown extract {how!r} (jsonnet_block, chatml, fastchat_jsonl:NAME)")

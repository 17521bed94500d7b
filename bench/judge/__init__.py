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

import hashlib
import importlib.util
import json
import math
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
ENGINES = ("format", "jinja2", "replace_first")

__all__ = [
    "BaseJudge", "JudgeConfig", "JudgeRequest", "OpenAIJudge", "Parser", "PromptForm", "Verdict",
    "judge_config_names", "load_judge_config",
]


@dataclass(frozen=True)
class Parser:
    """Turns a judge reply into a number, or None when the reply cannot be parsed.

    ``regex`` (default), ``single`` mode: the first group of ``pattern`` (else ``backup_pattern``) as a number,
    which must lie in ``range`` when one is given (FastChat's MT-Bench parser has none). ``regex``, ``pairwise``
    mode: the matched group mapped through ``choices`` to alpaca_eval's preference encoding (1.0: output_1
    preferred, 2.0: output_2 preferred, 1.5: tie). ``logprob`` (alpaca_eval's ``logprob_parser`` with
    ``is_binarize: false``): from the top log-probabilities of the reply's first token, p = P(numerator) / P(any
    denominator token) and the value is 2 - p (1: output_1 certainly preferred, 2: output_2); None when no
    denominator token is among the top log-probabilities.
    """

    pattern: str | None = None
    backup_pattern: str | None = None
    range: tuple[float, float] | None = None
    choices: dict[str, float] | None = None
    kind: str = "regex"
    numerator_token: str | None = None
    denominator_tokens: tuple[str, ...] = ()

    def __call__(self, raw: str | dict | None) -> float | None:
        if self.kind == "logprob":
            return self._logprob(raw)
        text = raw.get("text") if isinstance(raw, dict) else raw
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

    def _logprob(self, raw: str | dict | None) -> float | None:
        top = raw.get("top_logprobs") if isinstance(raw, dict) else None
        if not top:
            return None
        wanted = set(self.denominator_tokens) | {self.numerator_token}
        found = {t["token"]: float(t["logprob"]) for t in top if t.get("token") in wanted}
        if not any(t in found for t in self.denominator_tokens):
            return None
        den = [found[t] for t in self.denominator_tokens if t in found]
        peak = max(den)
        log_den = peak + math.log(sum(math.exp(x - peak) for x in den))
        num = found.get(self.numerator_token, -math.inf)
        return 2.0 - math.exp(num - log_den)


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
    logprobs: int | None = None  # ask for the top-N log-probabilities of the reply's tokens (logprob parsers)
    protocol: dict = field(default_factory=dict)  # {origin, name}: the peer protocol this judge reproduces

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
                         "forms": {k: (v.system, v.user, v.engine) for k, v in self.forms.items()}})


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
        raise UserError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    for key in ("mode", "model", "parser", "prompts"):
        if key not in raw:
            raise UserError(f"{path}: missing field {key!r}")
    if raw["mode"] not in MODES:
        raise UserError(f"{path}: field 'mode' must be one of {MODES}, got {raw['mode']!r}")
    parser = _parser(path, raw["mode"], raw["parser"])
    # Variables name files the user gave on the command line: relative to the working directory, and must exist.
    variables = {k: str(Path(v).expanduser().resolve()) for k, v in (variables or {}).items() if v}
    for value in variables.values():
        if not Path(value).is_file():
            raise UserError(f"judge prompts file {value} does not exist")
    forms = {name: _load_form(path, name, sources, variables) for name, sources in raw["prompts"].items()}
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


def _parser(path: Path, mode: str, p: Any) -> Parser:
    if not isinstance(p, dict):
        raise UserError(f"{path}: field 'parser' must be a mapping")
    kind = p.get("kind", "regex")
    if kind == "logprob":
        if not p.get("numerator_token") or not p.get("denominator_tokens"):
            raise UserError(f"{path}: a logprob parser needs 'numerator_token' and 'denominator_tokens'")
        return Parser(kind="logprob", numerator_token=str(p["numerator_token"]),
                      denominator_tokens=tuple(str(t) for t in p["denominator_tokens"]))
    if kind != "regex":
        raise UserError(f"{path}: parser.kind must be 'regex' or 'logprob', got {kind!r}")
    if "pattern" not in p:
        raise UserError(f"{path}: field 'parser.pattern' is required")
    parser = Parser(
        pattern=p["pattern"], backup_pattern=p.get("backup_pattern"),
        range=tuple(p["range"]) if p.get("range") else None,
        choices={str(k): float(v) for k, v in p["choices"].items()} if p.get("choices") else None,
    )
    if mode == "pairwise" and parser.choices is None:
        raise UserError(f"{path}: a pairwise judge needs 'parser.choices' (matched text -> 1, 2 or 1.5)")
    return parser


def _load_form(path: Path, name: str, sources: Any, variables: dict[str, str | None]) -> PromptForm:
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


_FAILED_DOWNLOADS: dict[str, str] = {}


def download_cached(url: str, sha256: str) -> Path:
    """A file fetched once from ``url`` into ``$SFTMIX_HOME/downloads`` and checked against its sha256.

    Offline (``HF_HUB_OFFLINE``), or when the fetch fails, raises :class:`_Skip`; a checksum mismatch is an error.
    """
    home = Path(os.environ.get("SFTMIX_HOME") or "~/.cache/sftmix").expanduser()
    target = home / "downloads" / sha256[:16] / url.rsplit("/", 1)[-1]
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        raise _Skip(f"{url}: offline (HF_HUB_OFFLINE) and not downloaded before")
    if url in _FAILED_DOWNLOADS:  # one attempt per process: every form of a config names the same file
        raise _Skip(_FAILED_DOWNLOADS[url])
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            data = r.read()
    except OSError as e:
        _FAILED_DOWNLOADS[url] = f"{url}: {e}"
        raise _Skip(_FAILED_DOWNLOADS[url]) from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise UserError(f"{url}: sha256 {got} does not match the pinned {sha256}; refusing to use it")
    from sftmix.io import atomic_path

    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


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
            raise _Skip(f"{file} does not exist")
        text, where = file.read_text(encoding="utf-8"), str(file)
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
        for line in text.splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("name") == wanted:
                    return row.get("system_prompt") or None, row["prompt_template"], "format"
        raise _Skip(f"{where}: no prompt named {wanted!r}")
    raise UserError(f"{path}: prompts.{name}: unknown extract {how!r} (jsonnet_block, chatml, fastchat_jsonl:NAME)")

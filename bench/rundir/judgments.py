"""Judge records: verdicts (``judgments/<v>/<task>.jsonl``) and judge-log entries (``judge_log.jsonl``).

The judges (:mod:`bench.judge`) make :class:`Verdict` and :class:`JudgeLogEntry` objects; this module alone turns
them into lines and lines back into them (the format: docs/RUNDIR.md; older lines: :mod:`.compat`).
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from core.errors import os_error

from . import compat
from .compat import split, with_absent
from .paths import RunDir, fail, iter_jsonl, write_jsonl

FAILURES = ("transport", "refused", "unparsable", "malformed")  # the causes of a failed verdict


def _usage() -> dict:
    return {"prompt_tokens": 0, "completion_tokens": 0}


@dataclass
class Verdict:
    """One judgment of one (item, turn, repeat). ``raw``: the reply text, or with log-probabilities
    ``{"text", "top_logprobs": [{token, logprob}] of the first token}``. ``failure``: one of :data:`FAILURES` when
    ``failed``. ``variant``: the variant judged, set when stored in a run directory."""

    task: str
    example_id: str
    turn: int
    judge: str
    judge_kind: str  # 'llm' | 'local' | 'reference'
    repeat: int
    score: float | None
    failed: bool
    raw: str | dict | None
    error: str | None = None
    usage: dict = field(default_factory=_usage)
    form: str = ""
    config: str = ""
    attempts: int = 0
    latency_s: float = 0.0
    cached: bool = False
    meta: dict = field(default_factory=dict)
    failure: str | None = None
    variant: str | None = None
    extra: dict = field(default_factory=dict)  # fields of a newer writer, kept as they were

    def to_record(self) -> dict:
        """The stored line's object (``variant`` only when set, as ``bench judge-calibrate`` stores none)."""
        d = asdict(self)  # deep copies: a stored record never aliases a live verdict
        del d["extra"]
        if d["variant"] is None:
            del d["variant"]
        return {**self.extra, **d}

    @classmethod
    def from_record(cls, d: dict, where: str = "judgment") -> "Verdict":
        """A stored line; absent fields read as :data:`.compat.ABSENT` says, unknown ones go to ``extra``. Built
        without ``__init__``: `bench view` reads every verdict of every run."""
        if type(d) is not dict or "example_id" not in d:
            fail(f"{where}: not a judgment (needs an object with example_id)")
        own = _VERDICT_TEMPLATE.copy()
        own.update(d)
        extra = {} if d.keys() <= _VERDICT_FIELDS else {k: own.pop(k) for k in d.keys() - _VERDICT_FIELDS}
        for k, default in _VERDICT_NOT_NULL:  # absent, or stored as null
            if own[k] is None:
                own[k] = dict(default) if type(default) is dict else default
        if type(own["example_id"]) is not str:
            own["example_id"] = str(own["example_id"])
        for k in ("task", "judge", "judge_kind"):
            if type(own[k]) is not str:
                own[k] = str(own[k] or "")
        own["turn"] = own["turn"] or 0
        if type(own["failed"]) is not bool:
            own["failed"] = bool(own["failed"])
        own["extra"] = extra
        v = cls.__new__(cls)
        v.__dict__.update(own)
        return v


_VERDICT_FIELDS = frozenset(f.name for f in fields(Verdict)) - {"extra"}
# every field None, then the defaults of compat.ABSENT that are not None (dicts made fresh for each verdict)
_VERDICT_TEMPLATE = {k: None for k in _VERDICT_FIELDS}
_VERDICT_NOT_NULL = tuple((k, v) for k, v in compat.ABSENT["Verdict"].items() if v is not None)
_VERDICT_TEMPLATE.update({k: v for k, v in _VERDICT_NOT_NULL if type(v) is not dict})


class Judgments:
    """``judgments/<v>/<task>.jsonl``: every verdict of one (variant, task), in the order the scorer asked."""

    @staticmethod
    def write(rd: RunDir, variant: str, task: str, verdicts: Iterable[Verdict]) -> Path:
        rd.mark_version()
        path = rd.judgments(variant, task)
        write_jsonl(path, [v.to_record() for v in verdicts])
        return path

    @staticmethod
    def read(path: Path) -> list[Verdict]:
        """Every verdict of a judgments file (``[]`` when there is none); a bad line is an error naming it."""
        path = Path(path)
        if not path.exists():
            return []
        return [Verdict.from_record(r, f"{path}: line {n}") for n, r in iter_jsonl(path)]


@dataclass
class JudgeLogEntry:
    """One judge attempt (cache hits make none): what was sent and what came back (``raw`` None and ``error`` set
    when nothing usable did). ``usage`` None: the attempt failed before a reply."""

    time: float
    judge: str
    task: str
    example_id: str
    turn: int
    repeat: int
    form: str = ""
    attempt: int = 1
    messages: list = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    raw: Any = None
    usage: dict | None = None
    latency_s: float | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        if d["temperature"] is None and d["max_tokens"] is None:  # a local judge's line, as it always was
            del d["temperature"], d["max_tokens"]
        return {**self.extra, **d}

    @classmethod
    def from_dict(cls, d: dict, where: str = "judge log") -> "JudgeLogEntry":
        if not isinstance(d, dict):
            fail(f"{where}: expected a JSON object")
        own, extra = split(_LOG_FIELDS, d)
        own = with_absent("JudgeLogEntry", own)
        missing = [k for k in ("time", "judge", "task", "example_id", "turn", "repeat") if own.get(k) is None]
        if missing:
            fail(f"{where}: missing field {missing[0]!r}")
        own["messages"] = own.get("messages") or []
        return cls(**own, extra={k: v for k, v in extra.items() if k not in _LOG_FIELDS})


_LOG_FIELDS = {f.name for f in fields(JudgeLogEntry)} - {"extra"}


class JudgeLog:
    """An append-only JSON-lines log of judge attempts (``judge_log.jsonl``, a worker's
    ``executor/judge_log/<stage>.jsonl``): one whole line per write, safe from several threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, entry: JudgeLogEntry | dict) -> None:
        """One line; an OS error (a full disk) is one error line naming the file."""
        d = entry.to_dict() if isinstance(entry, JudgeLogEntry) else dict(entry)
        line = json.dumps(d, ensure_ascii=False, default=str)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError as e:
                raise os_error(e, path=self.path) from None

    def read(self) -> list[JudgeLogEntry]:
        if not self.path.exists():
            return []
        return [JudgeLogEntry.from_dict(r, f"{self.path}: line {n}") for n, r in iter_jsonl(self.path)]

    def count(self) -> int:
        """How many attempts the log holds (without parsing them)."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            return sum(1 for line in f if line.strip())

    def merge_from(self, other: str | Path) -> None:
        """Append another log's lines (a worker's) to this one and remove it (the coordinator is this log's one
        writer)."""
        other = Path(other)
        if not other.exists():
            return
        text = other.read_text(encoding="utf-8")
        if text:
            with self._lock:
                try:
                    with open(self.path, "a", encoding="utf-8") as f:
                        f.write(text if text.endswith("\n") else text + "\n")
                except OSError as e:
                    raise os_error(e, path=self.path) from None
        other.unlink()

"""How a judge's reply becomes a number: :class:`Parser` (regex or log-probability), built from a config's
``parser:`` mapping by :func:`parser_from_config`."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError


@dataclass(frozen=True)
class Parser:
    """Turns a judge reply into a number, or None when the reply cannot be parsed.

    ``regex`` (default), ``single`` mode: the first group of ``pattern`` (else ``backup_pattern``) as a number,
    which must lie in ``range`` when one is given (FastChat's MT-Bench parser has none). ``regex``, ``pairwise``
    mode: the matched group mapped through ``choices`` to alpaca_eval's preference encoding (1.0: output_1
    preferred, 2.0: output_2 preferred, 1.5: tie). ``logprob`` (alpaca_eval's ``logprob_parser`` with
    ``is_binarize: false``): from the top log-probabilities of the reply's first token, p = P(numerator) / P(any
    denominator token) and the value is 2 - p (1: output_1 certainly preferred, 2: output_2); None when no
    denominator token is among the top log-probabilities. ``contains`` (FastChat's pairwise ``[[A]]`` format):
    the first key of ``choices``, in their order, that occurs anywhere in the reply (FastChat checks ``[[A]]``, then
    ``[[B]]``, then ``[[C]]``), mapped to its value.
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
        if self.kind == "contains":
            return next((value for token, value in (self.choices or {}).items() if token in text), None)
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


def parser_from_config(path: Path, mode: str, p: Any) -> Parser:
    if not isinstance(p, dict):
        raise UserError(f"{path}: field 'parser' must be a mapping")
    kind = p.get("kind", "regex")
    if kind == "logprob":
        if not p.get("numerator_token") or not p.get("denominator_tokens"):
            raise UserError(f"{path}: a logprob parser needs 'numerator_token' and 'denominator_tokens'")
        return Parser(kind="logprob", numerator_token=str(p["numerator_token"]),
                      denominator_tokens=tuple(str(t) for t in p["denominator_tokens"]))
    if kind == "contains":
        if not isinstance(p.get("choices"), dict) or not p["choices"]:
            raise UserError(f"{path}: a contains parser needs 'choices' (text -> value, checked in order)")
        return Parser(kind="contains", choices={str(k): float(v) for k, v in p["choices"].items()})
    if kind != "regex":
        raise UserError(f"{path}: parser.kind must be 'regex', 'contains' or 'logprob', got {kind!r}")
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

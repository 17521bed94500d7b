"""``reference-rubric-v1``: a deterministic rubric rating an answer against the reference answer, 1-10.

It exists for offline smoke runs, where no model that installs here can judge (SmolLM2-135M-Instruct gave 0/40
parsable MT-Bench verdicts). It is NOT an LLM judge; every verdict names it (``judge="reference-rubric-v1"``,
``judge_kind="reference"``) so no table can pass it off as one.

Formula. Both texts are normalised SQuAD-style (lower case, punctuation and the articles a/an/the removed, split
on whitespace) into token lists ``a`` (answer) and ``r`` (reference). Then

- ``F1``      = token-level F1 of the multisets ``a`` and ``r`` (precision = overlap/|a|, recall = overlap/|r|);
- ``ROUGE-L`` = LCS-based F-measure: ``2·P·R/(P+R)`` with ``P = LCS(a, r)/|a|``, ``R = LCS(a, r)/|r|``;
- ``s``       = (F1 + ROUGE-L) / 2, in [0, 1];
- bonus: if ``r`` occurs as a contiguous span of ``a`` (the answer contains the reference), ``s = min(1, s + 0.25)``;
  if ``a == r`` (exact match), ``s = 1``;
- score = round(1 + 9·s, 2), in [1, 10].

An empty answer scores 1. A request without a reference answer is recorded as failed ("no reference answer"),
never guessed. Replies always "parse": the score is computed, not read from text.
"""
from __future__ import annotations

import re
import string
from collections import Counter

from core.io import hash_obj

from .client import BaseJudge, JudgeRequest, Verdict

NAME = "reference-rubric-v1"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise(text: str) -> list[str]:
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _contains(a: list[str], r: list[str]) -> bool:
    n = len(r)
    return n > 0 and any(a[i:i + n] == r for i in range(len(a) - n + 1))


def rubric_score(answer: str, reference: str) -> float:
    """The rubric above: 1 (unrelated or empty) .. 10 (exact match)."""
    a, r = normalise(answer or ""), normalise(reference or "")
    if not a or not r:
        return 1.0
    if a == r:
        return 10.0
    overlap = sum((Counter(a) & Counter(r)).values())
    f1 = _f(overlap / len(a), overlap / len(r))
    lcs = _lcs(a, r)
    s = (f1 + _f(lcs / len(a), lcs / len(r))) / 2
    if _contains(a, r):
        s = min(1.0, s + 0.25)
    return round(1 + 9 * s, 2)


class ReferenceJudge(BaseJudge):
    """Rates ``fields['answer']`` against ``fields['reference']`` with :func:`rubric_score`."""

    name = NAME
    kind = "reference"

    def __init__(self, cache=None, ledger=None, log_path=None):
        super().__init__(cache=None, ledger=None, log_path=log_path)  # cheap and deterministic: nothing to cache

    def _key(self, req: JudgeRequest, repeat: int) -> str:
        # The rubric reads the structured fields, not the rendered prompt.
        return hash_obj({"judge": NAME, "answer": req.fields.get("answer"), "reference": req.fields.get("reference"),
                         "repeat": repeat}, n=32)

    def _judge_one(self, req: JudgeRequest, repeat: int, key: str) -> Verdict:
        answer, reference = req.fields.get("answer"), req.fields.get("reference")
        if not reference:
            return self._verdict(req, repeat, score=None, failed=True, raw=None, error="no reference answer",
                                 failure="unparsable")  # nothing the rubric can read a verdict from
        score = rubric_score(answer or "", reference)
        return self._verdict(req, repeat, score=score, failed=False, raw=f"{NAME}: {score}", attempts=1)

"""Exact-match scoring of generated short answers: normalised string match, and a numeric match.

Normalisation (SQuAD style): lower-case, drop punctuation and the articles a/an/the, collapse whitespace.
``em`` compares the whole normalised answer; ``numeric`` compares the last number in the generation with the
gold number (when the gold answer is a number), tolerant to formatting like "1,000" or "3.0".

The short-answer kind (``kind: exact``): an item holds ``question`` and ``answer`` (a string); the model answers the
prompt once (:class:`ShortAnswerScorer`, which :mod:`.token_f1` also builds on). Each generations record keeps the
gold ``answer`` and its ``em``/``numeric`` values.
"""
from __future__ import annotations

import re
import string

from core.errors import UserError

from . import SCORERS
from .base import GenRequest, Metric, Scorer, ScoreResult

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def to_number(text: str) -> float | None:
    nums = _NUM.findall(text)
    if not nums:
        return None
    try:
        return float(nums[-1].replace(",", ""))
    except ValueError:
        return None


def score(prediction: str, answer: str) -> dict:
    """{'em': 0/1, 'numeric': 0/1 or None when the gold answer is not a number}."""
    first_line = prediction.strip().split("\n")[0] if prediction.strip() else ""
    em = float(normalize(prediction) == normalize(answer) or normalize(first_line) == normalize(answer))
    gold = to_number(answer) if _NUM.fullmatch(answer.strip().replace(" ", "")) else None
    numeric = None if gold is None else float(to_number(prediction) == gold)
    return {"em": em, "numeric": numeric}


def aggregate(records: list[dict]) -> dict:
    """Mean ``em`` and ``numeric`` over the records that carry them (each record: its metric values)."""
    out = {"n": len(records)}
    for key in ("em", "numeric"):
        vals = [r[key] for r in records if r.get(key) is not None]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


class ShortAnswerScorer(Scorer):
    """Base class of the short-answer kind: one generated answer per item, its record carrying ``answer``, ``em``
    and ``numeric`` (:func:`score`); subclasses aggregate."""

    kind = "exact"

    def prepare_item(self, task, item, where):
        if item.get("question") is None or item.get("answer") is None:
            raise UserError(f"{where}: {task.kind} tasks need fields 'question' and 'answer'")
        item["answer"] = str(item["answer"])

    def model_requests(self, task, item, step, answers, options):
        if step > 0:
            return []
        return [GenRequest(task.name, item["id"], 0, task.messages(item), task.settings(item, options.settings))]

    def generation_fields(self, task, item, request, answer, options):
        return {"answer": item["answer"], **score(answer.text, item["answer"])}


class ExactScorer(ShortAnswerScorer):
    name = "exact"
    primary = "exact_match"
    metrics = (Metric("exact_match", "exact match", "normalised exact match (SQuAD-style normalisation)", "%",
                      fraction=True),
               Metric("numeric", "numeric match", "last number in the answer equals the gold number", "%",
                      fraction=True, per_item=False))  # the item values are exact match's

    def score(self, task, items, generations, verdicts=(), config=None) -> ScoreResult:
        agg = aggregate([g.values for g in generations])
        metrics = {"exact_match": agg.get("em")}
        if "numeric" in agg:
            metrics["numeric"] = agg["numeric"]
        items_out = [{"example_id": g.example_id, "turn": int(g.turn), "category": g.category,
                      "value": float(g.values["em"])} for g in generations if g.values.get("em") is not None]
        return ScoreResult(metrics, items_out, {"n_items": len(generations), "n_failed": 0,
                                                "metric_shown": self.primary, "protocol": self.protocol()})

    def protocol(self, config=None) -> str:
        return "exact match after SQuAD-style normalisation"


SCORERS.add("exact", ExactScorer(), "generated short answer, normalised exact match")


def strict_match(prediction: str, answer: str) -> float:
    """1.0 when the reply's first non-empty line equals the answer after case-folding and collapsing whitespace
    (punctuation kept: BBH's dyck_languages answers are brackets), else 0.0."""
    lines = [ln for ln in prediction.strip().splitlines() if ln.strip()]
    first = " ".join(lines[0].casefold().split()) if lines else ""
    return float(first == " ".join(answer.casefold().split()))


class StrictExactScorer(ExactScorer):
    """Exact match without SQuAD's normalisation (which deletes punctuation, so any bracket answer would match any
    other): BIG-Bench Hard's targets, recomputed from each record's generated text."""

    name = "exact_strict"
    metrics = (Metric("exact_match", "exact match", "first line equals the answer (case-folded, whitespace collapsed, "
                      "punctuation kept)", "%", fraction=True),)

    def score(self, task, items, generations, verdicts=(), config=None) -> ScoreResult:
        values = [strict_match(g.text or "", str(g.answer)) for g in generations]
        items_out = [{"example_id": g.example_id, "turn": int(g.turn), "category": g.category, "value": em}
                     for g, em in zip(generations, values)]
        return ScoreResult({"exact_match": sum(values) / len(values) if values else None}, items_out,
                           {"n_items": len(generations), "n_failed": 0, "metric_shown": self.primary,
                            "protocol": self.protocol()})

    def protocol(self, config=None) -> str:
        return "exact match of the first line (case-folded, whitespace collapsed, punctuation kept)"


SCORERS.add("exact_strict", StrictExactScorer(), "generated short answer, exact match keeping punctuation (BBH)")

"""SQuAD's token-overlap F1 of a generated short answer (Rajpurkar et al. 2016; the official evaluate-v1.1 script):
answers normalised as for exact match (:func:`bench.scorers.exact.normalize`), then the harmonic mean of token
precision and recall over the bag of tokens; the best over the gold answers when an item lists several."""
from __future__ import annotations

from collections import Counter

from . import SCORERS
from .base import Metric, ScoreResult
from .exact import ShortAnswerScorer, normalize


def f1(prediction: str, answer: str) -> float:
    """Token F1 of one prediction against one gold answer (1.0 when both normalise to nothing)."""
    pred, gold = normalize(prediction).split(), normalize(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


class TokenF1Scorer(ShortAnswerScorer):
    name = "token_f1"
    primary = "f1"
    metrics = (Metric("f1", "token F1", "SQuAD token-overlap F1 after SQuAD-style normalisation", "%", fraction=True),)

    def score(self, task, items, generations, verdicts=(), config=None) -> ScoreResult:
        values = []
        for g in generations:
            golds = g.answer if isinstance(g.answer, list) else [g.answer]
            values.append({"example_id": g.example_id, "turn": int(g.turn), "category": g.category,
                           "value": max(f1(g.text, gold) for gold in golds)})
        mean = sum(v["value"] for v in values) / len(values) if values else None
        return ScoreResult({"f1": mean}, values, {"n_items": len(generations), "n_failed": 0,
                                                  "metric_shown": self.primary, "protocol": self.protocol()})

    def protocol(self, config=None) -> str:
        return "SQuAD token F1 (evaluate-v1.1) after SQuAD-style normalisation"


SCORERS.add("token_f1", TokenF1Scorer(), "generated short answer, SQuAD token-overlap F1")

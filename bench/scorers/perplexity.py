"""The perplexity kind: how much probability the model gives a target text after a context, from the
log-likelihood of the target alone (lm-evaluation-harness's ``loglikelihood`` requests and its perplexity metrics).

An item holds ``answer`` (the target text) and optionally ``question`` (the context the task's ``prompt`` renders;
none: the target is scored from the start of text). One log-likelihood request per item: the context, and the
target after the task's ``target_delimiter``. Over all items (lm-eval's ``weighted_perplexity`` and
``bits_per_byte`` aggregations, the target's UTF-8 bytes and whitespace-separated words counted without the
delimiter):

- ``bits_per_byte`` = -sum(loglik) / sum(bytes) / ln 2 (the headline; lower is better);
- ``byte_perplexity`` = exp(-sum(loglik) / sum(bytes)); ``word_perplexity`` = exp(-sum(loglik) / sum(words)).

Each item's value is its share of ``bits_per_byte``: -loglik / ln 2 / (the mean bytes per item), so that the mean of
the item values is the summary's number and a bootstrap over items gives its interval. Use it to see how an SFT
variant fits held-out reference answers, more smoothly than exact match does. Each generations record keeps the
``logliks`` and the target (``answer``).
"""
from __future__ import annotations

import math
import re

from core.errors import UserError

from . import SCORERS
from .base import LoglikRequest, Metric, Scorer, ScoreResult


def n_words(text: str) -> int:
    """Words as lm-eval's perplexity tasks count them (``re.split(r"\\s+", doc)``)."""
    return len(re.split(r"\s+", text))


class PerplexityScorer(Scorer):
    name = "perplexity"
    kind = "perplexity"
    primary = "bits_per_byte"
    metrics = (
        Metric("bits_per_byte", "bits/byte", "lm-eval bits_per_byte of the targets: -sum log-likelihood / sum UTF-8 "
               "bytes / ln 2", "bits", higher_is_better=False),
        Metric("byte_perplexity", "byte ppl", "lm-eval byte_perplexity: exp(-sum log-likelihood / sum bytes)",
               higher_is_better=False, per_item=False),
        Metric("word_perplexity", "word ppl", "lm-eval word_perplexity: exp(-sum log-likelihood / sum words)",
               higher_is_better=False, per_item=False),
    )

    def prepare_item(self, task, item, where):
        if not isinstance(item.get("answer"), str) or not item["answer"]:
            raise UserError(f"{where}: {task.kind} tasks need a non-empty text in field 'answer' (the target), got "
                            f"{item.get('answer')!r}")

    def model_requests(self, task, item, step, answers, options):
        if step > 0:
            return []
        if task.prompt is None and item.get("question") is None:
            context = ""  # the target from the start of text
        elif task.chat_template and options.chat_prompt is not None:
            context = options.chat_prompt(task.messages(item))
        else:
            context = task.render_prompt(item)
        return [LoglikRequest(item["id"], context, [(task.target_delimiter if context else "") + item["answer"]])]

    def generation_fields(self, task, item, request, answer, options):
        return {"answer": item["answer"]}

    def score(self, task, items, generations, verdicts=(), config=None) -> ScoreResult:
        rows = [(g, float(g.logliks[0]), len(g.answer.encode("utf-8")), n_words(g.answer)) for g in generations]
        info = {"n_items": len(rows), "n_failed": 0, "metric_shown": self.primary, "protocol": self.protocol()}
        if not rows:
            return ScoreResult({k.name: None for k in self.metrics}, [], info)
        ll = sum(r[1] for r in rows)
        n_bytes, words = sum(r[2] for r in rows), sum(r[3] for r in rows)
        metrics = {"bits_per_byte": -ll / n_bytes / math.log(2), "byte_perplexity": math.exp(-ll / n_bytes),
                   "word_perplexity": math.exp(-ll / words)}
        per_item_bytes = n_bytes / len(rows)
        values = [{"example_id": g.example_id, "turn": int(g.turn), "category": g.category,
                   "value": -lp / math.log(2) / per_item_bytes} for g, lp, _, _ in rows]
        return ScoreResult(metrics, values, info)

    def protocol(self, config=None) -> str:
        return "lm-evaluation-harness perplexity of the target (bits_per_byte, byte_perplexity, word_perplexity)"


SCORERS.add("perplexity", PerplexityScorer(), "log-likelihood of a target text: lm-eval's bits per byte, perplexities")

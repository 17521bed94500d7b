"""Multiple choice as lm-evaluation-harness scores it (``output_type: multiple_choice``), or generate-then-parse.

Per document, from each option's summed log-likelihood (``lm_eval/api/task.py`` ``process_results``):
- ``acc``: argmax of the log-likelihoods equals the gold index;
- ``acc_norm``: argmax of log-likelihood / the option's length **in characters**, the option being the choice text
  without the target delimiter (``" yes"`` -> ``"yes"``, 3);
- ``acc_bytes``: the same over UTF-8 bytes.
Ties go to the first option (numpy's argmax). Headline: ``acc`` (what lm-eval reports for PubMedQA, MedQA, MedMCQA,
MMLU). Each generations record keeps ``logliks``, ``pred``, ``pred_norm`` and ``pred_bytes``.

An item holds ``question``, ``choices`` (2+ strings), ``answer`` (the gold option's index) and optionally the data's
own option ``labels``. With ``mcq_mode: generate`` (or ``--mcq-mode generate``) the model is asked the prompt as a
chat message instead and the option letter is parsed from its answer.
"""
from __future__ import annotations

import re
from typing import Sequence

from core.errors import UserError

from bench.task_fields import answer_index, parse_choices

from . import SCORERS
from .base import GenRequest, LoglikRequest, Metric, Scorer, ScoreResult


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # first index on ties, as numpy


def option_text(continuation: str, delimiter: str = " ") -> str:
    """The choice lm-eval normalises by: the continuation without its leading target delimiter."""
    return continuation[len(delimiter):] if delimiter and continuation.startswith(delimiter) else continuation


def score_logliks(logliks: list[float], continuations: list[str], answer: int, delimiter: str = " ") -> dict:
    """Predictions and correctness of one document from its option log-likelihoods (lm-eval's rules)."""
    options = [option_text(c, delimiter) for c in continuations]
    pred = argmax(logliks)
    pred_norm = argmax([ll / max(1, len(o)) for ll, o in zip(logliks, options)])
    pred_bytes = argmax([ll / max(1, len(o.encode("utf-8"))) for ll, o in zip(logliks, options)])
    return {"pred": pred, "pred_norm": pred_norm, "pred_bytes": pred_bytes, "acc": float(pred == answer),
            "acc_norm": float(pred_norm == answer), "acc_bytes": float(pred_bytes == answer)}


def parse_letter(text: str, n_choices: int, labels: Sequence[str | None] = "ABCDEFGHIJ") -> int | None:
    """The option index a generated answer names ("B", "(B) ...", "Answer: B.", "the answer is (B)"), or None.

    ``labels``: one per option (a string of single letters, or a list: "AA", ... past Z); options without a label
    cannot be named. Tried in order: an explicit "answer is X" / "Answer: X"; a leading label; a label followed by
    "." or ")"; any standalone label in range (last resort: "A" as an article can fool it).
    """
    valid = [lab for lab in list(labels)[:n_choices] if lab]
    if not valid:
        return None
    alt = "|".join(re.escape(lab) for lab in sorted(valid, key=len, reverse=True))
    letter = rf"\(?({alt})\)?(?![A-Za-z0-9])"
    for pattern in (rf"(?i:answer\s*(?:is|:)?)\s*{letter}", rf"^\s*\(?({alt})(?:[.):]|\s*$)",
                    rf"(?<![A-Za-z])\(?({alt})[.)]", rf"(?<![A-Za-z]){letter}"):
        m = re.search(pattern, text)
        if m:
            return list(labels).index(m.group(1))
    return None


METRICS = ("acc", "acc_norm", "acc_bytes")


def aggregate(records: list[dict]) -> dict:
    """Mean of each per-document metric over the records that carry it (each record: its metric values)."""
    out = {"n": len(records)}
    for key in METRICS:
        vals = [r[key] for r in records if r.get(key) is not None]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


class MCQScorer(Scorer):
    name = "mcq"
    kind = "mcq"
    contamination_fields = ("question", "choices")
    version = "2"  # 2: acc_norm over characters without the delimiter (lm-eval), acc_bytes
    primary = "acc"
    metrics = (  # the item values are the primary's (each line also holds every metric's value, for `bench view`)
        Metric("acc", "acc", "lm-eval acc: argmax of option log-likelihood", "%", fraction=True),
        Metric("acc_norm", "acc_norm", "lm-eval acc_norm: argmax of log-likelihood / option length in characters "
               "(without the target delimiter)", "%", fraction=True, per_item=False),
        Metric("acc_bytes", "acc_bytes", "lm-eval acc_bytes: argmax of log-likelihood / option length in UTF-8 "
               "bytes", "%", fraction=True, per_item=False),
    )

    def prepare_item(self, task, item, where):
        choices = parse_choices(item.get("choices"), where)
        item["choices"] = choices
        if "labels" in item and item["labels"] is not None and (
                not isinstance(item["labels"], list) or len(item["labels"]) != len(choices)):
            raise UserError(f"{where}: field 'labels' must be null or one label per choice ({len(choices)}), "
                            f"got {item['labels']!r}")
        item["answer"] = answer_index(item.get("answer"), choices, task.item_labels(item), where)

    @staticmethod
    def mode(task, options) -> str:
        """loglik (lm-eval's protocol) or generate: ``--mcq-mode``/the run's setting, else the task's ``mcq_mode``."""
        return options.settings.get("mcq_mode", task.mcq_mode)

    def model_requests(self, task, item, step, answers, options):
        if step > 0:
            return []
        if self.mode(task, options) == "generate":
            return [GenRequest(task.name, item["id"], 0, task.messages(item), task.settings(item, options.settings))]
        if not task.chat_template:
            context = task.render_prompt(item)
        elif options.chat_prompt is not None:
            context = options.chat_prompt(task.messages(item))
        else:  # only checking that the item renders: no backend, no chat template to apply
            context = "".join(m["content"] for m in task.messages(item))
        return [LoglikRequest(item["id"], context, task.continuations(item))]

    def generation_fields(self, task, item, request, answer, options):
        if isinstance(request, LoglikRequest):
            return {"scoring": "loglik", "answer": item["answer"],
                    **score_logliks(answer, request.continuations, item["answer"], task.target_delimiter)}
        pred = parse_letter(answer.text, len(item["choices"]), task.item_labels(item))
        return {"scoring": "generate", "answer": item["answer"], "pred": pred, "acc": float(pred == item["answer"])}

    def score(self, task, items, generations, verdicts=(), config=None) -> ScoreResult:
        delimiter = getattr(task, "target_delimiter", " ")
        rows = []  # (record, its metric values)
        for g in generations:
            values = g.values
            if g.logliks is not None:  # rescored from the raw log-likelihoods: old files get today's rules
                values = {**values, **score_logliks(g.logliks, g.continuations, int(g.answer), delimiter)}
            rows.append((g, values))
        agg = aggregate([v for _, v in rows])
        metrics = {k: agg[k] for k in METRICS if k in agg}
        items_out = [{"example_id": g.example_id, "turn": int(g.turn), "category": g.category,
                      "value": float(v[self.primary]), **{k: float(v[k]) for k in METRICS if v.get(k) is not None}}
                     for g, v in rows if v.get(self.primary) is not None]
        mode = "loglik" if rows and rows[0][0].logliks is not None else "generate"
        return ScoreResult(metrics, items_out, {"n_items": len(rows), "n_failed": 0, "metric_shown": self.primary,
                                                "protocol": self.protocol() if mode == "loglik" else
                                                "generated letter parsed (not lm-eval's log-likelihood protocol)"})

    def protocol(self, config=None) -> str:
        return "lm-evaluation-harness multiple_choice (acc, acc_norm, acc_bytes)"


SCORERS.add("mcq", MCQScorer(), "multiple choice by option log-likelihood, lm-eval's acc / acc_norm / acc_bytes")

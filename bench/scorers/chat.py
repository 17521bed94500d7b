"""The chat kind: conversations the model answers turn by turn, rated by a judge (MT-Bench, AlpacaEval, toy_open).

An item holds ``turns`` (the user messages) and, where known, ``reference`` (one reference answer per turn). Turn 2
is asked with the model's *own* turn-1 answer in the conversation (MT-Bench's protocol), so each turn is one
request step. The judged scorers (:mod:`.mt_bench`, :mod:`.mt_bench_pair`, :mod:`.alpaca_eval`) subclass
:class:`ChatScorer`.
"""
from __future__ import annotations

from core.errors import UserError

from .base import GenRequest, Scorer


class ChatScorer(Scorer):
    """Base class of the judged chat scorers: the chat kind's items and requests; judging is the subclass's."""

    kind = "chat"
    judged = True
    turn_base = 1  # FastChat numbers judged turns from 1
    contamination_fields = ("turns", "reference")

    def prepare_item(self, task, item, where):
        turns = item.get("turns")
        if turns is None and item.get("question") is not None:
            turns = [item["question"]]
        if isinstance(turns, str):
            turns = [turns]
        if not turns or not all(isinstance(t, str) for t in turns):
            raise UserError(f"{where}: field 'turns' must be a non-empty list of strings, got {turns!r}")
        item["turns"] = list(turns)
        ref = item.get("reference")
        if isinstance(ref, str):
            ref = [ref]
        if task.reference_categories is not None and item["category"] not in task.reference_categories:
            ref = None
        item["reference"] = list(ref) if ref else None

    def model_requests(self, task, item, step, answers, options):
        if step >= len(item["turns"]):
            return []
        return [GenRequest(task.name, item["id"], step, task.messages(item, step, [a.text for a in answers]),
                           task.settings(item, options.settings))]

    def generation_fields(self, task, item, request, answer, options):
        refs = item.get("reference")  # this turn's reference answer (MT-Bench's GPT-4 answer, AlpacaEval's baseline)
        if refs and request.turn < len(refs) and refs[request.turn] is not None:
            return {"reference": refs[request.turn]}
        return {}

    def n_generations(self, task, items, n_items):
        return sum(len(it.get("turns") or [1]) for it in items) if items is not None else n_items * task.n_turns

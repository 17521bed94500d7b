"""MT-Bench single-answer grading exactly as FastChat ``llm_judge`` (``common.py``, ``gen_judgment.py``,
``show_result.py``).

Each of the 80 questions has 2 turns; the judge rates each turn 1-10. Turn 1 uses ``single-v1`` (``single-math-v1``
with the GPT-4 reference answer when the question's category is math, reasoning or coding - FastChat's
``NEED_REF_CATS``); turn 2 uses ``single-v1-multi-turn`` (``single-math-v1-multi-turn``), where the judge sees both
turns, including the model's own turn-1 answer. Prompts are FastChat's ``judge_prompts.jsonl`` (see the judge config
``mt_bench_single``); without that file our own wording is used and every result says it is not MT-Bench.

Rating: FastChat's parser - ``[[n]]``, else ``[n]``; no match is a failure (FastChat's score -1).
Aggregation (:func:`aggregate`): repeated judgments of one (question, turn) (``--repeats``, our addition) are
reduced to their median over the successful repeats; failures are dropped, as ``show_result.py`` drops score -1.
``turn_1`` and ``turn_2`` are the means over questions, ``overall`` the mean over all judged (question, turn) pairs
(:func:`show_result`), and the same three numbers are given per category.
"""
from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from bench.judge import JudgeConfig, JudgeRequest
from bench.rundir.generations import GenerationRecord
from bench.rundir.judgments import Verdict

from . import SCORERS
from .base import Metric, ScoreResult, repeat_values
from .chat import ChatScorer

REF_CATEGORIES = ("math", "reasoning", "coding")
TASK = "mt_bench"
# Our form names -> FastChat's judge_prompts.jsonl names.
FASTCHAT_FORMS = {"single": "single-v1", "single_ref": "single-math-v1", "multi": "single-v1-multi-turn",
                  "multi_ref": "single-math-v1-multi-turn"}


def answers_from_generations(records: Iterable[GenerationRecord]) -> dict[str, list[str]]:
    """Generations records -> {example_id: [turn-1 text, turn-2 text]}."""
    by_id: dict[str, list[tuple[int, str]]] = {}
    for r in records:
        by_id.setdefault(r.example_id, []).append((int(r.turn), r.text))
    return {k: [t for _, t in sorted(v)] for k, v in by_id.items()}


def build_requests(config: JudgeConfig, questions: list[dict], answers: dict[str, list[str]],
                   task: str = TASK, ref_categories: Iterable[str] | None = REF_CATEGORIES) -> list[JudgeRequest]:
    """One judge request per (question, turn) that has an answer.

    ``questions``: task items (``bench.tasks``: ``id``, ``category``, ``turns`` [q1, q2], optional ``reference``
    [r1, r2]; ``example_id``/``question_id`` are accepted for ``id``). ``answers``: {id: [a1, a2]} from the model
    under test. ``ref_categories=None`` uses a reference whenever one is present. Judgments number turns 1, 2.
    """
    ref_categories = None if ref_categories is None else set(ref_categories)
    out = []
    for q in questions:
        qid = str(q.get("id", q.get("example_id", q.get("question_id"))))
        if qid not in answers:
            continue
        turns, ans = q["turns"], answers[qid]
        refs = q.get("reference") or []
        use_ref = bool(refs) and (ref_categories is None or q.get("category") in ref_categories)

        def ref(i: int) -> str | None:
            return refs[i] if use_ref and i < len(refs) else None

        meta = {"category": q.get("category")}
        fields = {"question": turns[0], "answer": ans[0], "reference": ref(0), "ref_answer_1": ref(0)}
        out.append(config.request("single_ref" if ref(0) else "single", task=task, example_id=qid, turn=1,
                                  fields=fields, meta=meta))
        if len(turns) > 1 and len(ans) > 1:
            fields = {"question_1": turns[0], "answer_1": ans[0], "question_2": turns[1], "answer_2": ans[1],
                      "ref_answer_1": ref(0), "ref_answer_2": ref(1),
                      # what a non-LLM judge rates: the turn-2 answer against the turn-2 reference
                      "question": turns[1], "answer": ans[1], "reference": ref(1)}
            form = "multi_ref" if ref(0) and ref(1) else "multi"
            out.append(config.request(form, task=task, example_id=qid, turn=2, fields=fields, meta=meta))
    return out


def show_result(rows: pd.DataFrame) -> dict:
    """FastChat ``show_result.py`` on judgment rows (columns ``turn``, ``score``; -1 or NaN = failed): failures
    dropped, then the mean per turn and over all rows."""
    ok = rows[pd.to_numeric(rows["score"], errors="coerce").notna() & (rows["score"] != -1)]
    score = pd.to_numeric(ok["score"])
    turn = score.groupby(ok["turn"]).mean()
    return {"turn_1": float(turn.get(1, math.nan)), "turn_2": float(turn.get(2, math.nan)),
            "overall": float(score.mean()) if len(score) else math.nan, "n": int(len(score))}


def aggregate(verdicts: Iterable[Verdict], categories: dict[str, str] | None = None) -> dict:
    """Verdicts -> per turn, per category and overall means (see the module docstring).

    ``categories`` ({example_id: category}) overrides each verdict's ``meta["category"]``.
    """
    df = pd.DataFrame([
        {"example_id": v.example_id, "turn": int(v.turn), "repeat": v.repeat,
         "score": None if v.failed else v.score, "judge": v.judge,
         "category": (categories or {}).get(v.example_id, (v.meta or {}).get("category"))}
        for v in verdicts])
    if df.empty:
        return {"turn_1": math.nan, "turn_2": math.nan, "overall": math.nan, "per_category": {}, "n_judged": 0,
                "n_failed": 0, "n_failed_judgments": 0, "n_repeats": 0, "judge": None}
    judges = sorted(df["judge"].dropna().unique())
    if len(judges) > 1:
        raise ValueError(f"records from several judges ({', '.join(judges)}): aggregate them separately")
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    per_item = (df.groupby(["example_id", "turn"], as_index=False)
                .agg(score=("score", "median"), category=("category", "first")))
    judged = per_item.dropna(subset=["score"])
    result = show_result(judged)
    result.pop("n")
    result["per_category"] = {str(c): show_result(g) for c, g in judged.groupby("category", dropna=True)}
    result.update(n_judged=int(len(judged)), n_failed=int(per_item["score"].isna().sum()),
                  n_failed_judgments=int(df["score"].isna().sum()), n_repeats=int(df["repeat"].max()) + 1,
                  judge=judges[0] if judges else None)
    return result


class MTBenchScorer(ChatScorer):
    """FastChat single-answer grading; ``ref_categories=None`` uses a reference wherever an item has one."""

    judged = True
    judge_config = "mt_bench_single"
    primary = "overall"
    metrics = (
        Metric("turn1", "turn 1", "MT-Bench first-turn score (FastChat show_result)", "1-10", items="turn"),
        Metric("turn2", "turn 2", "MT-Bench second-turn score (FastChat show_result)", "1-10", items="turn"),
        Metric("overall", "overall", "MT-Bench score: mean over both turns (FastChat show_result)", "1-10"),
    )

    def __init__(self, name: str = "mt_bench", ref_categories: Iterable[str] | None = REF_CATEGORIES,
                 version: str = "2", benchmark: bool = True):
        self.name, self.version = name, version  # 2: FastChat's prompts and parser (no range check)
        self.ref_categories = None if ref_categories is None else tuple(ref_categories)
        self.benchmark = benchmark  # False: the forms rate another task's answers; no MT-Bench claim to check
        self.pairwise_scorer = "mt_bench_pair" if benchmark else None  # judge.mode: pairwise

    def protocol(self, config=None) -> str:
        if self.benchmark or config is None:
            return super().protocol(config)
        return (f"1-10 rating against reference answers with {config.name}'s single-answer forms "
                f"(prompts: {', '.join(dict.fromkeys(f.source for f in config.forms.values()))}; not a benchmark)")

    def select_items(self, task, items, judge_kind):
        """Under the reference rubric only items with a reference answer can be rated."""
        if judge_kind != "reference":
            return items
        cats = task.reference_categories if self.ref_categories else None
        return [it for it in items if it.get("reference") and (cats is None or it.get("category") in cats)]

    def _refs(self, task):
        return task.reference_categories if self.ref_categories and task.reference_categories else self.ref_categories

    def requests(self, task, items, generations, config, judge_kind):
        return build_requests(config, items, answers_from_generations(generations), task=task.name,
                              ref_categories=self._refs(task))

    def n_judge_calls(self, task, items, n_items, repeats):
        turns = sum(len(it.get("turns") or [1]) for it in items) if items is not None else task.n_turns * n_items
        return turns * repeats

    def score(self, task, items, generations, verdicts=(), config=None) -> ScoreResult:
        categories = {str(it["id"]): it.get("category") for it in items}
        res = aggregate(verdicts, categories)
        metrics = {"turn1": res["turn_1"], "turn2": res["turn_2"], "overall": res["overall"]}
        metrics.update({f"category/{c}": v["overall"] for c, v in res["per_category"].items()})
        values = []  # the median of an item's repeats, and the repeats themselves (the bootstrap resamples them)
        for (eid, turn), reps in sorted(repeat_values(verdicts).items()):
            values.append({"example_id": eid, "turn": turn, "category": categories.get(eid),
                           "value": float(pd.Series(reps).median()), **({"repeats": reps} if len(reps) > 1 else {})})
        conformant = None if config is None or not self.benchmark else config.conformant
        return ScoreResult(metrics, values, {"n_items": res["n_judged"] + res["n_failed"], "n_failed": res["n_failed"],
                                             "protocol": self.protocol(config), "conformant": conformant})


SCORERS.add("mt_bench", MTBenchScorer(), "MT-Bench: FastChat single-answer grading, 1-10 per turn")
SCORERS.add("reference", MTBenchScorer("reference", ref_categories=None, benchmark=False),
            "open-ended questions with reference answers, MT-Bench's single-answer forms")

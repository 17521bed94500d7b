"""MT-Bench single-answer grading: build the judge requests for each turn, aggregate the verdicts.

Follows FastChat ``llm_judge``: each of the 80 questions has 2 turns; the judge rates each turn 1-10. Turn 1 uses
the ``single`` form (``single_ref`` when the question has a reference answer and its category is math, reasoning
or coding); turn 2 uses the ``multi`` form (``multi_ref``), where the judge sees both turns, including the model's
own turn-1 answer, and rates the turn-2 answer.

Aggregation (:func:`aggregate`): repeated judgments of one (question, turn) are reduced to their median over the
successful repeats; a (question, turn) with no successful repeat is *failed*: excluded from every mean and counted
in ``n_failed``. ``turn_1`` and ``turn_2`` are the means over questions (the paper's "single" and "multi"
columns), ``overall`` is the mean over all judged (question, turn) pairs (FastChat's overall, e.g. 698/160), and
the same three numbers are given per category.
"""
from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from bench.judge import JudgeConfig, JudgeRequest

REF_CATEGORIES = ("math", "reasoning", "coding")
TASK = "mt_bench"


def answers_from_generations(records: Iterable[dict]) -> dict[str, list[str]]:
    """Generation records (``example_id``, ``turn``, ``text``) -> {example_id: [turn-1 text, turn-2 text]}."""
    by_id: dict[str, list[tuple[int, str]]] = {}
    for r in records:
        by_id.setdefault(str(r["example_id"]), []).append((int(r["turn"]), r["text"]))
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


def aggregate(records: Iterable[dict], categories: dict[str, str] | None = None) -> dict:
    """Judgment records -> per turn, per category and overall means (see the module docstring).

    ``categories`` ({example_id: category}) overrides ``record["meta"]["category"]``.
    """
    df = pd.DataFrame([
        {"example_id": str(r["example_id"]), "turn": int(r["turn"]), "repeat": r.get("repeat", 0),
         "score": None if r.get("failed") else r.get("score"), "judge": r.get("judge"),
         "category": (categories or {}).get(str(r["example_id"]), (r.get("meta") or {}).get("category"))}
        for r in records])
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

    def means(frame: pd.DataFrame) -> dict:
        turn = frame.groupby("turn")["score"].mean()
        return {"turn_1": float(turn.get(1, math.nan)), "turn_2": float(turn.get(2, math.nan)),
                "overall": float(frame["score"].mean()) if len(frame) else math.nan, "n": int(len(frame))}

    result = means(judged)
    result.pop("n")
    result["per_category"] = {str(c): means(g) for c, g in judged.groupby("category", dropna=True)}
    result.update(n_judged=int(len(judged)), n_failed=int(per_item["score"].isna().sum()),
                  n_failed_judgments=int(df["score"].isna().sum()), n_repeats=int(df["repeat"].max()) + 1,
                  judge=judges[0] if judges else None)
    return result
VERSION = "1"  # bump when the scoring changes: the score stage key includes it

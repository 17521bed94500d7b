"""Calibrating a judge against MT-Bench's expert votes (``bench judge-calibrate``).

The judge plays FastChat's pairwise matches (``pair-v2`` / ``pair-math-v1`` and their multi-turn forms, both games)
on every (question, pair of models, turn) that experts voted on and whose two answers the reference data has (five
of the six human-judged models: 10 of the 15 pairs). Its vote per match follows FastChat's
``load_pairwise_model_judgments``: the common winner when both games agree, else ``tie (inconsistent)``; a match with
a failed game has no vote. Agreement with the experts is then computed as ``compute_agreement.py`` does
(:mod:`bench.agreement`), next to GPT-4's own pairwise votes on the same matches.

Output folder (``--out``, default ``runs/judge-calibrate/<model>``): ``cache.sqlite`` and ``judge_log.jsonl`` (every
verdict cached, so a re-run asks only what is missing), ``judgments.jsonl`` (every verdict), ``votes.jsonl`` (the
judge's votes in the dataset's format) and ``calibration.json`` (the agreement table with its provenance).
"""
from __future__ import annotations

import json
from pathlib import Path

from . import agreement as ag
from .scorers.mt_bench_pair import MTBenchPairScorer, build_requests
from .scorers.mt_bench_pair import matches as match_rows

TASK = "judge-calibrate"


def load(peer_dir: str | Path | None) -> dict:
    """Votes, questions, references, answers and the judge config, from ``peer_dir`` or the pinned downloads."""
    def rows(rel: str) -> list[dict]:
        path = ag.peer_file(rel, peer_dir)
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    questions = {str(q["question_id"]): q for q in rows("fastchat/mt_bench/question.jsonl")}
    refs = {str(r["question_id"]): r["choices"][0]["turns"]
            for r in rows("fastchat/mt_bench/reference_answer/gpt-4.jsonl")}
    answers = {m: {str(a["question_id"]): a["choices"][0]["turns"]
                   for a in rows(f"fastchat/mt_bench/model_answer/{m}.jsonl")} for m in ag.MODELS}
    config = MTBenchPairScorer().load_config(prompts=str(ag.peer_file("fastchat/judge_prompts.jsonl", peer_dir)))
    return {"human": ag.read_votes(ag.peer_file("fastchat/human/mt_bench_human.csv", peer_dir)),
            "gpt4": ag.read_votes(ag.peer_file("fastchat/human/mt_bench_gpt4_pair.csv", peer_dir)),
            "questions": questions, "refs": refs, "answers": answers, "config": config}


def matches(data: dict, limit: int | None = None) -> list[tuple[int, str, str, int]]:
    """(question, model_a, model_b, turn), models sorted: the matches experts voted on among the answered models
    (``limit``: the first N questions of those)."""
    keys = {(v["question_id"], *sorted((v["model_a"], v["model_b"])), v["turn"]) for v in data["human"]
            if ag.judge_name(v["judge"]) == ag.HUMAN and v["model_a"] in data["answers"]
            and v["model_b"] in data["answers"] and str(v["question_id"]) in data["questions"]}
    qids = sorted({k[0] for k in keys})[:limit] if limit else None
    return sorted(k for k in keys if qids is None or k[0] in qids)


def requests(data: dict, keys: list[tuple]) -> list:
    """Both games of every match, FastChat's forms (a reference for math, reasoning and coding)."""
    out = []
    by_pair: dict[tuple, list[int]] = {}
    for qid, a, b, turn in keys:
        by_pair.setdefault((qid, a, b), []).append(turn)
    for (qid, a, b), turns in by_pair.items():
        q = data["questions"][str(qid)]
        item = {"id": str(qid), "category": q["category"], "turns": q["turns"], "reference": data["refs"].get(str(qid))}
        out += build_requests(data["config"], [item], data["answers"][a], data["answers"][b], model_1=a, model_2=b,
                              task=TASK, turns=sorted(turns))
    return out


def votes(records: list, judge: str) -> tuple[list[dict], int]:
    """The judge's votes (dataset format, ``judge: [judge, "pair"]``) from its verdicts (:class:`bench.rundir.Verdict`)
    and the number of matches without one."""
    out, failed = [], 0
    for row in match_rows(records).itertuples(index=False):
        if "error" in (row.g1_winner, row.g2_winner):
            failed += 1
            continue
        winner = row.g1_winner if row.g1_winner == row.g2_winner else "tie (inconsistent)"
        out.append({"question_id": int(row.question_id), "model_a": row.model_1, "model_b": row.model_2,
                    "winner": {"model_1": "model_a", "model_2": "model_b"}.get(winner, winner),
                    "judge": [judge, "pair"], "turn": int(row.turn)})
    return out, failed


def table(data: dict, judge: str, judge_votes: list[dict]) -> dict:
    """``{judge: ..., "gpt-4": ...}``: each one's agreement with the experts on the matches ``judge`` voted on."""
    voted = {(v["question_id"], *sorted((v["model_a"], v["model_b"])), v["turn"]) for v in judge_votes}
    gpt4 = [v for v in data["gpt4"] if (v["question_id"], *sorted((v["model_a"], v["model_b"])), v["turn"]) in voted]
    mine = [{**v, "judge": [ag.CALIBRATED, "pair"]} for v in judge_votes]  # even for a judge called "gpt-4"
    return {judge: ag.agreement_table(data["human"] + mine, ag.CALIBRATED),
            "gpt-4": ag.agreement_table(data["human"] + gpt4, ag.GPT4)}

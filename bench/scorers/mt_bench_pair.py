"""MT-Bench pairwise comparison exactly as FastChat ``llm_judge`` (``gen_judgment.py`` pairwise modes, ``common.py``
``run_judge_pair`` / ``play_a_match_pair``, ``show_result.py`` ``display_result_pairwise``).

A *match* is one question and turn of two models, ``model_1`` and ``model_2`` (``pairwise-baseline``: model_1 is the
model under test, model_2 the baseline; ``pairwise-all``: every pair). It is played twice: game 1 shows model_1 as
assistant A, game 2 shows model_2 as A. Turn 1 uses ``pair-v2`` (``pair-math-v1`` with the GPT-4 reference answer for
math, reasoning and coding), turn 2 ``pair-v2-multi-turn`` (``pair-math-v1-multi-turn``), where the judge sees both
turns of both models. A verdict is ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie); anything else is an error.

Tally (:func:`show_result_pairwise`): a match with an error in either game is dropped; a tie in game 1, or games
whose winners differ (the verdict followed the position, not the answer), is a tie for both models; otherwise the
common winner wins. ``win_rate`` = wins / matches, ``loss_rate`` = losses / matches, ``win_rate_adjusted`` =
(wins + ties / 2) / matches. Judge repeats (our addition) play every match again; each repeat is a match of the tally.

In ``bench run`` with ``judge.mode: pairwise`` each SFTMix-family variant is model_1 against NTP as model_2 (FastChat's
pairwise-baseline with NTP as the baseline); NTP's own row is the comparison's reference point (50 % adjusted win rate
by definition, no judge call), so each variant's delta against it is its adjusted win rate minus 50 %.
"""
from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from core.errors import UserError

from bench import reliability as rel
from bench.judge import JudgeConfig, JudgeRequest
from bench.rundir.judgments import Verdict

from . import SCORERS
from .base import Metric, ScoreResult
from .chat import ChatScorer
from .mt_bench import REF_CATEGORIES, answers_from_generations

# Our form names -> FastChat's judge_prompts.jsonl names.
FASTCHAT_FORMS = {"pair": "pair-v2", "pair_ref": "pair-math-v1", "pair_multi": "pair-v2-multi-turn",
                  "pair_multi_ref": "pair-math-v1-multi-turn"}
# A game's verdict (shown order: 1 = A, 2 = B, 1.5 = tie) -> the winner, as FastChat's g1_map / g2_map write it.
_GAME_MAP = {1: {1.0: "model_1", 2.0: "model_2", 1.5: "tie"}, 2: {1.0: "model_2", 2.0: "model_1", 1.5: "tie"}}
OUTCOME = {"model_1": 1.0, "tie": 0.5, "model_2": 0.0}  # model_1's value of a match


def build_requests(config: JudgeConfig, questions: list[dict], answers_1: dict[str, list[str]],
                   answers_2: dict[str, list[str]], model_1: str = "model_1", model_2: str = "model_2",
                   task: str = "mt_bench", ref_categories: Iterable[str] | None = REF_CATEGORIES,
                   turns: Iterable[int] = (1, 2)) -> list[JudgeRequest]:
    """Both games of every (question, turn) both models answered: game 1 with model_1 as A, game 2 swapped.

    ``questions``: task items (``id``, ``category``, ``turns``, optional ``reference``); answers: {id: [a1, a2]}.
    FastChat passes both reference turns whenever a question has a reference; its forms use what they name."""
    ref_categories = None if ref_categories is None else set(ref_categories)
    out = []
    for q in questions:
        qid = str(q.get("id", q.get("example_id", q.get("question_id"))))
        if qid not in answers_1 or qid not in answers_2:
            continue
        refs = q.get("reference") or []
        use_ref = bool(refs) and (ref_categories is None or q.get("category") in ref_categories)
        ref = {f"ref_answer_{i + 1}": r for i, r in enumerate(refs[:2])} if use_ref else {}
        for turn in turns:
            if turn > len(q["turns"]) or turn > min(len(answers_1[qid]), len(answers_2[qid])):
                continue
            form = ("pair" if turn == 1 else "pair_multi") + ("_ref" if use_ref else "")
            for game, (a, b) in ((1, (answers_1[qid], answers_2[qid])), (2, (answers_2[qid], answers_1[qid]))):
                if turn == 1:
                    fields = {"question": q["turns"][0], "answer_a": a[0], "answer_b": b[0], **ref}
                else:
                    fields = {"question_1": q["turns"][0], "question_2": q["turns"][1], "answer_a_1": a[0],
                              "answer_b_1": b[0], "answer_a_2": a[1], "answer_b_2": b[1], **ref}
                meta = {"category": q.get("category"), "game": game, "model_1": model_1, "model_2": model_2}
                out.append(config.request(form, task=task, example_id=qid, turn=turn, fields=fields, meta=meta))
    return out


def matches(records: Iterable[Verdict]) -> pd.DataFrame:
    """Verdicts -> FastChat's pairwise rows, one per match (question, turn, repeat, model_1, model_2):
    ``question_id``, ``turn``,
    ``repeat``, ``model_1``, ``model_2``, ``g1_winner``, ``g2_winner`` ("model_1" / "model_2" / "tie" / "error"),
    ``category``, ``g1_shown`` / ``g2_shown`` (the games' shown-order verdicts, NaN for errors)."""
    rows: dict[tuple, dict] = {}
    for r in records:
        meta = r.meta or {}
        game = int(meta.get("game", 1))
        m1, m2 = meta.get("model_1", "model_1"), meta.get("model_2", "model_2")
        key = (r.example_id, int(r.turn), int(r.repeat), m1, m2)
        row = rows.setdefault(key, {"question_id": key[0], "turn": key[1], "repeat": key[2], "model_1": m1,
                                    "model_2": m2, "category": meta.get("category"), "g1_winner": "error",
                                    "g2_winner": "error", "g1_shown": math.nan, "g2_shown": math.nan})
        ok = not r.failed and r.score is not None
        row[f"g{game}_winner"] = _GAME_MAP[game].get(float(r.score), "error") if ok else "error"
        row[f"g{game}_shown"] = float(r.score) if ok else math.nan
    columns = ["question_id", "turn", "repeat", "model_1", "model_2", "category", "g1_winner", "g2_winner",
               "g1_shown", "g2_shown"]
    return pd.DataFrame(list(rows.values()), columns=columns)


def match_winner(g1: str, g2: str) -> str:
    """FastChat's rule: a tie in game 1 or games that disagree are a tie; else game 1's winner."""
    return "tie" if g1 == "tie" or g1 != g2 else g1


def show_result_pairwise(rows: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """FastChat ``show_result.py --mode pairwise-all`` (``baseline=None``) or ``pairwise-baseline``: per model
    ``win``, ``loss``, ``tie``, ``win_rate``, ``loss_rate``, ``win_rate_adjusted`` from rows with ``model_1``,
    ``model_2``, ``g1_winner``, ``g2_winner`` (matches with an error in either game dropped)."""
    rows = rows[(rows["g1_winner"] != "error") & (rows["g2_winner"] != "error")]
    tally = []
    for row in rows.itertuples(index=False):
        if baseline is not None and baseline not in (row.model_1, row.model_2):
            continue
        winner = match_winner(row.g1_winner, row.g2_winner)
        if winner == "tie":
            tally += [{"model": row.model_1, "win": 0, "loss": 0, "tie": 1},
                      {"model": row.model_2, "win": 0, "loss": 0, "tie": 1}]
        else:
            w, lose = (row.model_1, row.model_2) if winner == "model_1" else (row.model_2, row.model_1)
            tally += [{"model": w, "win": 1, "loss": 0, "tie": 0}, {"model": lose, "win": 0, "loss": 1, "tie": 0}]
    df = pd.DataFrame(tally, columns=["model", "win", "loss", "tie"]).groupby("model").sum()
    if baseline is not None:
        df = df[df.index != baseline]
    n = df["win"] + df["loss"] + df["tie"]
    df["win_rate"] = df["win"] / n
    df["loss_rate"] = df["loss"] / n
    df["win_rate_adjusted"] = (df["win"] + 0.5 * df["tie"]) / n
    return df


def position_stats(rows: pd.DataFrame) -> dict:
    """Position bias over matches whose two games both parsed: ``inconsistent`` (the games' winners differ, what
    FastChat turns into a tie), ``flips`` (both games decisive and the same *position* won both: the verdict
    followed the order), and P(first position wins) over decisive game verdicts."""
    both = rows[(rows["g1_winner"] != "error") & (rows["g2_winner"] != "error")]
    decisive_pairs = both[(both["g1_winner"] != "tie") & (both["g2_winner"] != "tie")]
    shown = pd.concat([rows["g1_shown"], rows["g2_shown"]]).dropna()
    decisive = shown[shown != 1.5]
    return {"n_matches": int(len(both)), "inconsistent": int((both["g1_winner"] != both["g2_winner"]).sum()),
            "n_decisive_pairs": int(len(decisive_pairs)),
            "flips": int((decisive_pairs["g1_winner"] != decisive_pairs["g2_winner"]).sum()),
            "n_decisive": int(len(decisive)), "first_wins": int((decisive == 1.0).sum())}


class MTBenchPairScorer(ChatScorer):
    """FastChat pairwise-baseline: the run's variant (model_1) against the baseline's answers (model_2)."""

    name = "mt_bench_pair"
    version = "1"
    judged = True
    pairwise = True  # scores a variant against another's generations (the pipeline passes ``versus``)
    judge_config = "mt_bench_pairwise"
    primary = "win_rate_adjusted"
    repeat_combine = "mean"
    metrics = (  # in percent, as AlpacaEval's win rates; item values are 1 / 0.5 / 0 per match
        Metric("win_rate_adjusted", "adj. WR", "MT-Bench pairwise win rate vs the baseline, a tie counted as half a "
               "win (FastChat show_result win_rate_adjusted)", "%"),
        Metric("win_rate", "WR", "share of matches won outright (FastChat show_result win_rate)", "%",
               per_item=False),
        Metric("loss_rate", "LR", "share of matches lost (FastChat show_result loss_rate)", "%", per_item=False,
               higher_is_better=False),
    )

    def select_items(self, task, items, judge_kind):
        if judge_kind == "reference":
            raise UserError(f"task {task.name}: judge.mode: pairwise needs an LLM judge (the reference rubric rates "
                            "one answer at a time): pass --judge-model/--judge-base-url or judge.local")
        return items

    def requests(self, task, items, generations, config, judge_kind, versus=None):
        """``versus``: ``{"model_1": this variant, "model_2": the baseline, "generations": its records}``; None for
        the baseline's own row (nothing to compare)."""
        if versus is None:
            return []
        refs = task.reference_categories if getattr(task, "reference_categories", None) else REF_CATEGORIES
        return build_requests(config, items, answers_from_generations(generations),
                              answers_from_generations(versus["generations"]), model_1=versus["model_1"],
                              model_2=versus["model_2"], task=task.name, ref_categories=refs)

    def n_judge_calls(self, task, items, n_items, repeats):
        turns = sum(len(it.get("turns") or [1]) for it in items) if items is not None else task.n_turns * n_items
        return 2 * turns * repeats

    def reliability(self, task, items, generations, verdicts, versus=None):
        """Repeats (each repeat's match outcome), position bias (game 1 vs game 2) and length bias (the judged
        turn's answers of the two models, the match's winner preferred; ties count for neither)."""
        if versus is None:
            return {"note": "the pairwise baseline: no verdicts of its own"}
        rows = matches(verdicts)
        ok = rows[(rows["g1_winner"] != "error") & (rows["g2_winner"] != "error")]
        values: dict[tuple, list[float]] = {}
        for row in ok.sort_values("repeat").itertuples(index=False):
            values.setdefault((row.question_id, row.turn), []).append(OUTCOME[match_winner(row.g1_winner,
                                                                                         row.g2_winner)])
        games = [(k, row[f"g{g}_shown"]) for k, row in rows.iterrows() for g in (1, 2)]
        both = [(a, 3 - b) for a, b in zip(ok["g1_shown"], ok["g2_shown"])]  # model_1's side in both games
        ans_1, ans_2 = answers_from_generations(generations), answers_from_generations(versus["generations"])
        pref = {"model_1": 1.0, "model_2": 2.0, "tie": 1.5}
        pairs = [(ans_1[q][t - 1], ans_2[q][t - 1], pref[match_winner(a, b)])
                 for q, t, a, b in zip(ok["question_id"], ok["turn"], ok["g1_winner"], ok["g2_winner"])]
        return {"repeats": rel.repeat_stats(values, int(rows["repeat"].max()) + 1 if len(rows) else 1),
                "position": rel.position_bias(games, both), "length": rel.length_bias(pairs),
                "failures": rel.failures(verdicts)}

    def score(self, task, items, generations, verdicts=(), config=None, versus=None) -> ScoreResult:
        categories = {str(it["id"]): it.get("category") for it in items}
        protocol = self.protocol(config)
        conformant = None if config is None else config.conformant
        if versus is None:
            answered = answers_from_generations(generations)
            values = [{"example_id": str(q), "turn": t + 1, "category": categories.get(str(q)), "value": 0.5}
                      for q, turns in answered.items() if q in categories for t in range(len(turns))]
            metrics = {"win_rate_adjusted": 50.0, "win_rate": None, "loss_rate": None}
            return ScoreResult(metrics, values, {"n_items": len(values), "n_failed": 0, "pairwise_baseline": True,
                                                 "protocol": protocol, "conformant": conformant})
        rows = matches(verdicts)
        ok = rows[(rows["g1_winner"] != "error") & (rows["g2_winner"] != "error")].copy()
        ok["value"] = [OUTCOME[match_winner(a, b)] for a, b in zip(ok["g1_winner"], ok["g2_winner"])]
        n = len(ok)
        wins = int((ok["value"] == 1).sum())
        losses = int((ok["value"] == 0).sum())
        ties = n - wins - losses
        metrics = {"win_rate_adjusted": 100 * float(ok["value"].mean()) if n else math.nan,
                   "win_rate": 100 * wins / n if n else math.nan, "loss_rate": 100 * losses / n if n else math.nan,
                   "wins": wins, "losses": losses, "ties": ties}
        for t in (1, 2):
            sub = ok[ok["turn"] == t]
            metrics[f"turn{t}_win_rate_adjusted"] = 100 * float(sub["value"].mean()) if len(sub) else math.nan
        for cat, sub in ok.groupby("category"):
            metrics[f"category/{cat}"] = 100 * float(sub["value"].mean())
        values = []
        for (eid, turn), sub in ok.groupby(["question_id", "turn"]):
            values.append({"example_id": str(eid), "turn": int(turn), "category": categories.get(str(eid)),
                           "value": float(sub["value"].mean()),
                           **({"repeats": [float(v) for v in sub["value"]]} if len(sub) > 1 else {})})
        per_item = rows.groupby(["question_id", "turn"]).size()
        n_failed = int(len(per_item) - len(values))
        return ScoreResult(metrics, values, {"n_items": int(len(per_item)), "n_failed": n_failed,
                                             "versus": versus["model_2"], "protocol": protocol,
                                             "conformant": conformant})


SCORERS.add("mt_bench_pair", MTBenchPairScorer(),
            "MT-Bench pairwise vs a baseline: FastChat pair-v2 / pair-math-v1, both orders, win rates")

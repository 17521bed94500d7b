"""Conformance: our scorers reproduce the peers' own figures from the peers' own data.

A peer folder has the layout of ``../shared/peer`` (any folder of the same layout works, e.g. newer leaderboard
files):

- ``fastchat/judge_prompts.jsonl``, ``fastchat/mt_bench/question.jsonl``, ``.../reference_answer/gpt-4.jsonl``,
  ``.../model_answer/<model>.jsonl`` and ``.../model_judgment/gpt-4_single.jsonl`` (FastChat ``gen_judgment.py``
  output: ``question_id, model, judge [name, form], user_prompt, judgment, score, turn``);
- ``alpaca_eval/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv`` and ``alpaca_eval/annotations/<model>.json``
  (the annotator's annotations: ``preference`` and, where present, ``raw_completion`` with the judge's top-5
  log-probabilities).

MT-Bench, per model: our MT-Bench scorer builds the judge prompt of every judgment from the question, the model's
answer and (math, reasoning, coding) the reference answer, with FastChat's prompts from the peer folder; a prompt
that differs byte for byte from FastChat's ``user_prompt`` (or uses another form) is a prompt mismatch. Our parser
reads every ``judgment``; a result other than FastChat's ``score`` (-1 = failure) is a score mismatch. Turn and
overall means from our parse and our aggregation are checked against FastChat's ``show_result.py`` figures, which
are computed from the recorded ``score`` column.

MT-Bench pairwise (``model_judgment/gpt-4_pair.jsonl``, 75 real GPT-4 pairwise judgments written by FastChat's
``gen_judgment.py``): for every match both games' prompts (game 1: model_1 as assistant A; game 2 swapped) built by our
pairwise scorer must equal ``g1_user_prompt`` / ``g2_user_prompt`` byte for byte with the recorded form; our parser's
winner of each judgment must be the recorded ``g1_winner`` / ``g2_winner``; and show_result's pairwise-all tally
(win, loss, tie, win_rate, loss_rate, win_rate_adjusted per model) and the inconsistent / flipped games computed from
our winners must equal those computed from the recorded ones.

AlpacaEval 2, per model with annotations: win rate, standard error, counts and discrete win rate from the recorded
preferences through our :func:`bench.scorers.alpaca_eval.winrate`, against the leaderboard row (WR and SE to 1e-6,
counts exactly); our logprob parser on every ``raw_completion``, whose shown-order preference 2 - p must be the
recorded one (output order kept) or its mirror 3 - x (outputs switched); and the output order item by item: the
order each annotation reveals that way must be the one :func:`bench.scorers.alpaca_eval.is_switched` gives (items
with p = 0.5 reveal none). The annotator's prompt comes from the peer folder's ``alpaca_eval_clf.txt`` when it has
one, so the ``alpaca-eval`` package is not needed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import UserError
from core.io import hash_file

from bench.provenance import git_commit, package_versions
from bench.rundir.generations import GenerationRecord
from bench.scorers.alpaca_eval import AlpacaEvalScorer, is_switched, winrate
from bench.scorers.mt_bench import FASTCHAT_FORMS, MTBenchScorer, show_result
from bench.scorers.mt_bench_pair import FASTCHAT_FORMS as PAIR_FORMS
from bench.scorers.mt_bench_pair import MTBenchPairScorer, position_stats, show_result_pairwise
from bench.scorers.mt_bench_pair import build_requests as build_pair_requests

TOLERANCE = 1e-6


@dataclass
class Check:
    name: str
    expected: object
    ours: object
    ok: bool

    def row(self) -> tuple[str, str, str, str]:
        return self.name, _fmt(self.expected), _fmt(self.ours), "PASS" if self.ok else "FAIL"


def _fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.6f}"
    return str(x)


def _close(a: float, b: float, tol: float = TOLERANCE) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path} is missing (see `bench conformance --help` for the peer folder's layout)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
    return rows


# ------------------------------------------------------------------------------------------------------ MT-Bench


def mt_bench(peer: Path) -> tuple[dict, list[Check]]:
    """MT-Bench per model: prompts and parses against FastChat's judgments, means against show_result."""
    root = peer / "fastchat"
    bench_dir = root / "mt_bench"
    prompts = root / "judge_prompts.jsonl"
    if not prompts.is_file():
        raise UserError(f"{prompts} is missing: MT-Bench conformance needs FastChat's judge prompts")
    scorer = MTBenchScorer()
    config = scorer.load_config(prompts=str(prompts))
    questions = {str(q["question_id"]): q for q in _jsonl(bench_dir / "question.jsonl")}
    refs = {str(r["question_id"]): r["choices"][0]["turns"]
            for r in _jsonl(bench_dir / "reference_answer" / "gpt-4.jsonl")}
    judgments = _jsonl(bench_dir / "model_judgment" / "gpt-4_single.jsonl")
    items = [{"id": qid, "category": q["category"], "turns": q["turns"], "reference": refs.get(qid)}
             for qid, q in questions.items()]
    form_names = {v: k for k, v in FASTCHAT_FORMS.items()}
    task = _MTTask()
    results, checks = {}, []
    for model in sorted({j["model"] for j in judgments}):
        answers_file = bench_dir / "model_answer" / f"{model}.jsonl"
        answers = {str(a["question_id"]): a["choices"][0]["turns"] for a in _jsonl(answers_file)}
        gens = [GenerationRecord("mt_bench", qid, t + 1, model=model, text=text) for qid, turns in answers.items()
                for t, text in enumerate(turns)]
        ours = {(r.example_id, r.turn): r for r in scorer.requests(task, items, gens, config, "llm")}
        rows = [j for j in judgments if j["model"] == model]
        prompt_mismatch = score_mismatch = 0
        parsed = []
        for j in rows:
            req = ours.get((str(j["question_id"]), int(j["turn"])))
            judge_form = j["judge"][1] if isinstance(j.get("judge"), list) and len(j["judge"]) > 1 else None
            if (req is None or req.messages[-1]["content"] != j["user_prompt"]
                    or (judge_form is not None and form_names.get(judge_form) != req.form)):
                prompt_mismatch += 1
            score = config.parser(j["judgment"])
            score = -1 if score is None else score
            score_mismatch += score != j["score"]
            parsed.append({"question_id": j["question_id"], "turn": int(j["turn"]), "score": score})
        expected = show_result(pd.DataFrame(rows)[["turn", "score"]])  # FastChat's figures, from its own scores
        mine = show_result(pd.DataFrame(parsed))
        results[model] = {"turn1": mine["turn_1"], "turn2": mine["turn_2"], "overall": mine["overall"],
                          "n": len(rows), "prompt_mismatches": prompt_mismatch, "score_mismatches": score_mismatch}
        checks += [Check(f"mt_bench {model}: prompts identical", len(rows), len(rows) - prompt_mismatch,
                         prompt_mismatch == 0),
                   Check(f"mt_bench {model}: scores parsed", len(rows), len(rows) - score_mismatch,
                         score_mismatch == 0)]
        for key, label in (("turn_1", "turn 1"), ("turn_2", "turn 2"), ("overall", "overall")):
            checks.append(Check(f"mt_bench {model}: {label}", expected[key], mine[key],
                                _close(expected[key], mine[key])))
    return {"models": results}, checks


def mt_bench_pair(peer: Path) -> tuple[dict, list[Check]]:
    """MT-Bench pairwise (``model_judgment/gpt-4_pair.jsonl``, FastChat ``gen_judgment.py`` pairwise output): both
    games' prompts byte for byte, both games' winners from our parse of each judgment, and show_result's
    pairwise-all tally (and the inconsistent games it turns into ties) from our winners against the recorded ones."""
    root = peer / "fastchat"
    bench_dir = root / "mt_bench"
    prompts = root / "judge_prompts.jsonl"
    config = MTBenchPairScorer().load_config(prompts=str(prompts))
    questions = {str(q["question_id"]): q for q in _jsonl(bench_dir / "question.jsonl")}
    refs = {str(r["question_id"]): r["choices"][0]["turns"]
            for r in _jsonl(bench_dir / "reference_answer" / "gpt-4.jsonl")}
    items = [{"id": qid, "category": q["category"], "turns": q["turns"], "reference": refs.get(qid)}
             for qid, q in questions.items()]
    judgments = _jsonl(bench_dir / "model_judgment" / "gpt-4_pair.jsonl")
    form_names = {v: k for k, v in PAIR_FORMS.items()}
    answers: dict[str, dict] = {}
    prompt_mismatch = winner_mismatch = 0
    ours_rows = []
    game_map = {1: {1.0: "model_1", 2.0: "model_2", 1.5: "tie"}, 2: {1.0: "model_2", 2.0: "model_1", 1.5: "tie"}}
    requests: dict[tuple, dict] = {}
    for j in judgments:
        pair = (j["model_1"], j["model_2"])
        if pair not in requests:
            for m in pair:
                if m not in answers:
                    answers[m] = {str(a["question_id"]): a["choices"][0]["turns"]
                                  for a in _jsonl(bench_dir / "model_answer" / f"{m}.jsonl")}
            requests[pair] = {(r.example_id, r.turn, r.meta["game"]): r for r in build_pair_requests(
                config, items, answers[pair[0]], answers[pair[1]], model_1=pair[0], model_2=pair[1])}
        row = {"model_1": j["model_1"], "model_2": j["model_2"]}
        judge_form = j["judge"][1] if isinstance(j.get("judge"), list) and len(j["judge"]) > 1 else None
        for game in (1, 2):
            req = requests[pair].get((str(j["question_id"]), int(j["turn"]), game))
            if (req is None or req.messages[-1]["content"] != j[f"g{game}_user_prompt"]
                    or (judge_form is not None and form_names.get(judge_form) != req.form)):
                prompt_mismatch += 1
            verdict = config.parser(j[f"g{game}_judgment"])
            row[f"g{game}_winner"] = "error" if verdict is None else game_map[game][verdict]
            winner_mismatch += row[f"g{game}_winner"] != j[f"g{game}_winner"]
        ours_rows.append(row)
    n_games = 2 * len(judgments)
    theirs_df, ours_df = pd.DataFrame(judgments), pd.DataFrame(ours_rows)
    expected, mine = show_result_pairwise(theirs_df), show_result_pairwise(ours_df)
    checks = [Check("mt_bench pairwise: prompts identical (both games)", n_games, n_games - prompt_mismatch,
                    prompt_mismatch == 0),
              Check("mt_bench pairwise: winners parsed (both games)", n_games, n_games - winner_mismatch,
                    winner_mismatch == 0)]
    for model in expected.index:
        for col in ("win", "loss", "tie"):
            want, got = int(expected.loc[model, col]), int(mine.loc[model, col]) if model in mine.index else -1
            checks.append(Check(f"mt_bench pairwise {model}: {col}", want, got, want == got))
        for col in ("win_rate", "loss_rate", "win_rate_adjusted"):
            want = float(expected.loc[model, col])
            got = float(mine.loc[model, col]) if model in mine.index else math.nan
            checks.append(Check(f"mt_bench pairwise {model}: {col}", want, got, _close(want, got)))

    def stats(df):
        df = df.assign(g1_shown=math.nan, g2_shown=math.nan, question_id=0, turn=1, repeat=0, category=None)
        return position_stats(df)

    want, got = stats(theirs_df), stats(ours_df)
    checks.append(Check("mt_bench pairwise: inconsistent games (ties by FastChat's rule)", want["inconsistent"],
                        got["inconsistent"], want["inconsistent"] == got["inconsistent"]))
    checks.append(Check("mt_bench pairwise: flips (both games decisive, same position won)", want["flips"],
                        got["flips"], want["flips"] == got["flips"]))
    figures = {"n_matches": len(judgments), "prompt_mismatches": prompt_mismatch, "winner_mismatches": winner_mismatch,
               "tally": {m: {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                         for m, r in mine.to_dict(orient="index").items()},
               "inconsistent": got["inconsistent"], "flips": got["flips"], "n_decisive_pairs": got["n_decisive_pairs"]}
    return figures, checks


@dataclass
class _MTTask:
    """The slice of a Task the MT-Bench scorer reads (FastChat's reference categories)."""

    name: str = "mt_bench"
    reference_categories: tuple = ("math", "reasoning", "coding")
    n_turns: int = 2


# ---------------------------------------------------------------------------------------------------- AlpacaEval

LEADERBOARD = "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
COUNTS = ("n_wins", "n_wins_base", "n_draws", "n_total")


def alpaca_eval_template(peer: Path) -> str | None:
    """The peer folder's copy of alpaca_eval's annotator prompt (``alpaca_eval/alpaca_eval_clf.txt``), if it has one."""
    path = peer / "alpaca_eval" / "alpaca_eval_clf.txt"
    return str(path) if path.is_file() else None


def inferred_switch(shown: float | None, recorded: float | None) -> bool | None:
    """The output order alpaca_eval used for one annotation, from our parse of its raw reply (the shown-order
    preference 2 - p) and its recorded preference: unswitched when they are equal, switched when the recorded one is
    their mirror 3 - x; None when it cannot be told (no parse, p = 0.5, or neither)."""
    if shown is None or recorded is None or _close(shown, 1.5, 1e-12):
        return None
    if _close(shown, recorded, 1e-9):
        return False
    if _close(3 - shown, recorded, 1e-9):
        return True
    return None


def alpaca_eval(peer: Path) -> tuple[dict, list[Check]]:
    """AlpacaEval 2.0 per annotated model: leaderboard figures, our logprob parser on the raw replies, and our
    per-item output order against the order each annotation reveals."""
    root = peer / "alpaca_eval"
    board_path = root / LEADERBOARD
    if not board_path.is_file():
        raise UserError(f"{board_path} is missing: AlpacaEval conformance needs the leaderboard CSV")
    board = pd.read_csv(board_path, index_col=0)
    parser = AlpacaEvalScorer().load_config(alpaca_eval_prompt=alpaca_eval_template(peer)).parser
    files = sorted((root / "annotations").glob("*.json"))
    if not files:
        raise UserError(f"{root / 'annotations'} holds no <model>.json annotations")
    results, checks = {}, []
    for path in files:
        model = path.stem
        try:
            annotations = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: invalid JSON ({e.msg})") from None
        figures = winrate([a.get("preference", math.nan) for a in annotations])
        mismatches = checked = order_known = order_agree = 0
        for a in annotations:
            raw = a.get("raw_completion")
            if not isinstance(raw, dict):
                continue
            content = ((raw.get("logprobs") or {}).get("content") or [{}])[0]
            shown = parser({"top_logprobs": content.get("top_logprobs") or []})
            checked += 1
            recorded = a.get("preference")
            if a.get("output_1") == a.get("output_2"):
                ok = recorded == 1.5  # alpaca_eval sets identical outputs to a draw whatever the judge said
            else:
                switched = inferred_switch(shown, recorded)
                ok = switched is not None or (shown is not None and _close(shown, 1.5, 1e-12) and recorded == 1.5)
                if switched is not None:
                    order_known += 1
                    order_agree += is_switched(str(a.get("instruction", ""))) == switched
            mismatches += not ok
        results[model] = {**figures, "preference_mismatches": mismatches, "n_raw_completions": checked,
                          "order_inferred": order_known, "order_agrees": order_agree}
        if model not in board.index:
            checks.append(Check(f"alpaca_eval {model}: on the leaderboard", "a row", "none", False))
            continue
        row = board.loc[model]
        for key in ("win_rate", "standard_error", "discrete_win_rate"):
            checks.append(Check(f"alpaca_eval {model}: {key}", float(row[key]), figures[key],
                                _close(float(row[key]), figures[key])))
        for key in COUNTS:
            checks.append(Check(f"alpaca_eval {model}: {key}", int(row[key]), figures[key],
                                int(row[key]) == figures[key]))
        checks.append(Check(f"alpaca_eval {model}: preferences parsed from raw logprobs", checked,
                            checked - mismatches, mismatches == 0))
        if order_known:  # annotations without raw replies reveal no order
            checks.append(Check(f"alpaca_eval {model}: output order item by item", order_known, order_agree,
                                order_agree == order_known))
    return {"models": results}, checks


# -------------------------------------------------------------------------------------------------------- report


def run(peer_dir: str | Path) -> tuple[dict, list[Check]]:
    """Every check for the peers present in ``peer_dir`` (FastChat, AlpacaEval); a UserError if neither is."""
    peer = Path(peer_dir)
    if not peer.is_dir():
        raise UserError(f"peer folder {peer} does not exist")
    out, checks = {}, []
    if (peer / "fastchat").is_dir():
        out["mt_bench"], c = mt_bench(peer)
        checks += c
        if (peer / "fastchat" / "mt_bench" / "model_judgment" / "gpt-4_pair.jsonl").is_file():
            out["mt_bench_pair"], c = mt_bench_pair(peer)
            checks += c
    if (peer / "alpaca_eval").is_dir():
        out["alpaca_eval"], c = alpaca_eval(peer)
        checks += c
    if not checks:
        raise UserError(f"{peer} has neither fastchat/ nor alpaca_eval/ (see `bench conformance --help`)")
    out["provenance"] = provenance(peer)
    return out, checks


def provenance(peer: Path) -> dict:
    """How these figures were made: our code and packages, and a content hash of every peer file read."""
    files = sorted(p for p in peer.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".csv", ".txt"))
    return {"git": git_commit(), "packages": package_versions(), "peer_dir": str(peer),
            "peer_files": {str(p.relative_to(peer)): hash_file(p) for p in files}}


def render(checks: list[Check]) -> str:
    rows = [("check", "expected", "ours", "")] + [c.row() for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    n_fail = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - n_fail} passed, {n_fail} failed")
    return "\n".join(lines)

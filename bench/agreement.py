"""Judge-human agreement on MT-Bench, exactly as FastChat's ``fastchat/llm_judge/compute_agreement.py`` computes it
(the agreement table of Zheng et al. 2023), and the data it needs.

Votes are records ``{question_id, model_a, model_b, winner, judge, turn}`` (``winner``: ``model_a``, ``model_b``,
``tie`` or ``tie (inconsistent)``). FastChat's rules (:func:`votes_by_turn`, :func:`agreement`):

- which voters count: ``expert_*`` judges are "human"; ``author_*`` votes are kept apart and never counted; the LLM
  judge is recognised by a ``[model, "pair..."]`` judge value (FastChat: ``["gpt-4", "pair-v2"]``);
- mirrored pairs: a vote is keyed by (question, the two models in sorted order) per turn; a vote on the reversed
  pair has its winner mirrored (``model_a`` <-> ``model_b``);
- judge vs human: for every key both voted on, the judge's one vote against each human vote, each a trial;
  human vs human: every pair of distinct human votes on a key;
- ties: "with ties" counts every trial, any vote containing "tie" equals any other such vote; "without ties" drops
  trials where either vote is a tie (``tie (inconsistent)`` included).

The data (``../shared/peer`` layout, or downloaded once at pinned commits and checked by sha256,
:func:`peer_file`): the human votes and GPT-4's pairwise verdicts of lmsys/mt_bench_human_judgments (CSV), the
MT-Bench questions, GPT-4 reference answers, FastChat's judge prompts and five human-judged models' answers.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Iterable, Mapping

from bench.judge.prompts import _Skip, download_cached
from core.errors import UserError

GPT4 = "gpt4-pair"  # compute_agreement's name for the GPT-4 pairwise judge
HUMAN = "human"
CALIBRATED = "calibrated"
MODELS = ("alpaca-13b", "claude-v1", "gpt-3.5-turbo", "gpt-4", "llama-13b")  # answers the peer copy has

_FASTCHAT = "https://raw.githubusercontent.com/lm-sys/FastChat/0e6d3e4beaab66f4d3f93db72541a4abab8af28d/" \
            "fastchat/llm_judge/data/"
_HUMAN = "https://raw.githubusercontent.com/mokayahezron/evalaudit/9011cf59598a2fccc4023e40d30f089219238f4f/tests/data/"
_ANSWERS = "https://raw.githubusercontent.com/ku-nlp/ja-vicuna-qa-benchmark/44bd00f58a18232e7360bb2f64a22aee2377c031/" \
           "fastchat/llm_judge/data/mt_bench/model_answer/"
# path in a peer folder -> (pinned URL, sha256)
PEER_FILES = {
    "fastchat/human/mt_bench_human.csv": (
        _HUMAN + "mt_bench_human.csv", "c41f65237a1b2e1e877721bf7c01c79e0b44d3d1a0bbe045046acce20a88189e"),
    "fastchat/human/mt_bench_gpt4_pair.csv": (
        _HUMAN + "mt_bench_gpt4_pair.csv", "9148248956477aff4b7dd3a2a4b60bce3461906aecc36d057a810be1e63306b8"),
    "fastchat/judge_prompts.jsonl": (
        _FASTCHAT + "judge_prompts.jsonl", "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6"),
    "fastchat/mt_bench/question.jsonl": (
        _FASTCHAT + "mt_bench/question.jsonl", "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
    "fastchat/mt_bench/reference_answer/gpt-4.jsonl": (
        _FASTCHAT + "mt_bench/reference_answer/gpt-4.jsonl",
        "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"),
    **{f"fastchat/mt_bench/model_answer/{m}.jsonl": (_ANSWERS + f"{m}.jsonl", sha) for m, sha in (
        ("alpaca-13b", "80f4a8bf4665839d33fa0ea7f4b58824abf88d5a0edc9e7cc68a362fca88ef98"),
        ("claude-v1", "884c109de34721859bf7ffa0f7e525dfbc9fb0d99c1ee7c5488bfb2eb8f8c62c"),
        ("gpt-3.5-turbo", "c3c097c21f91e4b44a554d82e5d47516daf7e8240e13b2eca79d211afc1fdfd6"),
        ("gpt-4", "f65cdce00aa8567e9add118cabd34c2866291ed8f5c1d568f8da9a81d231d3e7"),
        ("llama-13b", "b96b9f1e0a7e4e669fecfecda1c33908fdc4c095e38346e84352ea254c0b2cbc"))},
}


def default_peer_dir() -> Path | None:
    """``../shared/peer`` beside the repository (the project's CI layout), when it exists."""
    path = Path(__file__).resolve().parents[2] / "shared" / "peer"
    return path if path.is_dir() else None


def peer_file(rel: str, peer_dir: str | Path | None = None) -> Path:
    """A reference file: ``peer_dir/rel`` when there, else the pinned download (sha256-checked, cached)."""
    if peer_dir is not None:
        path = Path(peer_dir) / rel
        if path.is_file():
            return path
    url, sha = PEER_FILES[rel]
    try:
        return download_cached(url, sha)
    except _Skip as e:
        where = f"not in {peer_dir} and " if peer_dir is not None else ""
        raise UserError(f"{rel}: {where}not downloadable ({e}); pass --peer-dir with the peer folder's layout") \
            from None


# ---------------------------------------------------------------------------------------------------- votes


def read_votes(path: Path) -> list[dict]:
    """The dataset's CSV rows as compute_agreement's vote records (GPT-4's ``gpt4_pair`` judge as
    ``["gpt-4", "pair-v2"]``, the value compute_agreement recognises)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"question_id", "model_a", "model_b", "winner", "judge", "turn"}
    if not rows or not need <= set(rows[0]):
        raise UserError(f"{path}: expected CSV columns {', '.join(sorted(need))}")
    return [{"question_id": int(r["question_id"]), "model_a": r["model_a"], "model_b": r["model_b"],
             "winner": r["winner"], "judge": ["gpt-4", "pair-v2"] if r["judge"] == "gpt4_pair" else r["judge"],
             "turn": int(r["turn"])} for r in rows]


def judge_name(judge) -> str | None:
    """compute_agreement's ``get_judge_name``; another model's pairwise votes are the ``calibrated`` judge."""
    if isinstance(judge, (list, tuple)):
        if len(judge) > 1 and str(judge[1]).startswith("pair"):
            return GPT4 if judge[0] == "gpt-4" else CALIBRATED
        return None
    if judge.startswith("expert"):
        return HUMAN
    if judge.startswith("author"):
        return "author"
    return None


def _revert(vote: str) -> str:
    return {"model_a": "model_b", "model_b": "model_a"}.get(vote, vote)


def votes_by_turn(votes: Iterable[Mapping], name: Callable = judge_name) -> list[dict]:
    """``[turn 1, turn 2]``: (question, model, model) in sorted order -> judge name -> its winners (mirrored)."""
    data: list[dict] = [{}, {}]
    for v in votes:
        if v["model_a"] < v["model_b"]:
            key, winner = (v["question_id"], v["model_a"], v["model_b"]), v["winner"]
        else:
            key, winner = (v["question_id"], v["model_b"], v["model_a"]), _revert(v["winner"])
        data[int(v["turn"]) - 1].setdefault(key, {}).setdefault(name(v["judge"]), []).append(winner)
    return data


def _tie(vote: str) -> str:
    return "tie" if "tie" in vote else vote


def _equal(a: str, b: str) -> bool:
    return ("tie" in a and "tie" in b) or a == b


def agreement(data: Mapping, judge1: str, judge2: str, ban: tuple = ()) -> tuple[int, int]:
    """(agree, total) between ``judge1`` and ``judge2`` over one turn's keys (see the module docstring)."""
    agree = total = 0
    if judge2 != HUMAN:
        raise ValueError("the second judge must be 'human'")
    for votes in data.values():
        if judge1 == HUMAN:
            hv = votes.get(HUMAN, [])
            for i in range(len(hv) - 1):
                for j in range(i + 1, len(hv)):
                    if _tie(hv[i]) in ban or _tie(hv[j]) in ban:
                        continue
                    total += 1
                    agree += _equal(hv[i], hv[j])
            continue
        if judge1 not in votes or judge2 not in votes:
            continue
        if len(votes[judge1]) != 1:
            raise UserError(f"judge {judge1} has {len(votes[judge1])} votes on one pair and turn (expected 1)")
        mine = votes[judge1][0]
        if _tie(mine) in ban:
            continue
        for v in votes[judge2]:
            if _tie(v) in ban:
                continue
            total += 1
            agree += _equal(mine, v)
    return agree, total


def agreement_table(votes: Iterable[Mapping], judge1: str) -> dict:
    """``{"turn1": {"with_ties": {"agree", "total"}, "without_ties": {...}}, "turn2": {...}}`` of ``judge1``
    against the experts (``judge1 == "human"``: expert against expert)."""
    data = votes_by_turn(votes)
    out = {}
    for t in (0, 1):
        out[f"turn{t + 1}"] = {label: dict(zip(("agree", "total"), agreement(data[t], judge1, HUMAN, ban)))
                               for label, ban in (("with_ties", ()), ("without_ties", ("tie",)))}
    return out


def render(table: Mapping[str, Mapping]) -> str:
    """The agreement table as text: one line per judge and turn, with and without ties."""
    lines = [f"{'judge':<28} {'turn':<5} {'with ties':>22} {'without ties':>22}"]
    for judge, turns in table.items():
        for turn, cells in turns.items():
            def cell(c):
                return f"{c['agree']}/{c['total']} ({c['agree'] / c['total']:.0%})" if c["total"] else "0/0 (n/a)"
            lines.append(f"{judge:<28} {turn[-1]:<5} {cell(cells['with_ties']):>22} {cell(cells['without_ties']):>22}")
    return "\n".join(lines)

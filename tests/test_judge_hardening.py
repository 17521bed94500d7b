"""Judge replies that are HTTP 200 but unusable, and interrupts while judging (issue 18).

Every unusable reply ends as a failed verdict with a named cause (never an exception out of the judge); a captive
portal fails the preflight with one line; Ctrl-C cancels the queued requests and says what was kept.
"""
from __future__ import annotations

import _thread
import threading
import time

import pytest
from openai_server import FakeOpenAIServer, hash_rating

from bench.cache import Cache
from bench.judge import JudgeRequest, OpenAIJudge, Parser
from bench.judge.ledger import CostLedger
from core.errors import Interrupted, UserError

PARSE = Parser(pattern=r"\[\[(\d+\.?\d*)\]\]", range=(1, 10))
FAST = dict(timeout=2.0, backoff_base=0.01, backoff_max=0.02)
PORTAL = "<!DOCTYPE html><html><head><title>Hotel WiFi</title></head><body>Please log in</body></html>"


def requests_for(n: int) -> list[JudgeRequest]:
    return [JudgeRequest(task="t", example_id=str(i), turn=1, parse=PARSE, max_tokens=16,
                         messages=[{"role": "user", "content": f"Rate item-{i} please."}]) for i in range(n)]


def judge(server, tmp_path, **kw) -> OpenAIJudge:
    opts = dict(FAST, concurrency=2, max_retries=1, max_parse_retries=0, log_path=tmp_path / "judge.jsonl")
    opts.update(kw)
    return OpenAIJudge("judge-model", base_url=server.url, **opts)


def _no_message(body):
    del body["choices"][0]["message"]
    return body


def _text_usage(body):
    body["usage"] = {"prompt_tokens": "lots", "completion_tokens": "a few"}
    return body


def _list_content(body):
    body["choices"][0]["message"]["content"] = [{"type": "text", "text": "[[5]]"}]
    return body


def _choices_not_list(body):
    body["choices"] = {"0": body["choices"][0]}
    return body


MALFORMED = {
    "html_page": {"body": PORTAL, "content_type": "text/html"},
    "invalid_json": {"body": '{"choices": [', "content_type": "application/json"},
    "plain_text": {"body": "upstream connect error", "content_type": "text/plain"},
    "json_list": {"json": [1, 2, 3]},
    "choice_without_message": {"patch": _no_message},
    "content_not_text": {"patch": _list_content},
    "choices_not_a_list": {"patch": _choices_not_list},
    "no_choices_key": {"json": {"id": "x", "object": "chat.completion"}},
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_200_reply_is_a_failed_verdict(case, tmp_path):
    fault = MALFORMED[case]
    cache = Cache(tmp_path / "cache.sqlite")
    with FakeOpenAIServer(fault=lambda n, k, m: fault if "item-0" in m[-1]["content"] else None) as server:
        verdicts = judge(server, tmp_path, cache=cache).judge_many(requests_for(3), progress=False)
        first = verdicts[0]
        assert first.failed and first.failure == "malformed" and first.score is None, first
        assert first.attempts == 2  # retried once (max_retries=1), like a transport error
        assert "malformed reply" in first.error
        for v in verdicts[1:]:  # the other items are unaffected
            asked = [{"role": "user", "content": f"Rate item-{v.example_id} please."}]
            assert not v.failed and v.score == hash_rating(asked)
    assert cache.count("judge") == 2  # a failure is never cached


def test_html_reply_message_names_a_captive_portal(tmp_path):
    with FakeOpenAIServer(fault=lambda n, k, m: MALFORMED["html_page"]) as server:
        (v,) = judge(server, tmp_path, max_retries=0).judge_many(requests_for(1), progress=False)
    assert v.failure == "malformed" and "HTML page" in v.error and "captive portal" in v.error


def test_non_numeric_usage_keeps_the_verdict_and_makes_the_cost_unknown(tmp_path):
    ledger = CostLedger({"judge-model": {"input": 1.0, "output": 1.0}})
    with FakeOpenAIServer(fault=lambda n, k, m: {"patch": _text_usage}) as server:
        verdicts = judge(server, tmp_path, ledger=ledger).judge_many(requests_for(2), progress=False)
    assert all(not v.failed and v.score is not None for v in verdicts)
    assert all(v.usage["unknown"] for v in verdicts)
    s = ledger.summary()
    assert s["calls"] == 2 and s["models"]["judge-model"]["calls_without_usage"] == 2 and s["cost_usd"] is None


def test_bad_logprobs_are_malformed(tmp_path):
    def bad(body):
        body["choices"][0]["logprobs"] = {"content": [{"token": "m", "logprob": "high", "top_logprobs": [
            {"token": "m", "logprob": "high"}]}]}
        return body

    req = JudgeRequest(task="t", example_id="0", turn=1, parse=PARSE, max_tokens=1, logprobs=5,
                       messages=[{"role": "user", "content": "Rate item-0 please."}])
    with FakeOpenAIServer(fault=lambda n, k, m: {"patch": bad}) as server:
        (v,) = judge(server, tmp_path).judge_many([req], progress=False)
    assert v.failure == "malformed" and "non-numeric logprob" in v.error


def test_captive_portal_fails_preflight_in_one_line(tmp_path):
    with FakeOpenAIServer(portal=PORTAL) as server:
        with pytest.raises(UserError) as e:
            judge(server, tmp_path).preflight(timeout=2)
    msg = str(e.value)
    assert "\n" not in msg and "HTML page" in msg and "captive portal" in msg, msg


def test_captive_portal_mid_run_fails_verdicts_not_the_run(tmp_path):
    with FakeOpenAIServer(portal=PORTAL) as server:
        verdicts = judge(server, tmp_path).judge_many(requests_for(4), progress=False)
    assert [v.failure for v in verdicts] == ["malformed"] * 4


def _interrupt_after(server, n: int) -> None:
    """Send the main thread a KeyboardInterrupt once the server has seen ``n`` requests (what Ctrl-C does)."""
    def watch():
        while server.total < n:
            time.sleep(0.005)
        _thread.interrupt_main()

    threading.Thread(target=watch, daemon=True).start()


def test_ctrl_c_cancels_queued_requests_and_keeps_answers(tmp_path):
    cache = Cache(tmp_path / "cache.sqlite")
    with FakeOpenAIServer(delay=0.2) as server:
        j = judge(server, tmp_path, cache=cache, concurrency=2)
        _interrupt_after(server, 3)
        with pytest.raises(Interrupted) as e:
            j.judge_many(requests_for(40), progress=False)
        time.sleep(0.5)  # anything still queued would be sent now
        sent = server.total
    # 2 workers: those in flight when Ctrl-C is seen finish, nothing queued is sent (was: all 40); the margin
    # covers a loaded machine's delay before the main thread sees the interrupt
    assert sent <= 10, sent
    kept = cache.count("judge")
    assert kept == sent  # every request that was sent was answered and cached
    assert f"{kept} judge verdicts answered in this call are kept" in str(e.value)
    assert "cancelled (never sent)" in str(e.value)
    # a re-run asks only the rest
    with FakeOpenAIServer() as server:
        out = judge(server, tmp_path, cache=Cache(tmp_path / "cache.sqlite")).judge_many(requests_for(40),
                                                                                         progress=False)
        assert server.total == 40 - kept and all(not v.failed for v in out)


def test_second_ctrl_c_stops_at_once(tmp_path):
    with FakeOpenAIServer(fault=lambda n, k, m: {"sleep": 30}) as server:  # replies that would take 30 s
        j = judge(server, tmp_path, concurrency=2, timeout=60)

        def twice():
            while server.total < 2:
                time.sleep(0.005)
            _thread.interrupt_main()
            time.sleep(0.3)
            _thread.interrupt_main()

        threading.Thread(target=twice, daemon=True).start()
        with pytest.raises(Interrupted) as e:
            j.judge_many(requests_for(10), progress=False)
        # returned while both requests were still in flight (their 30 s replies not yet served), none queued sent
        assert server.total == 2 and server.in_flight == 2 and not server.served
    assert "stopped at once" in str(e.value) and "2 judge requests in flight abandoned" in str(e.value)

"""Judge requests, verdicts, and the OpenAI-compatible judge client.

The client talks to any OpenAI-compatible chat endpoint through the ``openai`` package, with our own retry loop
(the client's built-in retries are off so that every attempt is counted and logged): exponential backoff with
full jitter on 429, 5xx, timeouts and connection errors, honouring ``Retry-After``. A reply the parser cannot read
is asked again up to ``max_parse_retries`` times and then recorded as a failure with its raw text; failures are
never scored and never cached, so a re-run asks exactly them again.

Every failure has a category (:data:`FAILURES`): ``transport`` (no usable reply after all retries: timeouts,
connection errors, 429/5xx), ``unparsable`` (replies the parser cannot read), ``refused`` (the endpoint rejects the
request itself: 400/401/403/404, or a 200 reply without choices). A refusal would repeat on every call (revoked key,
unknown model), so it is fatal: :meth:`BaseJudge.judge_many` stops and raises :class:`JudgeRefused` before anything
is written. The API key is read from the environment variable named by ``api_key_env`` and
never written anywhere: it is scrubbed from every error message that reaches a log or a record.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sftmix.errors import UserError
from sftmix.io import hash_obj

CACHE_KIND = "judge"
FAILURES = ("transport", "refused", "unparsable")


class JudgeRefused(UserError):
    """The judge endpoint refuses our requests (bad key, unknown model, malformed request): stop, write nothing."""


@dataclass(frozen=True)
class CallError:
    """Why one judge call produced no reply: a :data:`FAILURES` category and a one-line message."""

    category: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class JudgeRequest:
    """One judge call: rendered chat ``messages`` plus what is needed to parse and record the reply.

    ``fields`` keeps the structured inputs (question, answer, reference...) so that non-LLM judges can use them.
    """

    task: str
    example_id: str
    turn: int
    messages: list[dict]
    parse: Callable[[str | None], float | None]
    temperature: float = 0.0
    max_tokens: int = 1024
    form: str = ""
    fields: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    config: str = ""
    logprobs: int | None = None  # ask for the top-N log-probabilities; the raw reply is then a dict (see Verdict)


@dataclass
class Verdict:
    """One judgment. ``to_record()`` gives the shared judgment-record format (see bench.scorers)."""

    task: str
    example_id: str
    turn: int
    judge: str
    judge_kind: str  # 'llm' | 'local' | 'reference'
    repeat: int
    score: float | None
    failed: bool
    raw: str | dict | None  # the reply text; with logprobs {"text", "top_logprobs": [{token, logprob}] of token 1}
    error: str | None = None
    usage: dict = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    form: str = ""
    config: str = ""
    attempts: int = 0
    latency_s: float = 0.0
    cached: bool = False
    meta: dict = field(default_factory=dict)
    failure: str | None = None  # one of FAILURES when failed

    def to_record(self) -> dict:
        return asdict(self)


def cache_key(judge: str, req: JudgeRequest, repeat: int) -> str:
    """Content address of a judgment: judge model, full messages, settings, repeat index (not the URL)."""
    key = {"judge": judge, "messages": req.messages, "temperature": req.temperature, "max_tokens": req.max_tokens,
           "repeat": repeat}
    if req.logprobs:  # only then, so keys of earlier text-only judgments stay valid
        key["logprobs"] = req.logprobs
    return hash_obj(key, n=32)


class BaseJudge:
    """Shared driver: dedup, cache lookup, a bounded thread pool, progress, ordering of verdicts.

    Subclasses implement :meth:`_call` (one model call -> raw text, usage) or override :meth:`_judge_one`.
    """

    name: str = "judge"
    kind: str = "llm"
    concurrency: int = 1
    max_parse_retries: int = 0

    def __init__(self, cache=None, ledger=None, log_path: str | os.PathLike | None = None):
        self.cache = cache
        self.ledger = ledger
        self.log_path = Path(log_path) if log_path else None
        self._log_lock = threading.Lock()

    # -- public -----------------------------------------------------------------------------------------------
    def judge_many(self, requests: list[JudgeRequest], repeats: int = 1, progress: bool = True) -> list[Verdict]:
        """Judge every request ``repeats`` times; returns verdicts ordered request-major, repeat-minor.

        Identical (request, repeat) pairs are judged once; cached successes make no call.
        """
        from tqdm.auto import tqdm

        jobs = [(req, r) for req in requests for r in range(repeats)]
        keys = [self._key(req, r) for req, r in jobs]
        unique: dict[str, tuple[JudgeRequest, int]] = {}
        for key, job in zip(keys, jobs):
            unique.setdefault(key, job)
        results: dict[str, Verdict] = {}
        todo = []
        for key, (req, r) in unique.items():
            hit = self._from_cache(key, req, r)
            if hit is not None:
                results[key] = hit
            else:
                todo.append(key)
        bar = tqdm(total=len(todo), desc=f"judge {self.name}", disable=not progress or not todo)
        refused: Verdict | None = None
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            futures = {pool.submit(self._judge_one, *unique[k], key=k): k for k in todo}
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                v = results[futures[fut]] = fut.result()
                bar.update(1)
                if v.failure == "refused" and refused is None:
                    refused = v
                    for f in futures:  # every other call would be refused too: do not send them
                        f.cancel()
        bar.close()
        if refused is not None:
            raise JudgeRefused(f"judge {self.name} refused the request ({refused.error}); nothing was written - "
                               "check the API key, model name and base URL")
        out = []
        for key, (req, r) in zip(keys, jobs):
            v = results[key]
            if (v.example_id, v.turn, v.repeat, v.meta) != (req.example_id, req.turn, r, req.meta):
                # Same prompt reached through another item: copy the verdict with this item's identity.
                v = Verdict(**{**v.to_record(), "task": req.task, "example_id": req.example_id, "turn": req.turn,
                               "repeat": r, "meta": dict(req.meta)})
            out.append(v)
        return out

    # -- internals --------------------------------------------------------------------------------------------
    def _key(self, req: JudgeRequest, repeat: int) -> str:
        return cache_key(self.name, req, repeat)

    def _verdict(self, req: JudgeRequest, repeat: int, **kw) -> Verdict:
        return Verdict(task=req.task, example_id=req.example_id, turn=req.turn, judge=self.name,
                       judge_kind=self.kind, repeat=repeat, form=req.form, config=req.config,
                       meta=dict(req.meta), **kw)

    def _from_cache(self, key: str, req: JudgeRequest, repeat: int) -> Verdict | None:
        if self.cache is None:
            return None
        hit = self.cache.get(CACHE_KIND, key)
        if hit is None:
            return None
        score = req.parse(hit["raw"])  # re-parse: a changed parser must not reuse stale numbers
        if score is None:
            return None
        return self._verdict(req, repeat, score=score, failed=False, raw=hit["raw"], usage=hit["usage"],
                             cached=True)

    def _judge_one(self, req: JudgeRequest, repeat: int, key: str) -> Verdict:
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        raw, error, attempts, t0 = None, None, 0, time.perf_counter()
        for _ in range(self.max_parse_retries + 1):
            raw, u, error, n = self._call(req, repeat)
            attempts += n
            usage = {k: usage[k] + u.get(k, 0) for k in usage}
            if error is not None:
                category = error.category if isinstance(error, CallError) else "transport"
                return self._verdict(req, repeat, score=None, failed=True, raw=raw, error=str(error), usage=usage,
                                     attempts=attempts, latency_s=time.perf_counter() - t0, failure=category)
            score = req.parse(raw)
            if score is not None:
                if self.cache is not None:
                    self.cache.put(CACHE_KIND, key, {"raw": raw, "usage": u})
                return self._verdict(req, repeat, score=score, failed=False, raw=raw, usage=usage,
                                     attempts=attempts, latency_s=time.perf_counter() - t0)
            error = "unparsable judge reply"
        return self._verdict(req, repeat, score=None, failed=True, raw=raw, error=error, usage=usage,
                             attempts=attempts, latency_s=time.perf_counter() - t0, failure="unparsable")

    def _call(self, req: JudgeRequest, repeat: int) -> tuple[str | None, dict, str | None, int]:
        """One model call (with transport retries): (raw text, usage, error or None, attempts).

        ``error`` is a :class:`CallError` (a plain string counts as a ``transport`` failure)."""
        raise NotImplementedError

    def _log(self, entry: dict) -> None:
        if self.log_path is None:
            return
        line = json.dumps(entry, ensure_ascii=False, default=str)
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


class OpenAIJudge(BaseJudge):
    """A judge behind any OpenAI-compatible chat-completions endpoint."""

    kind = "llm"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 60, max_retries: int = 6, max_parse_retries: int = 2,
                 cache=None, ledger=None, log_path: str | os.PathLike | None = None,
                 backoff_base: float = 0.5, backoff_max: float = 30.0):
        import openai

        super().__init__(cache=cache, ledger=ledger, log_path=log_path)
        self.name, self.model, self.base_url = model, model, base_url
        self.concurrency, self.timeout = concurrency, timeout
        self.max_retries, self.max_parse_retries = max_retries, max_parse_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._secret = os.environ.get(api_key_env) or ""
        self._client = openai.OpenAI(base_url=base_url, api_key=self._secret or "EMPTY", max_retries=0,
                                     timeout=timeout)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret and len(self._secret) >= 4 else text

    def preflight(self, timeout: float = 5.0, retries: int = 2) -> None:
        """One cheap call (``models.list``, else a 1-token chat) so a dead judge fails before hours of training.

        Transient errors (timeouts, 429, 5xx, refused connections) are retried with the client's backoff, at most
        ``retries`` times (a few seconds), so one hiccup does not fail a run."""
        import openai

        where = self.base_url or "api.openai.com"
        client = self._client.with_options(timeout=timeout, max_retries=0)

        def attempt(call, what: str):
            for n in range(1, max(0, min(retries, self.max_retries)) + 2):
                try:
                    return call()
                except openai.NotFoundError:
                    if not what:
                        raise
                    raise UserError(f"judge at {where} did not answer{what}: NotFoundError: the model is not "
                                    "served there (check --judge-model)") from None
                except Exception as e:  # noqa: BLE001 - every failure here means "the judge is not usable"
                    retry, after = self._retryable(e)
                    if retry and n <= min(retries, self.max_retries):
                        self._sleep(n, after)
                        continue
                    raise UserError(f"judge at {where} did not answer{what}: {type(e).__name__}: "
                                    f"{self._scrub(str(e)).splitlines()[0] if str(e) else ''}") from None

        try:
            ids = [m.id for m in attempt(lambda: list(client.models.list()), "")]
            if self.model in ids:
                return
        except openai.NotFoundError:
            pass  # some servers have no /models; the chat call below decides
        attempt(lambda: client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1, temperature=0),
            f" for model {self.model!r}")

    def _sleep(self, attempt: int, after: float | None) -> None:
        """Exponential backoff with full jitter, at least ``Retry-After`` when the server sent one."""
        delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
        time.sleep(max(delay, min(after or 0.0, self.backoff_max)))

    def _retryable(self, e: Exception) -> tuple[bool, float | None]:
        import openai

        if isinstance(e, openai.RateLimitError):
            after = e.response.headers.get("retry-after") if e.response is not None else None
            try:
                return True, float(after) if after is not None else None
            except ValueError:
                return True, None
        if isinstance(e, openai.APIStatusError):
            return e.status_code >= 500, None
        return isinstance(e, (openai.APITimeoutError, openai.APIConnectionError)), None

    def _call(self, req: JudgeRequest, repeat: int):
        import openai

        error = None
        for attempt in range(1, self.max_retries + 2):
            t0 = time.perf_counter()
            entry = {"time": time.time(), "judge": self.model, "task": req.task, "example_id": req.example_id,
                     "turn": req.turn, "repeat": repeat, "form": req.form, "attempt": attempt,
                     "messages": req.messages, "temperature": req.temperature, "max_tokens": req.max_tokens}
            extra = {"logprobs": True, "top_logprobs": req.logprobs} if req.logprobs else {}
            try:
                resp = self._client.chat.completions.create(
                    model=self.model, messages=req.messages, temperature=req.temperature, max_tokens=req.max_tokens,
                    **extra)
            except Exception as e:  # noqa: BLE001 - classified below; unknown errors are recorded, not raised
                error = f"{type(e).__name__}: {self._scrub(str(e))}"
                self._log({**entry, "raw": None, "usage": None, "latency_s": time.perf_counter() - t0,
                           "error": error})
                retry, after = self._retryable(e)
                if not retry or attempt > self.max_retries:
                    if retry or not isinstance(e, openai.APIStatusError):
                        return None, {}, CallError("transport", f"gave up after {attempt} attempts: {error}"), attempt
                    return None, {}, CallError("refused", error), attempt
                self._sleep(attempt, after)
                continue
            if not resp.choices:  # a 200 without an answer: the server cannot serve this request at all
                error = "the reply has no choices (HTTP 200 with an empty 'choices' list)"
                self._log({**entry, "raw": None, "usage": None, "latency_s": time.perf_counter() - t0, "error": error})
                return None, {}, CallError("refused", error), attempt
            raw = resp.choices[0].message.content
            if req.logprobs:
                raw = {"text": raw, "top_logprobs": _top_logprobs(resp.choices[0])}
            usage = {"prompt_tokens": getattr(resp.usage, "prompt_tokens", 0) or 0,
                     "completion_tokens": getattr(resp.usage, "completion_tokens", 0) or 0}
            self._log({**entry, "raw": raw, "usage": usage, "latency_s": time.perf_counter() - t0, "error": None})
            if self.ledger is not None:
                self.ledger.add(self.model, usage)
            return raw, usage, None, attempt
        return None, {}, error, self.max_retries + 1  # unreachable: the loop returns


def _top_logprobs(choice) -> list[dict]:
    """The first generated token's top log-probabilities as [{token, logprob}] (empty when the server sent none)."""
    content = getattr(getattr(choice, "logprobs", None), "content", None) or []
    if not content:
        return []
    return [{"token": t.token, "logprob": float(t.logprob)} for t in (content[0].top_logprobs or [])]

"""Judge requests, verdicts, and the OpenAI-compatible judge client.

The client talks to any OpenAI-compatible chat endpoint through the ``openai`` package, with our own retry loop
(the client's built-in retries are off so that every attempt is counted and logged): exponential backoff with
full jitter on 429, 5xx, timeouts and connection errors, honouring ``Retry-After``. A reply the parser cannot read
is asked again up to ``max_parse_retries`` times and then recorded as a failure with its raw text; failures are
never scored and never cached, so a re-run asks exactly them again.

Every failure has a category (:data:`FAILURES`): ``transport`` (no reply after all retries: timeouts,
connection errors, 429/5xx), ``malformed`` (an HTTP 200 that is not a chat completion, after all retries: an HTML
page from a captive portal or proxy, invalid JSON, a choice without a message, unreadable log-probabilities),
``unparsable`` (replies the parser cannot read), ``refused`` (the endpoint rejects the request itself:
400/401/403/404, or a 200 reply with an empty ``choices`` list). A refusal would repeat on every call (revoked key,
unknown model), so it is fatal: :meth:`BaseJudge.judge_many` stops and raises :class:`JudgeRefused` before anything
is written - except a 400 about the request itself (a prompt longer than the judge's context), which fails only
that verdict. A reply whose ``usage`` cannot be read keeps its verdict; its tokens count as unknown, so the cost
ledger reports the cost as unknown rather than too low. The API key is read from the environment variable named
by ``api_key_env`` and never written anywhere: it is scrubbed from every error message that reaches a log or a
record.

Ctrl-C while judging cancels every queued request (never sent) and waits for the ones in flight, whose verdicts
are cached; a second Ctrl-C stops at once, abandoning those in flight. Either way :class:`~core.errors.Interrupted`
says what was kept, and a re-run asks only the rest.
"""
from __future__ import annotations

import json
import math
import os
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from core.errors import Interrupted, UserError, first_line
from core.io import hash_obj

from ..rundir.judgments import FAILURES, JudgeLog, JudgeLogEntry, Verdict  # noqa: F401 (re-exported)

CACHE_KIND = "judge"


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


def cache_key(judge: str, req: JudgeRequest, repeat: int) -> str:
    """Content address of a judgment: judge model, full messages, settings, repeat index (not the URL)."""
    key = {"judge": judge, "messages": req.messages, "temperature": req.temperature, "max_tokens": req.max_tokens,
           "repeat": repeat}
    if req.logprobs:  # only then, so keys of earlier text-only judgments stay valid
        key["logprobs"] = req.logprobs
    return hash_obj(key, n=32)


# A 400 about this one request (its prompt is longer than the judge's context), not about the key, model or URL:
# a failed verdict like any other, not a reason to stop the whole judging.
_REQUEST_SPECIFIC = ("context length", "context_length", "maximum context", "too long", "too many tokens",
                     "reduce the length", "input length")


def fatal(v: "Verdict") -> bool:
    """Whether a failed verdict means every other call would fail too (a refusal of the key, model or endpoint)."""
    return v.failure == "refused" and not any(m in (v.error or "").lower() for m in _REQUEST_SPECIFIC)


class MalformedReply(Exception):
    """An HTTP 200 whose body is not a usable chat completion (the message says what it is instead)."""


class BaseJudge:
    """Shared driver: dedup, cache lookup, a bounded pool of worker threads, progress, ordering of verdicts.

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
        self._judge_log = JudgeLog(self.log_path) if self.log_path else None
        self._stop = threading.Event()  # set on Ctrl-C or a refusal: workers take no new request, retries end
        self.verdicts_made = 0  # verdicts this judge produced (cache hits excluded), for closing summaries
        self.verdicts_cached = 0  # verdicts served from the cache

    # -- public -----------------------------------------------------------------------------------------------
    def judge_many(self, requests: list[JudgeRequest], repeats: int = 1, progress: bool = True) -> list[Verdict]:
        """Judge every request ``repeats`` times; returns verdicts ordered request-major, repeat-minor.

        Identical (request, repeat) pairs are judged once; cached successes make no call.
        """
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
        self.verdicts_cached += len(unique) - len(todo)
        bar = tqdm(total=len(todo), desc=f"judge {self.name}", disable=not progress or not todo)
        try:
            refused = self._run_pool(todo, unique, results, bar)
        finally:
            bar.close()
            self.verdicts_made += sum(1 for k in todo if k in results)
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

    # -- the worker pool --------------------------------------------------------------------------------------
    def _run_pool(self, todo: list[str], unique: dict, results: dict, bar) -> Verdict | None:
        """Judge ``todo`` on daemon worker threads; fill ``results``; return the first refusal (which stops the
        rest), else None. Daemon threads, so that a second Ctrl-C can end the process without waiting for them;
        the main thread waits on a queue in short steps (never ``Thread.join``, which a Ctrl-C can leave
        believing a live thread has ended), so Ctrl-C reaches it at once."""
        self._stop.clear()
        if not todo:
            return None
        jobs: queue.SimpleQueue = queue.SimpleQueue()
        for k in todo:
            jobs.put(k)
        done: queue.SimpleQueue = queue.SimpleQueue()  # (key, verdict or exception); (None, None) = a worker ended
        pool = {"workers": min(max(1, self.concurrency), len(todo)), "ended": 0, "busy": 0, "answered": 0,
                "cancelled": 0}
        lock = threading.Lock()

        def work() -> None:
            try:
                while not self._stop.is_set():
                    try:
                        k = jobs.get_nowait()
                    except queue.Empty:
                        return
                    with lock:
                        pool["busy"] += 1
                    try:
                        v = self._judge_one(*unique[k], key=k)
                    except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
                        v = e
                    if isinstance(v, Verdict) and fatal(v):
                        self._stop.set()  # here, not only when the main thread sees it: no worker takes another
                    with lock:  # counted here, not by the main thread, which a Ctrl-C may stop between two lines
                        pool["busy"] -= 1
                        pool["answered"] += isinstance(v, Verdict) and not v.failed
                    done.put((k, v))
            finally:
                done.put((None, None))

        for i in range(pool["workers"]):
            threading.Thread(target=work, name=f"judge-{i}", daemon=True).start()
        refused: Verdict | None = None

        def take(k, v) -> Verdict | None:
            if k is None:
                pool["ended"] += 1
                return None
            if isinstance(v, BaseException):
                self._stop.set()
                raise v
            results[k] = v
            bar.update(1)
            return v

        try:
            while pool["ended"] < pool["workers"]:
                v = take(*_get_interruptibly(done))
                if v is not None and fatal(v) and refused is None:
                    refused = v
                    self._stop.set()  # every other call would be refused too: do not send them
        except KeyboardInterrupt:
            bar.close()
            self._interrupted(jobs, done, take, pool, lock)
        return refused

    def _interrupted(self, jobs, done, take, pool: dict, lock) -> None:
        """Ctrl-C: cancel the queued requests, wait for those in flight (a second Ctrl-C: don't); raise
        :class:`Interrupted` saying what was kept."""
        self._stop.set()
        while True:
            try:
                jobs.get_nowait()
                pool["cancelled"] += 1
            except queue.Empty:
                break
        with lock:
            flying = pool["busy"]
        if flying:
            print(f"bench: interrupted: {pool['cancelled']} queued judge requests cancelled (never sent); waiting "
                  f"for {flying} in flight so their verdicts are kept - Ctrl-C again to stop at once",
                  file=sys.stderr, flush=True)
        try:
            while pool["ended"] < pool["workers"]:
                take(*_get_interruptibly(done))
        except KeyboardInterrupt:
            with lock:
                flying = pool["busy"]
            raise Interrupted(
                f"stopped at once: {flying} judge requests in flight abandoned (a paid API may still bill them), "
                f"{pool['cancelled']} queued requests never sent; {pool['answered']} verdicts answered in this call "
                "are kept in the cache - re-run the same command to ask only the rest") from None
        raise Interrupted(f"interrupted: {pool['answered']} judge verdicts answered in this call are kept in the "
                          f"cache; {pool['cancelled']} queued requests cancelled (never sent); re-run the same "
                          "command to ask only the rest") from None

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
        if not isinstance(hit, dict) or "raw" not in hit:
            return None  # absent, or an entry in a shape this version cannot use: asked again
        try:
            score = req.parse(hit["raw"])  # re-parse: a changed parser must not reuse stale numbers
        except Exception:  # noqa: BLE001 - same as a miss
            score = None
        if score is None:
            return None
        usage = hit.get("usage") if isinstance(hit.get("usage"), dict) else {"prompt_tokens": 0,
                                                                            "completion_tokens": 0}
        return self._verdict(req, repeat, score=score, failed=False, raw=hit["raw"], usage=usage, cached=True)

    def _judge_one(self, req: JudgeRequest, repeat: int, key: str) -> Verdict:
        usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0}
        raw, error, attempts, t0 = None, None, 0, time.perf_counter()
        for _ in range(self.max_parse_retries + 1):
            if attempts and self._stop.is_set():
                break  # interrupted: no re-ask
            raw, u, error, n = self._call(req, repeat)
            attempts += n
            usage = {k: usage[k] + (u.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}
            if u.get("unknown") or usage.get("unknown"):
                usage["unknown"] = True
            if error is not None:
                category = error.category if isinstance(error, CallError) else "transport"
                return self._verdict(req, repeat, score=None, failed=True, raw=raw, error=str(error), usage=usage,
                                     attempts=attempts, latency_s=time.perf_counter() - t0, failure=category)
            try:
                score = req.parse(raw)
            except Exception:  # noqa: BLE001 - a reply shape the parser did not expect is a reply it cannot read
                score = None
            if score is not None and not (isinstance(score, float) and math.isnan(score)):
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

    def _log(self, entry: JudgeLogEntry) -> None:
        """One attempt into the judge log (``judge_log.jsonl``, :class:`~bench.rundir.judgments.JudgeLog`)."""
        if self._judge_log is not None:
            self._judge_log.append(entry)


class OpenAIJudge(BaseJudge):
    """A judge behind any OpenAI-compatible chat-completions endpoint."""

    kind = "llm"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 60, max_retries: int = 6, max_parse_retries: int = 2,
                 cache=None, ledger=None, log_path: str | os.PathLike | None = None,
                 backoff_base: float = 0.5, backoff_max: float = 30.0):
        import openai  # ~0.5 s to import: paid only by a judge that calls an API

        super().__init__(cache=cache, ledger=ledger, log_path=log_path)
        self.name, self.model, self.base_url = model, model, base_url
        self.concurrency, self.timeout = concurrency, timeout
        self.max_retries, self.max_parse_retries = max_retries, max_parse_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._secret = os.environ.get(api_key_env) or ""
        try:
            self._client = openai.OpenAI(base_url=base_url, api_key=self._secret or "EMPTY", max_retries=0,
                                         timeout=timeout)
        except Exception as e:  # noqa: BLE001 - a malformed URL, whatever the HTTP library calls it
            raise UserError(f"judge base URL {base_url!r}: {first_line(e)}") from None

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret and len(self._secret) >= 4 else text

    def preflight(self, timeout: float = 5.0, retries: int = 2) -> None:
        """One cheap call (``models.list``, else a 1-token chat) so a dead judge fails before hours of training.

        Transient errors (timeouts, 429, 5xx, refused connections) are retried with the client's backoff, at most
        ``retries`` times (a few seconds), so one hiccup does not fail a run. An endpoint that answers with
        something other than the OpenAI API (an HTML page from a captive portal or proxy login) fails here too."""
        import openai  # ~0.5 s to import: paid only by a judge that calls an API

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
                except MalformedReply as e:
                    raise UserError(f"judge at {where} did not answer{what} with the OpenAI API: {e}") from None
                except Exception as e:  # noqa: BLE001 - every failure here means "the judge is not usable"
                    retry, after = self._retryable(e)
                    if retry and n <= min(retries, self.max_retries):
                        self._sleep(n, after)
                        continue
                    raise UserError(f"judge at {where} did not answer{what}: {type(e).__name__}: "
                                    f"{first_line(self._scrub(str(e))) if str(e) else ''}") from None

        def models() -> list[str]:
            page = _parsed(client.models.with_raw_response.list())
            data = _get(page, "data")
            if not isinstance(data, list):
                raise MalformedReply("GET /models gave no 'data' list")
            return [str(_get(m, "id")) for m in data]

        try:
            if self.model in attempt(models, ""):
                return
        except openai.NotFoundError:
            pass  # some servers have no /models; the chat call below decides
        attempt(lambda: read_reply(_parsed(client.chat.completions.with_raw_response.create(
            model=self.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1, temperature=0)), False),
            f" for model {self.model!r}")

    def _sleep(self, attempt: int, after: float | None) -> None:
        """Exponential backoff with full jitter, at least ``Retry-After`` when the server sent one; cut short by
        an interrupt (the caller then stops retrying)."""
        delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
        self._stop.wait(max(delay, min(after or 0.0, self.backoff_max)))

    def _retryable(self, e: Exception) -> tuple[bool, float | None]:
        import openai  # ~0.5 s to import: paid only by a judge that calls an API

        if isinstance(e, openai.RateLimitError):
            after = e.response.headers.get("retry-after") if e.response is not None else None
            try:
                return True, float(after) if after is not None else None
            except ValueError:
                return True, None
        if isinstance(e, openai.APIStatusError):
            return e.status_code >= 500, None
        return isinstance(e, (openai.APITimeoutError, openai.APIConnectionError, MalformedReply)), None

    def _call(self, req: JudgeRequest, repeat: int):
        import openai  # ~0.5 s to import: paid only by a judge that calls an API

        error = None
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1 and self._stop.is_set():  # interrupted (or refused elsewhere): no more attempts
                return None, {}, CallError("transport", f"stopped after {attempt - 1} attempts: {error}"), attempt - 1
            t0 = time.perf_counter()
            entry = dict(time=time.time(), judge=self.model, task=req.task, example_id=req.example_id, turn=req.turn,
                         repeat=repeat, form=req.form, attempt=attempt, messages=req.messages,
                         temperature=req.temperature, max_tokens=req.max_tokens)
            extra = {"logprobs": True, "top_logprobs": req.logprobs} if req.logprobs else {}
            try:
                resp = _parsed(self._client.chat.completions.with_raw_response.create(
                    model=self.model, messages=req.messages, temperature=req.temperature, max_tokens=req.max_tokens,
                    **extra))
                if _get(resp, "choices") == []:  # a 200 without an answer: the server cannot serve this request
                    error = "the reply has no choices (HTTP 200 with an empty 'choices' list)"
                    self._log(JudgeLogEntry(**entry, latency_s=time.perf_counter() - t0, error=error))
                    return None, {}, CallError("refused", error), attempt
                raw, usage = read_reply(resp, bool(req.logprobs))
            except Exception as e:  # noqa: BLE001 - classified below; unknown errors are recorded, not raised
                malformed = isinstance(e, MalformedReply)
                error = f"{'malformed reply' if malformed else type(e).__name__}: {self._scrub(str(e))}"
                self._log(JudgeLogEntry(**entry, latency_s=time.perf_counter() - t0, error=error))
                retry, after = self._retryable(e)
                if not retry or attempt > self.max_retries:
                    if malformed:
                        return None, {}, CallError("malformed", f"gave up after {attempt} attempts: {error}"), attempt
                    if retry or not isinstance(e, openai.APIStatusError):
                        return None, {}, CallError("transport", f"gave up after {attempt} attempts: {error}"), attempt
                    return None, {}, CallError("refused", error), attempt
                self._sleep(attempt, after)
                continue
            self._log(JudgeLogEntry(**entry, raw=raw, usage=usage, latency_s=time.perf_counter() - t0))
            if self.ledger is not None:
                self.ledger.add(self.model, usage)
            return raw, usage, None, attempt
        return None, {}, error, self.max_retries + 1  # unreachable: the loop returns


def _get_interruptibly(q: queue.SimpleQueue):
    """``q.get()`` in short waits: a wait without a timeout would hold Ctrl-C back until an item arrives."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def _get(obj: Any, name: str) -> Any:
    """A field of a reply object, whether the client built a model, left a dict, or the field is absent."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _parsed(raw_response) -> Any:
    """The parsed body of an ``openai`` raw response; a body that is not JSON is a :class:`MalformedReply` naming
    what it is (an HTML page says "captive portal or proxy")."""
    http = getattr(raw_response, "http_response", None)
    if http is not None and "json" not in http.headers.get("content-type", ""):
        try:
            json.loads(http.text)
        except ValueError:
            _not_json(http.status_code, http.headers.get("content-type", "?"), http.text)
    try:
        body = raw_response.parse()
    except ValueError as e:  # JSON content type, invalid JSON
        raise MalformedReply(f"the body is not valid JSON ({first_line(e, 80)})") from None
    except (AttributeError, TypeError, KeyError) as e:  # JSON the client cannot build its objects from
        raise MalformedReply(f"a body the OpenAI client cannot read ({type(e).__name__}: {first_line(e, 80)})"
                             ) from None
    if isinstance(body, (str, bytes)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        _not_json(raw_response.status_code, raw_response.headers.get("content-type", "?"), text)
    return body


def _not_json(status: int, content_type: str, text: str):
    head = " ".join(text[:400].split()).lower()
    html = "<html" in head or "<!doctype" in head
    what = "an HTML page" if html else f"{content_type.split(';')[0]} that is not JSON"
    snippet = " ".join(text.split())[:60]
    raise MalformedReply(f"HTTP {status} with {what} ({snippet!r}), not a chat completion - a captive portal, a "
                         "proxy login or a wrong --judge-base-url?")


def usage_count(x: Any) -> int | None:
    """A token count of a reply's ``usage`` as an int, or None when the server sent something that is not a count
    (a string, a negative or fractional number, NaN, a bool)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x if x >= 0 else None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f >= 0 and f == int(f) else None


def read_reply(resp: Any, logprobs: bool) -> tuple[str | dict | None, dict]:
    """(raw verdict, usage) of a chat completion; :class:`MalformedReply` when it has no usable answer.

    ``raw`` is the message text (None when the model sent none: the parser then fails it as unparsable), or with
    ``logprobs`` ``{"text", "top_logprobs"}``. Usage that is absent or not numeric gives 0 tokens and
    ``"unknown": True`` (the verdict stands; the cost ledger reports an unknown cost)."""
    choices = _get(resp, "choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply(f"the reply has no 'choices' list ({type(resp).__name__})")
    message = _get(choices[0], "message")
    if message is None:
        raise MalformedReply("the first choice has no 'message'")
    content = _get(message, "content")
    if content is not None and not isinstance(content, str):
        raise MalformedReply(f"the message content is {type(content).__name__}, not text")
    raw: str | dict | None = content
    if logprobs:
        raw = {"text": content, "top_logprobs": _top_logprobs(choices[0])}
    u = _get(resp, "usage")
    counts = {k: usage_count(_get(u, k)) if u is not None else None for k in ("prompt_tokens", "completion_tokens")}
    usage: dict[str, Any] = {k: v or 0 for k, v in counts.items()}
    if any(v is None for v in counts.values()):
        usage["unknown"] = True
    return raw, usage


def _top_logprobs(choice) -> list[dict]:
    """The first generated token's top log-probabilities as [{token, logprob}] (empty when the server sent none)."""
    content = _get(_get(choice, "logprobs"), "content") or []
    if not isinstance(content, list):
        raise MalformedReply("the choice's logprobs.content is not a list")
    if not content:
        return []
    top = _get(content[0], "top_logprobs") or []
    if not isinstance(top, list):
        raise MalformedReply("top_logprobs is not a list")
    out = []
    for t in top:
        token, logprob = _get(t, "token"), _get(t, "logprob")
        try:
            value = float(logprob)
        except (TypeError, ValueError):
            raise MalformedReply(f"a top_logprobs entry has a non-numeric logprob ({logprob!r})") from None
        if not isinstance(token, str) or math.isnan(value):
            raise MalformedReply("a top_logprobs entry has no token or a NaN logprob")
        out.append({"token": token, "logprob": value})
    return out

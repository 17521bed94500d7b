"""One interface for every generation backend (hf, vllm): chat generation and option log-likelihoods."""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GenSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenRequest:
    """One chat completion: ``messages`` is a list of {"role", "content"} rendered with the model's chat template."""

    task: str
    example_id: str
    turn: int
    messages: list[dict]
    settings: GenSettings = field(default_factory=GenSettings)


@dataclass
class Generation:
    text: str
    prompt_tokens: int  # the prompt tokens the model saw (after any cut to its context)
    completion_tokens: int
    prompt_cut: int = 0  # prompt tokens dropped from the left to fit the model's context (see fit_prompt)
    max_new_tokens: int | None = None  # set when the context capped the answer below the task's max_new_tokens


def fit_prompt(ids: list[int], context: int, max_new_tokens: int) -> tuple[list[int], int, int]:
    """``(prompt ids, tokens cut from its left, max_new_tokens)`` so that prompt + answer fit ``context`` positions.

    lm-eval's rule for generation: an over-long prompt keeps its last ``context - max_new_tokens`` tokens (the end
    of the conversation and the assistant's turn opening). So that a long ``max_new_tokens`` does not leave the
    prompt nearly nothing, the prompt keeps at least half the context (or all of itself, if shorter); the answer is
    then capped to the rest. Both backends use this; callers count and report every cut."""
    if context <= 0 or len(ids) + max_new_tokens <= context:
        return ids, 0, max_new_tokens
    keep = min(len(ids), max(context - max_new_tokens, context // 2))
    return ids[len(ids) - keep:], len(ids) - keep, min(max_new_tokens, context - keep)


@dataclass
class LoglikRequest:
    """Log-likelihood of each continuation given a context (already a rendered prompt string)."""

    example_id: str
    context: str
    continuations: list[str]


class Backend(Protocol):
    name: str

    def generate(self, requests: list[GenRequest]) -> list[Generation]: ...

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[list[float]]:
        """Summed log-probability of each continuation's tokens given the context."""
        ...


def takes_on_result(backend: Backend) -> bool:
    """Whether ``backend.generate`` accepts ``on_result`` (a callback per finished generation, so a caller can keep
    each batch as it completes)."""
    try:
        params = inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return False
    return "on_result" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

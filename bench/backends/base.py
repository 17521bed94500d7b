"""One interface for every generation backend (hf, vllm): chat generation and option log-likelihoods."""
from __future__ import annotations

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
    prompt_tokens: int
    completion_tokens: int


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

"""The scorer protocol: one object per benchmark kind owns it end to end, as lm-eval's ``output_type`` and
Inspect AI's solver/scorer pair do:

- its items: which normalised fields an item of its kind holds (:meth:`Scorer.prepare_item`);
- its model requests: what the model must answer per item - a generation (:class:`GenRequest`), the
  log-likelihoods of continuations (:class:`LoglikRequest`), step by step when a later request needs an earlier
  answer (a chat's second turn) - :meth:`Scorer.model_requests`; the generation step (:mod:`bench.generate`) only
  executes them against a backend and stores the answers with the fields :meth:`Scorer.generation_fields` adds;
- its judge requests, verdict parsing, per-item values, aggregation (metric names, units, direction) and call count.

The pipeline, ``bench generate``/``bench judge`` ask the scorer; nothing else branches on a benchmark's kind.
Reporting (``bench table``, ``bench view``) never imports the scorers: it reads what the score stage recorded from
them in the task summary - the headline metric (``metric_shown``, the scorer's :attr:`Scorer.primary`), each
:class:`Metric`'s unit, whether it is stored as a fraction and which item values stand behind it (``metric_units``:
``unit``, ``fraction``, ``items``), and the first turn's number (``turn_base``) - and the generations records'
fields (a text record's ``pred``, its gold ``answer``). Adding a benchmark of a new kind = one scorer module + one
task YAML (README, "Add a benchmark of a new kind"); the base classes of the built-in kinds are
:class:`~bench.scorers.chat.ChatScorer` (judged conversations), :class:`~bench.scorers.mcq.MCQScorer` and
:class:`~bench.scorers.exact.ShortAnswerScorer`.

What a scorer reads is typed (:mod:`bench.rundir`): each answered model request is a
:class:`~bench.rundir.generations.GenerationRecord` (``example_id``, ``turn``, ``category``, ``text`` or ``logliks``,
the gold ``answer``, the turn's ``reference``, and the scorer's own per-request ``values`` from
:meth:`Scorer.generation_fields`); each judgment is a :class:`~bench.rundir.judgments.Verdict` (``example_id``,
``turn``, ``repeat``, ``judge``, ``score`` (float or None), ``failed``, ``failure``, ``raw``, ``meta`` (e.g. MT-Bench
``category``, AlpacaEval ``swapped``), ...). Items stay the task's mapped dicts (``id``, ``category`` and the fields
:meth:`Scorer.prepare_item` normalised).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Union

from core.errors import UserError

from bench import reliability as rel
from bench.backends.base import Generation, GenRequest, GenSettings, LoglikRequest
from bench.judge import JudgeConfig, JudgeRequest, load_judge_config
from bench.rundir.generations import GenerationRecord
from bench.rundir.judgments import Verdict


class Task(Protocol):
    """What a scorer reads of the task it scores (a :class:`bench.tasks.Task`): named here, not imported, since
    ``bench.tasks`` asks the scorers for their kind (importing it back would close a circle)."""

    name: str
    kind: str
    prompt: str | None
    chat_template: bool
    mcq_mode: str
    reference_categories: list[str] | None
    n_turns: int
    target_delimiter: str

    def item_labels(self, item: dict) -> list[str | None]: ...

    def render_prompt(self, item: dict) -> str: ...

    def continuations(self, item: dict) -> list[str]: ...

    def messages(self, item: dict, turn: int = 0, answers: list[str] = ()) -> list[dict]: ...

    def settings(self, item: dict | None = None, override: dict | None = None) -> GenSettings: ...


@dataclass(frozen=True)
class Metric:
    """One reported number: its key in the score summary, how tables label it, and what it means in its peer."""

    name: str
    label: str
    definition: str
    unit: str = ""  # "%" (stored 0-1 and shown x100 when ``fraction``), "1-10", "chars", ...
    higher_is_better: bool = True
    per_item: bool = True  # has per-item values (so tables can bootstrap a CI and pair items for deltas)
    fraction: bool = False  # stored as 0-1, shown in percent
    # which lines of the item values stand behind it, when ``per_item``: "all" (every line's ``value``: the item
    # values a scorer returns are its primary metric's), "turn" (the lines of turn N, for a metric named ``turn<N>``)
    # or "category"; recorded in the task summary (``metric_units``), so reporting needs no kind
    items: str = "all"

    def __post_init__(self):
        if self.items not in ("all", "turn", "category"):
            raise ValueError(f"metric {self.name!r}: items is {self.items!r}, not all, turn or category")

    @property
    def item_selection(self) -> str:
        """What the task summary records as this metric's ``items``: its selection, or "none" without items."""
        return self.items if self.per_item else "none"


ModelRequest = Union[GenRequest, LoglikRequest]
Answer = Union[Generation, list]  # a generation, or one log-likelihood per continuation


@dataclass(frozen=True)
class RequestOptions:
    """What a scorer may use to build its model requests besides the task and the item."""

    # generation overrides of the command line / run config: GenSettings fields, ``greedy`` and kind-specific
    # switches (``mcq_mode``); give them to :meth:`Task.settings`, which knows the GenSettings fields
    settings: dict = field(default_factory=dict)
    # the backend's chat template (messages -> prompt string), for a log-likelihood context in chat form; None when
    # requests are only built to check that every item renders (validation, before any model is loaded)
    chat_prompt: Callable[[list[dict]], str] | None = None


@dataclass
class ScoreResult:
    """What a scorer returns: the summary metrics, the per-item values behind them, and summary fields
    (``n_items``, ``n_failed``, ``protocol``, notes such as ``lc_note``)."""

    metrics: dict[str, Any]
    items: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Scorer:
    """Base class. Subclasses set the class attributes and override what applies to them."""

    name: str = ""
    version: str = "1"  # bump when a change alters the numbers: it is part of the score stage's key
    judged: bool = False  # needs a judge (a chat task)
    judge_config: str | None = None  # judge config name (``bench/judge/configs``)
    text_judge_config: str | None = None  # config for judges without log-probabilities (flagged when used)
    metrics: tuple[Metric, ...] = ()
    primary: str = ""  # the headline metric (every summary records it as ``metric_shown``)
    # the number of a conversation's first turn in its verdicts and item values (generations records count from 0;
    # FastChat numbers judged turns from 1); recorded in the task summary for `bench view`
    turn_base: int = 0
    repeat_combine: str = "median"  # how judge repeats of one item become its value ("median" or "mean")
    pairwise: bool = False  # scores a variant against another variant's generations (``versus``)
    pairwise_scorer: str | None = None  # the scorer that replaces this one under ``judge.mode: pairwise``
    # the task kind it scores (empty: the scorer's name): a task YAML's ``kind:`` (default: its scorer's), the shape
    # of its items and what the model is asked
    kind: str = ""
    # the item fields `bench contamination` compares with the training data unless the task YAML lists its own
    contamination_fields: tuple[str, ...] = ("question", "answer")

    # -- items and model requests (what `bench generate` / the generate stage execute) ---------------------------
    def prepare_item(self, task: "Task", item: dict, where: str) -> None:
        """Check and normalise, in place, the fields an item of this kind needs (``item`` holds the task's mapped
        fields, ``id`` and ``category``); a bad one is a :class:`UserError` starting with ``where``."""

    def model_requests(self, task: "Task", item: dict, step: int, answers: list[Answer],
                       options: RequestOptions) -> list[ModelRequest]:
        """The requests ``item`` needs answered at ``step`` (0, 1, ...), given its ``answers`` so far (one per
        earlier request, in order); ``[]`` once it needs no more. Each step's requests of every item run as one
        batch, so a step may depend on earlier answers (a chat's turn 2 on the model's turn-1 answer)."""
        raise NotImplementedError(f"scorer {self.name!r} makes no model requests")

    def generation_fields(self, task: "Task", item: dict, request: ModelRequest, answer: Answer,
                          options: RequestOptions) -> dict:
        """This scorer's fields of one answered request's generations record (gold answer, per-request values
        such as ``acc``), beside the ones every record has (:class:`bench.rundir.generations.GenerationRecord`)."""
        return {}

    def n_generations(self, task: "Task", items: list[dict] | None, n_items: int) -> int:
        """Model requests a run of this task makes (for plans); by default one per item."""
        return n_items

    def check_item(self, task: "Task", item: dict) -> None:
        """Build every request of ``item`` (placeholder answers, no backend), so a template that cannot render
        fails before any model loads (validation)."""
        options, answers, step = RequestOptions(), [], 0
        while reqs := self.model_requests(task, item, step, answers, options):
            answers += [Generation("", 0, 0) if isinstance(r, GenRequest) else [0.0] * len(r.continuations)
                        for r in reqs]
            step += 1

    # -- judge --------------------------------------------------------------------------------------------------
    def config_name(self, text_verdicts: bool = False) -> str | None:
        """The judge config this scorer uses (the text-verdict one when asked and available)."""
        return self.text_judge_config if text_verdicts and self.text_judge_config else self.judge_config

    def load_config(self, text_verdicts: bool = False, prompts: str | None = None,
                    alpaca_eval_prompt: str | None = None) -> "JudgeConfig":
        """The judge config, its prompt files taken from these paths first (``None``: the environment's, then the
        package's or a pinned download): FastChat's ``judge_prompts.jsonl``, alpaca_eval's ``alpaca_eval_clf.txt``."""
        name = self.config_name(text_verdicts)
        if name is None:
            raise UserError(f"scorer {self.name!r} needs no judge")
        return load_judge_config(name, {"FASTCHAT_JUDGE_PROMPTS": prompts, "ALPACA_EVAL_PROMPT": alpaca_eval_prompt})

    def select_items(self, task: "Task", items: list[dict], judge_kind: str | None) -> list[dict]:
        """The items this scorer can score with this kind of judge (default: all)."""
        return items

    def requests(self, task: "Task", items: list[dict], generations: list[GenerationRecord], config: "JudgeConfig",
                 judge_kind: str) -> list["JudgeRequest"]:
        """The judge requests for a (variant, task)'s generations; empty for unjudged scorers."""
        return []

    def n_judge_calls(self, task: "Task", items: list[dict] | None, n_items: int, repeats: int) -> int:
        """Judge calls a run of this task makes (for plans and cost estimates)."""
        return 0

    # -- scoring ------------------------------------------------------------------------------------------------
    def score(self, task: "Task", items: list[dict], generations: list[GenerationRecord],
              verdicts: list[Verdict] = (), config: "JudgeConfig | None" = None) -> ScoreResult:
        """The metrics of one (variant, task) from its generations records and, for judged scorers, its verdicts
        (in the order :meth:`requests` asked them, every repeat)."""
        raise NotImplementedError

    def reliability(self, task: "Task", items: list[dict], generations: list[GenerationRecord],
                    verdicts: list[Verdict], versus: dict | None = None) -> dict:
        """The judge's reliability on this task (:mod:`bench.reliability`); by default repeat noise over the
        per-(item, turn) scores and failures, with no pairs to measure position or length bias on."""
        return {"repeats": rel.repeat_stats(repeat_values(verdicts), max_repeats(verdicts)),
                "position": rel.not_applicable("each verdict rates one answer; no pair is shown in two orders"),
                "length": rel.not_applicable("no pair of outputs is compared"), "failures": rel.failures(verdicts)}

    def protocol(self, config: "JudgeConfig | None" = None) -> str:
        """One line: which peer protocol the numbers follow (and whether they are comparable with it)."""
        return config.describe() if config is not None else self.name


def nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def repeat_values(verdicts: list[Verdict], value: Callable[[Verdict], float | None] = lambda v: v.score
                  ) -> dict[tuple, list[float]]:
    """(example_id, turn) -> the successful repeats' values, in repeat order."""
    out: dict[tuple, list[tuple[int, float]]] = {}
    for v in verdicts:
        x = None if v.failed else value(v)
        if x is not None:
            out.setdefault((v.example_id, int(v.turn)), []).append((int(v.repeat), float(x)))
    return {k: [x for _, x in sorted(vals)] for k, vals in out.items()}


def max_repeats(verdicts: list[Verdict]) -> int:
    """How many judge repeats the verdicts hold (the highest repeat index + 1; 1 when there are none)."""
    return max((int(v.repeat) for v in verdicts), default=0) + 1

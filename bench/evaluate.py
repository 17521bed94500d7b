"""The score stage's body: generation records of one (variant, task) -> judgments, a task summary, item values.

Writes, through :mod:`bench.rundir` (the format: docs/RUNDIR.md): ``judgments/<variant>/<task>.jsonl``, the task
summary ``scores/<variant>/<task>.json`` and its per-item values ``scores/<variant>/<task>.items.jsonl``.
The task's scorer (``bench.scorers``) decides what is asked of the judge and how verdicts become numbers; which
judge answers is the run's choice (``judge.model`` / ``judge.local`` / none = the reference rubric); its name, the
judge config, its prompt fingerprint and the scorer's protocol go into every summary.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import UserError
from sftmix.presets import resolve_model

from .config import JudgeArgs
from .judge.client import BaseJudge, JudgeRequest, OpenAIJudge
from .judge.local import LocalJudge
from .judge.reference import ReferenceJudge
from .rundir import FAILURES, ItemValues, Judgments, RunDir, TaskSummary, Verdict
from .rundir.generations import GenerationRecord
from .scorers import get_scorer
from .tasks import Task


def make_judge(args: JudgeArgs, cache=None, ledger=None, log_path: str | Path | None = None) -> BaseJudge:
    """The configured judge: an OpenAI-compatible LLM, an in-process local model, or the reference rubric."""
    if args.model:
        return OpenAIJudge(args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                           concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries,
                           cache=cache, ledger=ledger, log_path=log_path)
    if args.local:
        return LocalJudge(resolve_model(args.local), cache=cache, ledger=ledger, log_path=log_path)
    return ReferenceJudge(cache=cache, ledger=ledger, log_path=log_path)


def task_scorer(task: Task, args: JudgeArgs | None = None):
    """A task's scorer under these judge settings: its own, or its pairwise form under ``judge.mode: pairwise``."""
    scorer = get_scorer(task.scorer)
    if args is not None and args.mode == "pairwise" and scorer.pairwise_scorer:
        return get_scorer(scorer.pairwise_scorer)
    return scorer


def judge_config(task: Task, args: JudgeArgs | None = None):
    """The judge config a task's scorer uses under these judge settings (None for unjudged scorers)."""
    scorer = task_scorer(task, args)
    if not scorer.judged:
        return None
    args = args or JudgeArgs()
    config = scorer.load_config(text_verdicts=args.text_verdicts, prompts=args.prompts,
                                alpaca_eval_prompt=args.alpaca_eval_prompt)
    if args.swap and config.mode == "pairwise" and not scorer.pairwise:  # pairwise scorers play both orders anyway
        config = replace(config, both_orders=True)
    return config


def judge_requests(task: Task, items: list[dict], generations: list[GenerationRecord], judge: BaseJudge,
                   config=None, args: JudgeArgs | None = None, versus: dict | None = None) -> list[JudgeRequest]:
    """The judge requests a task's generations need (empty for unjudged scorers). ``versus`` (pairwise scorers):
    ``{"model_1", "model_2", "generations"}``, the other variant's generations to compare with."""
    scorer = task_scorer(task, args)
    if not scorer.judged:
        return []
    config = config or judge_config(task, args)
    items = scorer.select_items(task, items, judge.kind)
    if scorer.pairwise:
        return scorer.requests(task, items, generations, config, judge.kind, versus=versus)
    return scorer.requests(task, items, generations, config, judge.kind)


def evaluate_task(task: Task, items: list[dict], generations: list[GenerationRecord], judge: BaseJudge | None, *,
                  run_dir: Path, variant: str, meta: dict, repeats: int = 1, progress: bool = True,
                  judge_args: JudgeArgs | None = None, config=None, versus: dict | None = None) -> dict:
    """Judge (if the task's scorer needs it) and score one (variant, task); write judgments, the task summary and
    its item values; return the summary as written (a dict).

    ``config``: the judge config already loaded for these ``judge_args`` (the one the stage key was made from).
    ``versus``: for pairwise scorers, the variant compared with (see :func:`judge_requests`); None for its own row."""
    rd = RunDir(run_dir)
    scorer = task_scorer(task, judge_args)
    summary: dict[str, Any] = {"task": task.name, "variant": variant, "repeats": repeats, **meta,
                               "data_hash": task.data_hash, "prompt_hash": task.prompt_hash, "scorer": scorer.name,
                               "scorer_version": scorer.version}
    verdicts: list[Verdict] = []
    if scorer.judged:
        if judge is None:
            raise UserError(f"task {task.name}: scorer {scorer.name!r} needs a judge")
        config = config or judge_config(task, judge_args)
        requests = judge_requests(task, items, generations, judge, config, judge_args, versus)
        verdicts = [replace(v, variant=variant) for v in judge.judge_many(requests, repeats=repeats,
                                                                          progress=progress)]
        Judgments.write(rd, variant, task.name, verdicts)
        summary.update(judge=judge.name, judge_kind=judge.kind, judge_config=config.name,
                       judge_fingerprint=config.fingerprint())
    else:
        summary.update(judge="none", judge_kind="none")
    pair = {"versus": versus} if scorer.pairwise else {}
    result = scorer.score(task, items, generations, verdicts, config, **pair)
    summary.update(kind=task.kind, **result.info)
    summary.setdefault("metric_shown", scorer.primary or None)  # the headline metric, whatever the kind
    if scorer.judged:  # failed verdicts by cause (bench.rundir.FAILURES); a re-run asks them again
        summary["failures"] = {c: sum(1 for v in verdicts if v.failure == c) for c in FAILURES}
        # How far the verdicts can be trusted (bench.judge.reliability), and how repeats became item values.
        summary["reliability"] = scorer.reliability(task, items, generations, verdicts, **pair)
        summary["repeat_combine"] = scorer.repeat_combine
        if config is not None and config.both_orders:
            summary["both_orders"] = True
    summary["metrics"] = dict(result.metrics)
    # how each metric is stored and shown and which item values stand behind it (the scorer's Metric), and how
    # its turns are numbered, so reporting need not know the kind
    summary["metric_units"] = {m.name: {"unit": m.unit, "fraction": m.fraction, "items": m.item_selection}
                               for m in scorer.metrics}
    summary["turn_base"] = scorer.turn_base
    record = TaskSummary.from_dict(summary, variant=variant, task=task.name)
    record.write(rd)
    ItemValues(result.items).write(rd, variant, task.name)
    return record.to_dict()


"""The score stage: one variant's generations for one task, scored (judged tasks: through the run's judge)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from sftmix.variants import Variant

from ...evaluate import evaluate_task, make_judge
from ...judge.ledger import CostLedger
from ...rundir.generations import read_generations
from ..context import RunContext

if TYPE_CHECKING:
    from ...tasks import Task


def score_stage(ctx: RunContext, v: Variant, task: Task, key: str) -> dict:
    """Score ``v`` on ``task``; ``{"incomplete": True}`` when an LLM judge failed verdicts a re-run should retry."""
    gens = read_generations(ctx.gen_path(v, task))
    judge = run_judge(ctx) if ctx.scorer(task).judged else None
    # Each task summary says how it was made; the full record (packages, hardware, ...) is provenance.json.
    meta = {"model": ctx.cfg.run.model_name or ctx.cfg.model.model, "train_data": ctx.cfg.run.train_data_name,
            "run": ctx.cfg.run.name, "config_hash": ctx.cfg.config_hash(), "seed": ctx.seed(v),
            "git_commit": ctx.git()["commit"], "stage_key": key, "provenance": ctx.rd.provenance.name}
    versus = None
    if ctx.scorer(task).pairwise:  # judge.mode: pairwise: v's answers against NTP's (None: NTP's own row)
        other = ctx.pairwise_baseline(v)
        if other is not None:
            versus = {"model_1": v.name, "model_2": other.name,
                      "generations": read_generations(ctx.gen_path(other, task))}
    before, made = judge_calls_made(ctx), judge.verdicts_made if judge is not None else 0
    summary = evaluate_task(task, ctx.items(task), gens, judge, run_dir=ctx.out, variant=v.name, meta=meta,
                         repeats=ctx.cfg.judge.repeats, progress=ctx.progress, judge_args=ctx.cfg.judge,
                         config=ctx.judge_config(task), versus=versus)
    ctx.counters["judge_requests"] += judge_calls_made(ctx) - before
    if judge is not None:  # verdicts, whatever made them (the reference rubric sends no request)
        ctx.counters["judge_verdicts"] = ctx.counters.get("judge_verdicts", 0) + judge.verdicts_made - made
    failures = {k: n for k, n in (summary.get("failures") or {}).items() if n}
    # A deterministic judge gives the same failure again; an LLM judge may not: leave its stage open.
    retry = bool(failures) and judge is not None and judge.kind != "reference"
    if retry:
        ctx.counters["judge_failures"] = ctx.counters.get("judge_failures", 0) + sum(failures.values())
        print(f"  {sum(failures.values())} verdicts failed ({', '.join(f'{k} {n}' for k, n in failures.items())}); "
              "scores use the rest - re-run the same command to ask exactly these again", file=sys.stderr)
    return {"incomplete": retry}


def run_judge(ctx: RunContext):
    """The run's judge (made once, with the run's cache, cost ledger and call log)."""
    if ctx.judge_obj is None:
        ctx.ledger = CostLedger(ctx.cfg.judge.prices)
        ctx.judge_obj = make_judge(ctx.cfg.judge, cache=ctx.cache, ledger=ctx.ledger, log_path=ctx.judge_log_path())
    return ctx.judge_obj


def judge_calls_made(ctx: RunContext) -> int:
    """Judge calls actually made so far (attempts logged, cache hits excluded)."""
    p = ctx.judge_log_path()
    return sum(1 for _ in p.open()) if p.exists() else 0

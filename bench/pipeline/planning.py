"""`bench run --dry-run`: the stages to run or skip, what they cost (generations, judge calls, tokens, dollars from
:mod:`bench.judge.ledger`), the protocols each task follows, and what this machine lacks."""
from __future__ import annotations

from typing import Sequence

from ..config import RunConfig
from ..executors import get_executor
from ..judge.ledger import rough_estimate
from .coordinator import runs_on_coordinator
from .graph import n_generations, n_judge_calls
from .runner import Runner

_VERB = {"done": "skip", "partial": "resume", "stale": "redo"}


def plan(cfg: RunConfig, runner: Runner, warnings: Sequence[str] = ()) -> str:
    """The --dry-run plan: each stage with run/skip, generation and judge-call counts, judge tokens and cost, and
    what this machine lacks for the run (``warnings`` from :func:`bench.validate.validate_run`)."""
    ctx = runner.ctx
    lines = [f"plan for {runner.out} (config {cfg.config_hash()})"]
    n_gen = n_judge = 0
    for s in runner.stages:
        st = runner.status(s)
        extra = ""
        if s.kind == "generate":
            k = n_generations(ctx, s)
            extra = f"  ({k} generations)"
            n_gen += k if st != "done" else 0
        elif s.kind == "score" and (k := n_judge_calls(ctx, s)):
            extra = f"  ({k} judge calls)"
            n_judge += k if st != "done" else 0
        elif s.note:
            extra = f"  ({s.note})"
        lines.append(f"  {_VERB.get(st, 'run'):<6} {s.name}{extra}")
    lines.append(f"generations to make: {n_gen} (backend {cfg.generation.backend}, at most; cached ones are free)")
    lines.append("protocols:")
    lines += [f"  {name}: {p}" for name, p in ctx.protocols().items()]
    lines.append(_judge_line(cfg, runner, n_judge))
    lines += executor_lines(cfg, runner)
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)


def executor_lines(cfg: RunConfig, runner: Runner) -> list[str]:
    """Where the stages would run: for a cluster executor, each job with its resources and dependencies, and what
    the executor would submit (Slurm: one generated sbatch script)."""
    if cfg.executor.kind == "local":
        return ["executor: local (every stage in this process, one at a time)"]
    todo = [s for s in runner.stages if runner.status(s) != "done"]
    ex = get_executor(cfg, runner.ctx.rd)
    lines = [f"executor: {cfg.executor.kind}; {len(todo)} job(s) (max retries {cfg.executor.max_retries}):"]
    for s in todo:
        where = "coordinator" if runs_on_coordinator(runner, ex, s) else s.resources.describe()
        after = f"  after {', '.join(s.deps)}" if s.deps else ""
        lines.append(f"  {s.name:<40} [{where}]{after}")
    return lines + ex.describe(todo)


def judge_estimate(cfg: RunConfig, runner: Runner, n_judge: int) -> dict:
    """The ledger's rough estimate for ``n_judge`` calls to the run's LLM judge."""
    judged = [t for t in runner.ctx.tasks if runner.ctx.scorer(t).judged]
    caps = [runner.ctx.judge_config(t).max_tokens for t in judged]
    return rough_estimate(n_judge, cfg.judge.model, cfg.judge.prices, answer_tokens=cfg.generation.max_new_tokens,
                          max_completion_tokens=max(caps) if caps else None)


def _judge_line(cfg: RunConfig, runner: Runner, n_judge: int) -> str:
    j = runner.ctx.judge_identity()
    if not any(runner.ctx.scorer(t).judged for t in runner.ctx.tasks):
        return "judge calls: none (no judged task)"
    if j["kind"] != "llm":
        return f"judge calls: {n_judge} to {j['model']} ({j['kind']}; no API cost)"
    est = judge_estimate(cfg, runner, n_judge)
    usd = est["cost_usd"]
    return (f"judge calls: {n_judge} to {j['model']} at {j.get('base_url') or 'OpenAI'}; ~{est['prompt_tokens']:,} "
            f"prompt + ~{est['completion_tokens']:,} completion tokens (rough); "
            + (f"cost ~${usd:,.2f}" if usd is not None else "cost: no price for this model in judge.prices"))

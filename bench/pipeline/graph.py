"""The stage graph of a run, in the order it runs: dynamics (one per reference model and seed) -> train each
variant -> generate each (variant, task) -> score each (variant, task). Each stage carries its key, its outputs,
what to remove when its key changed, and the generations / judge calls it costs (for the plan)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .context import RunContext
from .keys import dyn_key, gen_key, score_key, train_key
from .selection import SEED_SEP
from .stages.generate import generate_stage
from .stages.score import score_stage
from .stages.train import run_dynamics_stage, train_stage

if TYPE_CHECKING:
    from ..tasks import Task


@dataclass
class Stage:
    name: str  # e.g. "train/sftmix"
    key: str
    run: Callable[[], Any]
    outputs: list[Path] = field(default_factory=list)
    clean: list[Path] = field(default_factory=list)  # removed when the key changed (stale partial work)
    n_generations: int = 0
    n_judge_calls: int = 0
    note: str = ""  # shown in the plan (e.g. a training the reference run stands in for)


def build_stages(ctx: RunContext) -> list[Stage]:
    """Every stage of the run, in run order (a stage's inputs are made by stages before it)."""
    stages: list[Stage] = []
    refs = []  # (reference model, seed): one reference run per seed
    for v in ctx.variants:
        if v.needs_confidence and (v.reference_model, ctx.seed_arg(v)) not in refs:
            refs.append((v.reference_model, ctx.seed_arg(v)))
    for ref, seed in refs:
        d = ctx.dyn_dir(ref, seed)
        name = f"dynamics{'' if seed is None else f'{SEED_SEP}{seed}'}{'' if ref is None else '/' + ref}"
        stages.append(Stage(name, dyn_key(ctx, ref, seed),
                            lambda ref=ref, d=d, seed=seed: run_dynamics_stage(ctx, ref, d, seed),
                            [ctx.rd.confidence(d)], [d]))
    for v in ctx.variants:
        seed = ctx.seed_arg(v)
        note = (f"the reference run dynamics{'' if seed is None else f'{SEED_SEP}{seed}'} trains exactly this: its "
                "model is reused, no training" if ctx.reference_stands_in(v) else "")
        stages.append(Stage(f"train/{v.name}", train_key(ctx, v), lambda v=v: train_stage(ctx, v),
                            [ctx.model_dir(v)], [ctx.variant_dir(v)], note=note))
    for v in ctx.variants:
        for t in ctx.tasks:
            stages.append(Stage(f"generate/{v.name}/{t.name}", gen_key(ctx, v, t),
                                lambda v=v, t=t: generate_stage(ctx, v, t),
                                [ctx.gen_path(v, t)], n_generations=n_generations(ctx, t)))
    for v in ctx.variants:
        for t in ctx.tasks:
            stages.append(Stage(f"score/{v.name}/{t.name}", score_key(ctx, v, t),
                                lambda v=v, t=t: score_stage(ctx, v, t),
                                [ctx.score_path(v, t)], n_judge_calls=n_judge_calls(ctx, t)))
    return stages


def n_generations(ctx: RunContext, task: Task) -> int:
    """Turns to generate (chat: every item's turns; else one per item)."""
    items, n = ctx.loaded_items(task)
    if task.kind != "chat":
        return n
    return sum(len(it.get("turns") or [1]) for it in items) if items is not None else n * task.n_turns


def n_judge_calls(ctx: RunContext, task: Task) -> int:
    """Judge calls scoring ``task`` takes for one variant (0 for unjudged tasks)."""
    items, n = ctx.loaded_items(task)
    return ctx.scorer(task).n_judge_calls(task, items, n, ctx.cfg.judge.repeats)

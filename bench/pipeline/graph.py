"""The stage graph of a run, in the order a serial run takes it: contamination (the training data against every
task's items; no dependency) -> dynamics (one per reference model and seed) -> train each variant -> generate each
(variant, task) -> score each (variant, task).

A :class:`Stage` is data — name, kind, key, explicit dependencies, resources, outputs — so that any process that
can read the run directory can run it (``bench stage RUN NAME``): nothing in it closes over an in-memory context.
Building the graph loads no task data; what a stage costs (generations, judge calls) is counted by the plan."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .context import RunContext
from .keys import contamination_key, dyn_key, gen_key, score_key, train_key
from ..executors.base import Resources
from .resources import stage_resources
from .selection import SEED_SEP

KINDS = ("contamination", "dynamics", "train", "generate", "score")


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. "train/sftmix"
    kind: str  # one of KINDS
    key: str
    deps: tuple[str, ...] = ()  # names of the stages whose outputs this one reads
    resources: Resources = field(default_factory=Resources)
    outputs: tuple[Path, ...] = ()
    clean: tuple[Path, ...] = ()  # removed when the key changed (stale partial work)
    variant: str | None = None  # train / generate / score: the variant (at its seed)
    task: str | None = None  # generate / score
    reference: str | None = None  # dynamics: the reference model (None: the run's model)
    seed: int | None = None  # dynamics: the run.seeds seed (None without run.seeds)
    note: str = ""  # shown in the plan (e.g. a training the reference run stands in for)


def build_stages(ctx: RunContext) -> list[Stage]:
    """Every stage of the run, in serial order (a stage's dependencies come before it). Each key is computed once,
    from its parent's key."""
    cfg = ctx.cfg
    stages: list[Stage] = []
    if cfg.contamination.enabled and ctx.tasks:  # reads only the data: first, so its finding comes before training
        stages.append(Stage("contamination", "contamination", contamination_key(ctx), (),
                            stage_resources(cfg, "contamination"),
                            tuple(ctx.rd.contamination_report(t.name) for t in ctx.tasks) + (ctx.rd.contamination,),
                            (ctx.rd.contamination_dir,)))
    dyn: dict[tuple[str | None, int | None], Stage] = {}  # (reference model, seed) -> its dynamics stage
    for v in ctx.variants:
        ref, seed = v.reference_model, ctx.seed_arg(v)
        if v.needs_confidence and (ref, seed) not in dyn:
            d = ctx.dyn_dir(ref, seed)
            name = f"dynamics{'' if seed is None else f'{SEED_SEP}{seed}'}{'' if ref is None else '/' + ref}"
            dyn[ref, seed] = Stage(name, "dynamics", dyn_key(ctx, ref, seed), (),
                                   stage_resources(cfg, "dynamics"), (ctx.rd.confidence(d),), (d,),
                                   reference=ref, seed=seed)
    stages += dyn.values()
    trains = {}
    for v in ctx.variants:
        parent = dyn.get((v.reference_model, ctx.seed_arg(v))) if v.needs_confidence else None
        seed = ctx.seed_arg(v)
        note, deps = "", (parent.name,) if parent else ()
        if ctx.reference_stands_in(v):  # it adopts the reference run's model: that run comes first
            ref = next(s for (r, sd), s in dyn.items() if sd == seed and r in (None, cfg.model.model))
            note, deps = f"the reference run {ref.name} trains exactly this: its model is reused, no training", \
                (ref.name,)
        trains[v.name] = Stage(f"train/{v.name}", "train", train_key(ctx, v, parent.key if parent else None), deps,
                               stage_resources(cfg, "train"), (ctx.model_dir(v),), (ctx.variant_dir(v),),
                               variant=v.name, note=note)
    stages += trains.values()
    gens = {}
    for v in ctx.variants:
        for t in ctx.tasks:
            parent = trains[v.name]
            gens[v.name, t.name] = Stage(f"generate/{v.name}/{t.name}", "generate", gen_key(ctx, parent.key, t),
                                         (parent.name,), stage_resources(cfg, "generate"),
                                         (ctx.gen_path(v, t),), variant=v.name, task=t.name)
    stages += gens.values()
    for v in ctx.variants:
        for t in ctx.tasks:
            parent = gens[v.name, t.name]
            # judge.mode: pairwise: v's answers against NTP's (same seed), so NTP's generations are an input too
            other = ctx.pairwise_baseline(v) if ctx.scorer(t).pairwise else None
            versus = gens[other.name, t.name] if other is not None else None
            stages.append(Stage(f"score/{v.name}/{t.name}", "score",
                                score_key(ctx, parent.key, t, versus.key if versus else None),
                                (parent.name,) + ((versus.name,) if versus else ()),
                                stage_resources(cfg, "score", judged=ctx.scorer(t).judged),
                                (ctx.score_path(v, t),), variant=v.name, task=t.name))
    return stages


def n_generations(ctx: RunContext, stage: Stage) -> int:
    """Generations a generate stage makes (the task's scorer counts its requests: a chat's turns, one per item for
    the other built-in kinds); 0 for other stages.
    Loads the task's items (the plan calls this after validation; building the graph never does)."""
    if stage.kind != "generate":
        return 0
    task = ctx.task(stage.task)
    items, n = ctx.loaded_items(task)
    return task.scorer_obj.n_generations(task, items, n)


def n_judge_calls(ctx: RunContext, stage: Stage) -> int:
    """Judge calls a score stage takes (0 for unjudged tasks and other stages); loads the task's items."""
    if stage.kind != "score":
        return 0
    task = ctx.task(stage.task)
    items, n = ctx.loaded_items(task)
    scorer = ctx.scorer(task)
    if scorer.pairwise and ctx.pairwise_baseline(ctx.variant(stage.variant)) is None:
        return 0  # NTP's own row under judge.mode: pairwise: nothing to compare, no judge call
    config = ctx.judge_config(task)
    orders = 2 if config is not None and config.both_orders else 1  # judge.swap
    return orders * scorer.n_judge_calls(task, items, n, ctx.cfg.judge.repeats)

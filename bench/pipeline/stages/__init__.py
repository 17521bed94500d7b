"""The stage bodies: what each kind of stage does, given the run's :class:`~bench.pipeline.context.RunContext`.

:func:`run_stage` is the one entry point, by the stage's kind; the coordinator (``local``) and every worker
(``bench stage``) call it the same way."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..context import RunContext

if TYPE_CHECKING:
    from ..graph import Stage


def run_stage(ctx: RunContext, stage: Stage) -> Any:
    """Run ``stage``'s body; a score stage returns ``{"incomplete": True}`` when judge verdicts failed."""
    # start-up cost: the bodies (generation, judging, contamination) load when a stage runs, not for bench status
    from .contamination import contamination_stage
    from .generate import generate_stage
    from .score import score_stage
    from .train import run_dynamics_stage, train_stage

    if stage.kind == "contamination":
        return contamination_stage(ctx, stage.key)
    if stage.kind == "dynamics":
        return run_dynamics_stage(ctx, stage.reference, ctx.dyn_dir(stage.reference, stage.seed), stage.seed)
    if stage.kind == "train":
        return train_stage(ctx, ctx.variant(stage.variant))
    if stage.kind == "generate":
        return generate_stage(ctx, ctx.variant(stage.variant), ctx.task(stage.task))
    if stage.kind == "score":
        return score_stage(ctx, ctx.variant(stage.variant), ctx.task(stage.task), stage.key)
    raise ValueError(f"unknown stage kind {stage.kind!r}")

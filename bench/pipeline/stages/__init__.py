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
    from . import contamination, generate, score, train

    if stage.kind == "contamination":
        return contamination.contamination_stage(ctx, stage.key)
    if stage.kind == "dynamics":
        return train.run_dynamics_stage(ctx, stage.reference, ctx.dyn_dir(stage.reference, stage.seed), stage.seed)
    if stage.kind == "train":
        return train.train_stage(ctx, ctx.variant(stage.variant))
    if stage.kind == "generate":
        return generate.generate_stage(ctx, ctx.variant(stage.variant), ctx.task(stage.task))
    if stage.kind == "score":
        return score.score_stage(ctx, ctx.variant(stage.variant), ctx.task(stage.task), stage.key)
    raise ValueError(f"unknown stage kind {stage.kind!r}")

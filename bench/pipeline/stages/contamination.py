"""The contamination stage: the run's training rows against each task's items as the run evaluates them
(:mod:`bench.contamination`); one report per task, ``contamination/<task>.json``, and ``contamination.json``.
No generation, no judge call."""
from __future__ import annotations

import sys

from ...contamination import summary_lines
from ...contamination.run import check_config, store
from ..context import RunContext


def contamination_stage(ctx: RunContext, key: str) -> None:
    """Check the run's training data against every task's items and store the reports (``key``: the stage's)."""
    reports = check_config(ctx.cfg, [(t, ctx.items(t)) for t in ctx.tasks], progress=ctx.progress)
    store(ctx.out, reports, stage_key=key)
    # the finding now, before hours of training; `bench table RUN` sets the clean-item scores beside it
    print("\n".join(summary_lines(reports, show=0)), file=sys.stderr, flush=True)

"""A worker: one stage of a run in a process of its own (``bench stage RUN NAME``, a Slurm job, a Ray task).

:func:`run_in_worker` rebuilds the run's context from the run directory alone (``RUN/config.yaml``), checks that
the stage's key is the one the coordinator submitted, and runs it with the worker's own cache and judge log, through
:func:`bench.pipeline.execution.execute` as the coordinator does."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from core.errors import UserError

from ..config import load_run_config
from ..rundir import RunDir
from .execution import execute, where
from .runner import Runner
from .stages import run_stage

# A worker whose stage another live process holds waits this long for it (a straggler finishing) before giving up.
STAGE_LOCK_WAIT_S = 6 * 3600


def worker_runner(run_dir: str | Path, progress: bool = False):
    """The run's Runner rebuilt from ``RUN/config.yaml`` (the coordinator wrote it before submitting anything)."""
    rd = RunDir(run_dir).check()
    if not rd.config.exists():
        raise UserError(f"{run_dir}: no {rd.config.name}: not a bench run directory (bench run writes it first)")
    cfg = load_run_config(str(rd.config), {"run.out": str(rd.root)})
    return Runner(cfg, rd.root, progress=progress)


def run_in_worker(run_dir: str | Path, name: str, key: str | None = None, executor: str = "processes",
                  job_id: str | None = None, attempt: int | None = None) -> str:
    """``bench stage``: run stage ``name`` of the run in ``run_dir`` in this process, as a worker."""
    log_recipe_info()
    runner = worker_runner(run_dir)
    stage = runner.stage(name)
    if key is not None and stage.key != key:
        raise UserError(f"stage {name}: its key here ({stage.key}) is not the one the coordinator submitted ({key}): "
                        "the run's config, data or code changed under it; re-run bench run")
    rank = int(os.environ.get("SLURM_PROCID", "0") or 0)
    if stage.resources.nodes > 1 and rank > 0:
        # A multi-node training: every node runs the launcher; only the first one holds the lock and marks state.
        run_stage(runner.ctx, stage)
        return "done"
    ctx = runner.ctx
    ctx.cache_path, ctx.judge_log = ctx.rd.stage_cache(name), ctx.rd.stage_judge_log(name)
    place = where(executor, job_id=job_id, attempt=attempt)
    # One line per start in the stage's log: how many times a stage really started is countable.
    print(f"bench stage {name}: start (attempt {attempt or 1}, {executor} job {job_id}, pid {place['pid']} on "
          f"{place['host']}, {time.strftime('%Y-%m-%d %H:%M:%S')})", file=sys.stderr, flush=True)
    return execute(runner, stage, place, lock_wait_s=STAGE_LOCK_WAIT_S)


def log_recipe_info() -> None:
    """The recipe's INFO lines (e.g. which checkpoint a training resumed from) to stderr, the stage's log. Only
    sftmix's logger: engines' own loggers (submitit's) keep their single handler."""
    lg = logging.getLogger("sftmix")
    lg.setLevel(logging.INFO)
    if not any(getattr(h, "_bench_worker", False) for h in lg.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h._bench_worker = True
        lg.addHandler(h)
        lg.propagate = False  # not twice, should the root logger have a handler too

"""Running one stage: under its own lock, with its state file saying where and how it ran.

:func:`execute` is what every executor ends in — the coordinator itself (``local``, and judged score stages with
``executor.score_on: coordinator``) and every worker (``bench stage RUN NAME``, a Slurm job, a Ray task).
:func:`run_in_worker` rebuilds the run's context from the run directory alone (``RUN/config.yaml``), checks that
the stage's key is the one the coordinator submitted, and runs it with the worker's own cache and judge log."""
from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import UserError

from ..executors.base import open_log
from ..lock import StageLock
from ..rundir import RunDir
from .graph import Stage
from .state import mark, read_state, stage_status

# A worker whose stage another live process holds waits this long for it (a straggler finishing) before giving up.
STAGE_LOCK_WAIT_S = 6 * 3600


def where(executor: str, **extra: Any) -> dict:
    """Where a stage runs: executor, host, pid, and the job's id and attempt when a scheduler gave them."""
    return {"executor": executor, "host": socket.gethostname(), "pid": os.getpid(),
            **{k: v for k, v in extra.items() if v is not None}}


def execute(runner, stage: Stage, place: dict, lock_wait_s: float = 0) -> str:
    """Run ``stage`` (skipping it if done, cleaning it if stale) under its lock; returns done | incomplete.

    A :class:`UserError` (bad data, bad config: it would fail again) is recorded as a deterministic failure; any
    other exception as a failure a retry may cure; an interrupt leaves the stage to resume."""
    from .stages import run_stage

    ctx, out = runner.ctx, runner.out
    ex = runner.cfg.executor
    lock = StageLock(ctx.rd.stage_lock(stage.name), stage.name, ex.lock_mode, ex.lease_s)
    lock.acquire(wait_s=lock_wait_s)
    try:
        st = stage_status(out, stage)
        if st == "done":
            return "done"
        if st == "stale":
            for p in stage.clean:
                shutil.rmtree(p, ignore_errors=True)
        prev = read_state(ctx.rd, stage.name)
        place = {"attempt": (prev.attempt if prev and prev.key == stage.key else None) or 1, **place}
        mark(out, stage, "running", **place)
        before = dict(ctx.counters)
        t0 = time.time()
        try:
            result = run_stage(ctx, stage)
        except UserError as e:
            mark(out, stage, "failed", error=str(e), deterministic=True, **place)
            raise
        except Exception as e:
            mark(out, stage, "failed", error=f"{type(e).__name__}: {e}".splitlines()[0][:500], **place)
            raise
        except BaseException:  # Ctrl-C, SIGTERM as SystemExit: the stage resumes on the next run
            mark(out, stage, "interrupted", **place)
            raise
        status = "incomplete" if isinstance(result, dict) and result.get("incomplete") else "done"
        counters = {k: n - before.get(k, 0) for k, n in ctx.counters.items() if n - before.get(k, 0)}
        mark(out, stage, status, seconds=round(time.time() - t0, 2), counters=counters, **place)
        return status
    finally:
        lock.release()


def worker_runner(run_dir: str | Path, progress: bool = False):
    """The run's Runner rebuilt from ``RUN/config.yaml`` (the coordinator wrote it before submitting anything)."""
    from ..config import load_run_config
    from .runner import Runner

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
        from .stages import run_stage

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
    import logging

    lg = logging.getLogger("sftmix")
    lg.setLevel(logging.INFO)
    if not any(getattr(h, "_bench_worker", False) for h in lg.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h._bench_worker = True
        lg.addHandler(h)
        lg.propagate = False  # not twice, should the root logger have a handler too


def redirect_output(log: Path) -> None:
    """Send this process's stdout and stderr (file descriptors too: subprocesses, C libraries) to ``log``."""
    fd = open_log(log)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)

"""Running one stage: under its own lock, with its state file saying where and how it ran.

:func:`execute` is what every executor ends in: the coordinator itself (``local``, and judged score stages with
``executor.score_on: coordinator``) and every worker (:mod:`bench.pipeline.worker`)."""
from __future__ import annotations

import os
import shutil
import socket
import time
from typing import Any

from core.errors import UserError

from ..lock import StageLock
from .graph import Stage
from .stages import run_stage
from .state import mark, read_state, stage_status


def where(executor: str, **extra: Any) -> dict:
    """Where a stage runs: executor, host, pid, and the job's id and attempt when a scheduler gave them."""
    return {"executor": executor, "host": socket.gethostname(), "pid": os.getpid(),
            **{k: v for k, v in extra.items() if v is not None}}


def execute(runner, stage: Stage, place: dict, lock_wait_s: float = 0) -> str:
    """Run ``stage`` (skipping it if done, cleaning it if stale) under its lock; returns done | incomplete.

    A :class:`UserError` (bad data, bad config: it would fail again) is recorded as a deterministic failure; any
    other exception as a failure a retry may cure; an interrupt leaves the stage to resume."""
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

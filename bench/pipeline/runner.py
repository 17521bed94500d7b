"""The Runner: a run's stage graph against its results directory; :meth:`Runner.run` hands it to the coordinator,
which runs each stage that is not done on the configured executor."""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from core.registry import nearest

from ..config import RunConfig
from ..executors import Worker, get_executor
from .context import RunContext
from .coordinator import Coordinator
from .graph import Stage, build_stages
from .state import stage_status


class Runner:
    """The stage list of a config against a results directory; :meth:`run` runs what is not done."""

    def __init__(self, cfg: RunConfig, out: str | Path, progress: bool = True):
        self.ctx = RunContext(cfg, out, progress)
        self.cfg, self.out = cfg, self.ctx.out
        self.stages: list[Stage] = build_stages(self.ctx)

    @property
    def ledger(self):
        """The judge's cost ledger, once a judged stage ran in this process (else None)."""
        return self.ctx.ledger

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (a one-line error naming the nearest if there is none)."""
        for s in self.stages:
            if s.name == name:
                return s
        raise UserError(f"no stage {name!r} in this run{nearest(name, [s.name for s in self.stages])}")

    def status(self, stage: Stage) -> str:
        """done | partial (same key, unfinished: resumes) | stale (other key: redone) | todo."""
        return stage_status(self.out, stage)

    def run(self, worker: Worker) -> dict:
        """Run every stage not done on ``cfg.executor``; return the names run and skipped, and request counters.
        ``worker`` is what a job runs in its own process (:func:`bench.pipeline.worker.run_in_worker`: the worker
        rebuilds a Runner, so this module cannot import it)."""
        executor = get_executor(self.cfg, self.ctx.rd, worker)
        try:
            return Coordinator(self, executor).run()
        finally:
            executor.close()

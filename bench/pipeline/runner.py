"""The Runner: builds a run's stage graph and walks it, skipping finished stages and redoing stale ones."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from ..config import RunConfig
from .context import RunContext
from .graph import Stage, build_stages
from .state import mark, stage_status


class Runner:
    """The stage list of a config against a results directory; :meth:`run` walks it."""

    def __init__(self, cfg: RunConfig, out: str | Path, progress: bool = True):
        self.ctx = RunContext(cfg, out, progress)
        self.cfg, self.out = cfg, self.ctx.out
        self.stages: list[Stage] = build_stages(self.ctx)

    @property
    def ledger(self):
        """The judge's cost ledger, once a judged stage ran in this process (else None)."""
        return self.ctx.ledger

    def status(self, stage: Stage) -> str:
        """done | partial (same key, unfinished: resumes) | stale (other key: redone) | todo."""
        return stage_status(self.out, stage)

    def run(self) -> dict:
        """Run every stage not done; return the names run and skipped, and the request counters."""
        n = len(self.stages)
        ran, skipped = [], []
        for i, stage in enumerate(self.stages, 1):
            st = self.status(stage)
            if st == "done":
                skipped.append(stage.name)
                continue
            if st == "stale":
                for p in stage.clean:
                    shutil.rmtree(p, ignore_errors=True)
            verb = {"partial": "resume", "stale": "redo", "todo": "run"}[st]
            print(f"[{i}/{n}] {verb} {stage.name}", file=sys.stderr, flush=True)
            mark(self.out, stage, "running")
            t0 = time.time()
            result = stage.run()
            seconds = round(time.time() - t0, 2)
            # "incomplete": finished, but with failures a re-run should retry (it resumes this stage).
            status = "incomplete" if isinstance(result, dict) and result.get("incomplete") else "done"
            mark(self.out, stage, status, seconds=seconds)
            print(f"[{i}/{n}] {'done' if status == 'done' else 'incomplete'} {stage.name} in {seconds:.1f} s",
                  file=sys.stderr, flush=True)
            ran.append(stage.name)
        return {"ran": ran, "skipped": skipped, **self.ctx.counters}

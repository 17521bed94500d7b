"""The coordinator of ``bench run``: runs every stage that is not done, each as soon as its dependencies are,
on the configured executor, and says what each stage is doing.

Its truth is the stage state files (``state/<stage>.json``), which the process running a stage writes: a job that
is gone without having marked its stage done died (``kill -9``, ``scancel``, a lost node) and is re-submitted up
to ``executor.max_retries`` times — training resumes from its last checkpoint — while a stage that failed for a
reason that would repeat (bad data, bad config) stops the run with its one-line error. A coordinator that finds a
stage still queued or running as a live job of an earlier coordinator waits for that job instead of submitting it
again. Workers' own caches and judge logs are merged into the run's as their stages finish (one writer each)."""
from __future__ import annotations

import shutil
import socket
import sys
import time

from core.errors import UserError

from ..executors.base import last_line
from ..rundir import JudgeLog, StageState
from ..rundir.records import JobRecord
from .execution import execute, where
from .graph import Stage
from .state import mark, read_state

FINISHED = ("done", "incomplete")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Coordinator:
    def __init__(self, runner, executor):
        self.runner, self.executor = runner, executor
        self.rd = runner.ctx.rd
        self.ex = runner.cfg.executor
        self.index = {s.name: i for i, s in enumerate(runner.stages, 1)}
        self.n = len(runner.stages)
        self.jobs: dict[str, object] = {}  # stage name -> live job
        self.seen: dict[str, str] = {}  # stage name -> the last status we reported for its job
        self.attempts: dict[str, int] = {}
        self.ran: list[str] = []
        self.remote_counters: dict[str, int] = {}

    # -- helpers ------------------------------------------------------------------------------------------------
    def tag(self, stage: Stage | str) -> str:
        name = stage if isinstance(stage, str) else stage.name
        return f"[{self.index[name]}/{self.n}]"

    def inline(self, stage: Stage) -> bool:
        return runs_on_coordinator(self.runner, self.executor, stage)

    def state(self, stage: Stage) -> StageState | None:
        st = read_state(self.rd, stage.name)
        return st if st is not None and st.key == stage.key else None

    # -- the loop -----------------------------------------------------------------------------------------------
    def run(self) -> dict:
        stages = self.runner.stages
        finished = {s.name for s in stages if self.runner.status(s) == "done"}
        skipped = [s.name for s in stages if s.name in finished]
        pending = [s for s in stages if s.name not in finished]
        self.merge_worker_files([s for s in stages if s.name in finished])
        self.reattach(pending)
        try:
            while pending:
                for s in self.collect(pending):
                    finished.add(s.name)
                    pending.remove(s)
                ready = [s for s in pending if s.name not in self.jobs and all(d in finished for d in s.deps)]
                remote = [s for s in ready if not self.inline(s)]
                slots = self.executor.slots(len(self.jobs))
                if remote and slots > 0:
                    self.submit(remote[:slots])
                local = [s for s in ready if self.inline(s)]
                if local:
                    s = local[0]
                    self.run_inline(s)
                    finished.add(s.name)
                    pending.remove(s)
                    continue
                if pending and not self.jobs and not remote:
                    blocked = ", ".join(s.name for s in pending[:3])
                    raise UserError(f"stages cannot run, their inputs are missing: {blocked}")
                if pending:
                    time.sleep(self.ex.poll_s)
        except KeyboardInterrupt:
            time.sleep(0.5)  # local workers got the terminal's Ctrl-C too: say only what really goes on
            alive = {n: j for n, j in self.jobs.items() if j.alive()}
            if alive:
                say(f"bench: {len(alive)} stage(s) keep running as {self.executor.name} jobs "
                    f"({', '.join(f'{n}: {j.id}' for n, j in alive.items())}); re-run the same command to wait "
                    "for them and go on")
            raise
        counters = dict(self.runner.ctx.counters)
        for k, v in self.remote_counters.items():
            counters[k] = counters.get(k, 0) + v
        return {"ran": self.ran, "skipped": skipped, **counters}

    def run_inline(self, stage: Stage) -> None:
        st = self.runner.status(stage)
        verb = {"partial": "resume", "stale": "redo", "todo": "run"}[st]
        say(f"{self.tag(stage)} {verb} {stage.name}")
        t0 = time.time()
        status = execute(self.runner, stage, where(self.executor.name if self.executor.inline else "coordinator"))
        say(f"{self.tag(stage)} {'done' if status == 'done' else 'incomplete'} {stage.name} in "
            f"{time.time() - t0:.1f} s")
        self.ran.append(stage.name)

    def submit(self, stages: list[Stage]) -> None:
        for s in stages:
            if self.runner.status(s) == "stale":  # before "queued" records the new key over the old one
                for p in s.clean:
                    shutil.rmtree(p, ignore_errors=True)
            self.attempts[s.name] = self.attempts.get(s.name, 0) + 1
            # "queued" before the job exists: a fast worker's "running"/"done" must never be overwritten by it
            mark(self.runner.out, s, "queued", executor=self.executor.name, attempt=self.attempts[s.name],
                 log=str(self.rd.stage_log(s.name)))
        jobs = self.executor.submit(stages, self.attempts)
        for s in stages:
            job = jobs[s.name]
            self.jobs[s.name] = job
            JobRecord(s.name, self.executor.name, job.id, socket.gethostname(), self.attempts[s.name],
                      time.time()).write(self.rd)
            self.seen[s.name] = "queued"
            retry = f", attempt {self.attempts[s.name]}" if self.attempts[s.name] > 1 else ""
            say(f"{self.tag(s)} queued {s.name} as {self.executor.name} job {job.id} "
                f"({s.resources.describe()}{retry})")

    def reattach(self, pending: list[Stage]) -> None:
        """Wait for stages an earlier coordinator submitted and whose jobs are still alive."""
        for s in pending:
            st = self.state(s)
            record = JobRecord.read(self.rd, s.name) if st is not None and st.status in ("queued", "running") else None
            if record is None or record.executor != self.executor.name:
                continue
            job = self.executor.find(record)
            if job is None:
                continue
            self.jobs[s.name] = job
            self.attempts[s.name] = record.attempt
            self.seen[s.name] = st.status
            say(f"{self.tag(s)} waiting for {s.name}: still {st.status} as {self.executor.name} job {job.id} "
                "(submitted by an earlier coordinator)")

    def collect(self, pending: list[Stage]) -> list[Stage]:
        """The stages whose jobs finished since the last look; re-queues (or gives up on) jobs that died."""
        done = []
        for s in [s for s in pending if s.name in self.jobs]:
            job = self.jobs[s.name]
            st = self.state(s)
            if st is not None and st.status == "running" and self.seen.get(s.name) != "running":
                self.seen[s.name] = "running"
                say(f"{self.tag(s)} running {s.name} on {st.host or '?'} as job {job.id}")
            if st is None or st.status not in FINISHED:
                if job.alive():
                    continue
                st = self.state(s)  # it may have finished between the two looks
            if st is not None and st.status in FINISHED:
                del self.jobs[s.name]
                self.finish(s, st)
                done.append(s)
                continue
            del self.jobs[s.name]
            self.failed(s, st, job)
        return done

    def finish(self, stage: Stage, st: StageState) -> None:
        self.merge_worker_files([stage])
        for k, v in (st.counters or {}).items():
            self.remote_counters[k] = self.remote_counters.get(k, 0) + v
        self.ran.append(stage.name)
        on = f" on {st.host}" if st.host else ""
        say(f"{self.tag(stage)} {'done' if st.status == 'done' else 'incomplete'} {stage.name} in "
            f"{float(st.seconds or 0):.1f} s{on}")

    def failed(self, stage: Stage, st: StageState | None, job) -> None:
        log = self.rd.stage_log(stage.name)
        reason = (st.error if st is not None else None) or job.error() or last_line(log) \
            or "the job ended without a word"
        if st is not None and st.status == "failed" and st.deterministic:
            raise UserError(f"stage {stage.name} failed: {reason} (log: {log})")
        n = self.attempts.get(stage.name, 1)
        if n > self.ex.max_retries:
            raise UserError(f"stage {stage.name} failed {n} time{'s' if n > 1 else ''}; last: {reason} (log: {log}); "
                            "re-run the same command to try again")
        say(f"{self.tag(stage)} failed {stage.name} (attempt {n} of {self.ex.max_retries + 1}): {reason} "
            f"(log: {log}); retrying")

    def merge_worker_files(self, stages: list[Stage]) -> None:
        """Fold finished stages' worker caches and judge logs into the run's (the coordinator is their one writer)."""
        for s in stages:
            cache, log = self.rd.stage_cache(s.name), self.rd.stage_judge_log(s.name)
            if cache.exists():
                self.runner.ctx.cache.merge(cache)
                for p in (cache, cache.with_name(cache.name + "-journal")):
                    p.unlink(missing_ok=True)
            JudgeLog(self.rd.judge_log).merge_from(log)


def runs_on_coordinator(runner, executor, stage: Stage) -> bool:
    """Stages the coordinator runs itself: all of them under ``local``; judged score stages (network-bound, API
    keys) unless ``executor.score_on: cluster``."""
    if executor.inline:
        return True
    return stage.kind == "score" and runner.cfg.executor.score_on == "coordinator" \
        and runner.ctx.scorer(runner.ctx.task(stage.task)).judged


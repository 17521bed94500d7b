"""`bench stage RUN NAME`: run one stage of a run in this process, as an executor's worker does.

The run's context is rebuilt from the run directory alone (``RUN/config.yaml``); ``--key`` makes sure it is the
stage the coordinator submitted. The stage runs under its own lock and writes its own cache and judge log, which the
coordinator merges. Exit 0: done; 1: incomplete (judge failures a re-run retries) or crashed; 2: a deterministic
failure (bad data, bad config), recorded in the stage's state file."""
from __future__ import annotations

import argparse
import os

from bench import threads as cpu_threads
from bench.executors.slurm import slurm_job_id
from bench.pipeline.worker import run_in_worker
from bench.rundir import RunConfigRecord, RunDir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help="the run directory (bench run wrote its config.yaml)")
    p.add_argument("name", metavar="NAME", help="the stage, e.g. train/sftmix (see `bench status RUN`)")
    p.add_argument("--key", help="the stage key the coordinator submitted (refuses to run another)")
    p.add_argument("--executor", default="processes", help="recorded in the stage's state: who started it")
    p.add_argument("--attempt", type=int, help="recorded in the stage's state: which attempt this is")
    p.add_argument("--job-id", help="recorded in the stage's state (default: the engine's own id, or the pid)")


def run(args) -> int:
    threads = RunConfigRecord.read(RunDir(args.run_dir)).run.get("threads")
    if threads:  # the run's own run.threads beats the worker's automatic choice (bench.cli made that one)
        cpu_threads.apply(threads, "run.threads")
    job_id = args.job_id or slurm_job_id() or str(os.getpid())
    status = run_in_worker(args.run_dir, args.name, key=args.key, executor=args.executor, job_id=job_id,
                           attempt=args.attempt)
    print(f"bench stage: {args.name} {status}")
    return 0 if status == "done" else 1

"""Executors: where the stages of ``bench run`` run, registered by name and imported only when asked for.

- ``local``: in the ``bench run`` process, one stage at a time (the default; what a laptop wants).
- ``processes``: ``executor.workers`` local worker processes, each stage as soon as its dependencies are done.
- ``slurm``: one Slurm job per stage through ``submitit`` (``pip install -e '.[slurm]'``).
- ``ray``: one Ray task per stage on an existing cluster or a local one (``pip install -e '.[ray]'``).

Every executor but ``local`` runs a stage in a fresh process from the run directory alone (``bench stage RUN
NAME``, or the worker function the pipeline hands it, :func:`bench.pipeline.worker.run_in_worker`); the coordinator
(:mod:`bench.pipeline.coordinator`) only submits, watches the stage state files, retries and merges. A new engine
is a class with the interface of :class:`bench.executors.base.Executor`, registered here.
"""
from __future__ import annotations

import importlib

from core.registry import Registry

from .base import Executor, Job, Worker

EXECUTORS: Registry[str] = Registry("executor")
EXECUTORS.add("local", "bench.executors.local:LocalExecutor", "in this process, one stage at a time (default)")
EXECUTORS.add("processes", "bench.executors.processes:ProcessExecutor",
              "executor.workers local worker processes, stages as soon as their inputs are done")
EXECUTORS.add("slurm", "bench.executors.slurm:SlurmExecutor", "one Slurm job per stage, through submitit")
EXECUTORS.add("ray", "bench.executors.ray_cluster:RayExecutor", "one Ray task per stage (executor.ray_address)")


def get_executor(cfg, rd, worker: Worker | None = None) -> Executor:
    """The executor ``cfg.executor.kind`` for run directory ``rd``; ``worker`` is what its jobs run (needed to
    submit, not to describe or find jobs)."""
    module, _, attr = EXECUTORS.get(cfg.executor.kind).partition(":")
    return getattr(importlib.import_module(module), attr)(cfg, rd, worker)


__all__ = ["EXECUTORS", "Executor", "Job", "get_executor"]

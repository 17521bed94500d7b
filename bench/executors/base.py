"""The interface every executor implements, the job handle it returns, and what it knows of a stage.

Executors sit below the pipeline: they see a stage through :class:`StageSpec` (the pipeline's
:class:`bench.pipeline.graph.Stage` is one) and run it in a job through the :data:`Worker` the pipeline hands them
(:func:`bench.pipeline.worker.run_in_worker`), so nothing here imports the pipeline."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..rundir import RunDir
    from ..rundir.records import JobRecord

# Environment a worker needs to see the same world as the coordinator (offline switches, caches, threads).
ENV_PREFIXES = ("SFTMIX_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_", "MKL_", "OPENAI_", "PYTHONPATH",
                "CUDA_VISIBLE_DEVICES", "ACCELERATE_")

# What a job runs in its own process: ``worker(run_dir, name, key=, executor=, job_id=, attempt=)`` -> done |
# incomplete. A module-level function (pickled by reference into a Slurm job or a Ray task).
Worker = Callable[..., str]


@dataclass(frozen=True)
class Resources:
    """What one stage asks of a cluster (:func:`bench.pipeline.resources.stage_resources` decides it)."""

    gpus: int = 0  # per node
    nodes: int = 1
    cpus: int = 1  # per node (one task per node)
    mem_gb: float | None = None  # per node; None: the scheduler's default
    time_min: int | None = None

    def describe(self) -> str:
        parts = [f"{self.nodes} node{'s' if self.nodes > 1 else ''}", f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}",
                 f"{self.cpus} CPU{'s' if self.cpus != 1 else ''}"]
        if self.mem_gb:
            parts.append(f"{self.mem_gb:g} GB")
        if self.time_min:
            parts.append(f"{self.time_min} min")
        return ", ".join(parts)


class StageSpec(Protocol):
    """What an executor reads of a stage."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def resources(self) -> Resources: ...


def worker_env() -> dict[str, str]:
    """The coordinator's variables a worker inherits explicitly (engines that do not pass the whole environment)."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def stage_command(rd: RunDir, stage: StageSpec, executor: str, attempt: int) -> list[str]:
    """``python -m bench.cli stage RUN NAME --key K ...``: the command a worker process runs."""
    return [sys.executable, "-m", "bench.cli", "stage", str(rd.root.resolve()), stage.name, "--key", stage.key,
            "--executor", executor, "--attempt", str(attempt)]


class Job:
    """A submitted stage: its id in the engine, whether it is still queued or running, why it ended."""

    id: str = ""

    def alive(self) -> bool:
        raise NotImplementedError

    def error(self) -> str | None:
        """Why the job ended, when the engine knows (the stage's own state file usually says more)."""
        return None

    def cancel(self) -> None:
        pass


class Executor:
    """Submits stages as jobs. ``inline``: the coordinator runs stages itself instead (``local``)."""

    name = "base"
    inline = False

    def __init__(self, cfg: RunConfig, rd: RunDir, worker: Worker | None = None):
        self.cfg, self.rd, self._worker = cfg, rd, worker

    @property
    def worker(self) -> Worker:
        """What a job runs in its own process (engines that call Python rather than ``bench stage``)."""
        if self._worker is None:
            raise RuntimeError(f"the {self.name} executor submits jobs only with a worker (Runner.run passes one)")
        return self._worker

    def slots(self, running: int) -> int:
        """How many more jobs may be submitted now, with ``running`` of ours in flight."""
        return 10**6

    def submit(self, stages: list[StageSpec], attempts: dict[str, int]) -> dict[str, Job]:
        """Submit ``stages`` (their dependencies are done); stage name -> job."""
        raise NotImplementedError

    def find(self, record: JobRecord) -> Job | None:
        """The job of an earlier coordinator (``executor/jobs/<stage>.json``) if it is still queued or running."""
        return None

    def describe(self, stages: list[StageSpec]) -> list[str]:
        """Lines for ``bench run --dry-run``: how the stages would be submitted."""
        return []

    def close(self) -> None:
        pass


def open_log(log: Path) -> int:
    """``log`` opened for appending, as a file descriptor, starting on a fresh line: an earlier attempt killed in
    the middle of a line (a progress bar) must not swallow the first line of this one."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if os.fstat(fd).st_size:
        with open(log, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                os.write(fd, b"\n")
    return fd


def redirect_output(log: Path) -> None:
    """Send this process's stdout and stderr (file descriptors too: subprocesses, C libraries) to ``log``."""
    fd = open_log(log)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def last_line(path) -> str | None:
    """The last non-blank line of a log (progress bars' carriage returns split lines too)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None

"""The interface every executor implements, and the job handle it returns."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..pipeline.graph import Stage
    from ..rundir import RunDir

# Environment a worker needs to see the same world as the coordinator (offline switches, caches, threads).
ENV_PREFIXES = ("SFTMIX_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_", "MKL_", "OPENAI_", "PYTHONPATH",
                "CUDA_VISIBLE_DEVICES", "ACCELERATE_")


def worker_env() -> dict[str, str]:
    """The coordinator's variables a worker inherits explicitly (engines that do not pass the whole environment)."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def stage_command(rd: RunDir, stage: Stage, executor: str, attempt: int) -> list[str]:
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

    def __init__(self, cfg: RunConfig, rd: RunDir):
        self.cfg, self.rd = cfg, rd

    def slots(self, running: int) -> int:
        """How many more jobs may be submitted now, with ``running`` of ours in flight."""
        return 10**6

    def submit(self, stages: list[Stage], attempts: dict[str, int]) -> dict[str, Job]:
        """Submit ``stages`` (their dependencies are done); stage name -> job."""
        raise NotImplementedError

    def find(self, record: dict) -> Job | None:
        """The job of an earlier coordinator (``executor/jobs/<stage>.json``) if it is still queued or running."""
        return None

    def describe(self, stages: list[Stage]) -> list[str]:
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

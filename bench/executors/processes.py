"""``processes``: stages run as ``bench stage`` worker processes on this machine, ``executor.workers`` at a time,
each as soon as its dependencies are done."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from .base import Executor, Job, open_log, stage_command


class ProcessJob(Job):
    def __init__(self, proc: subprocess.Popen | None, pid: int):
        self.proc, self.pid, self.id = proc, pid, str(pid)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid)

    def error(self) -> str | None:
        rc = self.proc.returncode if self.proc is not None else None
        if rc is not None and rc < 0:
            return f"the worker was killed by signal {-rc}"
        return None

    def cancel(self) -> None:
        if self.alive():
            os.kill(self.pid, 15)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class ProcessExecutor(Executor):
    name = "processes"

    def slots(self, running: int) -> int:
        return max(0, self.cfg.executor.workers - running)

    def submit(self, stages, attempts):
        jobs = {}
        for s in stages:
            with os.fdopen(open_log(self.rd.stage_log(s.name)), "ab") as f:
                proc = subprocess.Popen(stage_command(self.rd, s, self.name, attempts[s.name]), stdout=f,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            jobs[s.name] = ProcessJob(proc, proc.pid)
        return jobs

    def find(self, record):
        """A worker an earlier coordinator started on this host, if it still runs ``bench stage``."""
        pid = int(record.job_id) if record.job_id.isdigit() else 0
        if not pid or record.host != socket.gethostname() or not pid_alive(pid):
            return None
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        mine = b"stage" in cmd and b"bench.cli" in cmd and record.stage.encode() in cmd
        return ProcessJob(None, pid) if mine else None

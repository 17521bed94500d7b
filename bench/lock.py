"""Locks on a results directory: the whole run (one coordinator) and each stage (one worker).

Two modes (``executor.lock_mode``):

- ``flock`` (default): ``filelock``'s OS lock, so the kernel releases it when the holder exits or is killed
  (``kill -9`` included): a stale lock from a dead run is simply taken over by the next one.
- ``soft``: ``filelock``'s ``SoftFileLease``, a lock *file* holding the holder's host, pid and a lease its holder
  renews from a heartbeat thread, for shared filesystems without working ``flock`` (some NFS and Lustre set-ups).
  A holder on this host that died is taken over at once; one on another host once its lease has run out.

The holder's PID, host and start time also go into a side file, only so that a refusal can name who holds it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, SoftFileLease, Timeout

from core.errors import UserError

LOCK = ".bench.lock"
HOLDER = ".bench.lock.holder"
MODES = ("flock", "soft")


class DirectoryInUse(UserError):
    """Another live process holds the results directory."""


class StageInUse(UserError):
    """Another live worker runs the stage."""


def make_lock(path: Path, mode: str = "flock", lease_s: float = 120.0):
    """A non-blocking lock on ``path`` in ``mode`` (see the module's docstring)."""
    if mode == "soft":
        return SoftFileLease(str(path), lease_duration=lease_s, timeout=0)
    if mode != "flock":
        raise UserError(f"unknown lock mode {mode!r}: one of {', '.join(MODES)}")
    return FileLock(str(path), timeout=0)


class _HeldLock:
    """A lock file plus a holder side file naming who holds it."""

    def __init__(self, path: Path, holder: Path, command: str, mode: str, lease_s: float):
        self.path, self.holder_path, self.command = path, holder, command
        self._lock = make_lock(path, mode, lease_s)

    def holder(self) -> dict:
        try:
            return json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return {}

    def describe_holder(self) -> str:
        h = self.holder()
        who = f"pid {h['pid']}" + (f" on {h['host']}" if h.get("host") else "") if "pid" in h else "another process"
        since = f", {h.get('command', 'bench')} started {time.strftime('%H:%M:%S', time.localtime(h['time']))}" \
            if "time" in h else ""
        return who + since

    def try_acquire(self, timeout: float = 0) -> bool:
        """Take the lock (waiting up to ``timeout`` s); False if a live holder keeps it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            return False
        tmp = self.holder_path.with_name(f"{self.holder_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                   "time": time.time()}))
        os.replace(tmp, self.holder_path)
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                self.holder_path.unlink()
            except OSError:
                pass
            self._lock.release()


class RunLock(_HeldLock):
    """``with RunLock(out, "bench run"):`` creates ``out`` and holds it, or refuses at once naming the holder.
    The coordinator's lock: workers never take it."""

    def __init__(self, out: str | os.PathLike, command: str = "bench", mode: str = "flock", lease_s: float = 120.0):
        self.out = Path(out)
        super().__init__(self.out / LOCK, self.out / HOLDER, command, mode, lease_s)

    def acquire(self) -> None:
        if not self.try_acquire():
            raise DirectoryInUse(f"{self.out} is in use by another run ({self.describe_holder()}); wait for it to "
                                 "finish or choose another --out")

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class StageLock(_HeldLock):
    """One stage's lock, ``state/<stage>.lock``: held by whichever process runs the stage, so two workers (say a
    retry and a straggler the coordinator thought dead) never run one stage at once."""

    def __init__(self, lock_path: Path, stage: str, mode: str = "flock", lease_s: float = 120.0):
        self.stage = stage
        super().__init__(lock_path, lock_path.with_name(lock_path.name + ".holder"), f"stage {stage}", mode, lease_s)

    def acquire(self, wait_s: float = 0) -> None:
        if not self.try_acquire(wait_s):
            raise StageInUse(f"stage {self.stage} is being run by another worker ({self.describe_holder()})")

    def __enter__(self) -> "StageLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

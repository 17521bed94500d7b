"""One writer per results directory: an OS file lock held for the whole command.

The lock is ``filelock``'s (``flock`` on POSIX), so the kernel releases it when the holder exits or is killed
(``kill -9`` included): a stale lock from a dead run is simply taken over by the next one. The holder's PID and
start time go into a side file, only so the refusal can name who holds the directory.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from filelock import FileLock, Timeout

from sftmix.errors import UserError

LOCK = ".bench.lock"
HOLDER = ".bench.lock.holder"


class DirectoryInUse(UserError):
    """Another live process holds the results directory."""


class RunLock:
    """``with RunLock(out, "bench run"):`` creates ``out`` and holds it, or refuses at once naming the holder."""

    def __init__(self, out: str | os.PathLike, command: str = "bench"):
        self.out, self.command = Path(out), command
        self._lock = FileLock(str(self.out / LOCK), timeout=0)

    def holder(self) -> dict:
        try:
            return json.loads((self.out / HOLDER).read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            h = self.holder()
            who = f"pid {h['pid']}" if "pid" in h else "another process"
            since = f", {h.get('command', 'bench')} started {time.strftime('%H:%M:%S', time.localtime(h['time']))}" \
                if "time" in h else ""
            raise DirectoryInUse(f"{self.out} is in use by another run ({who}{since}); wait for it to finish "
                                 "or choose another --out") from None
        tmp = self.out / f"{HOLDER}.{os.getpid()}"
        tmp.write_text(json.dumps({"pid": os.getpid(), "command": self.command, "time": time.time()}))
        os.replace(tmp, self.out / HOLDER)

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                (self.out / HOLDER).unlink()
            except OSError:
                pass
            self._lock.release()

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

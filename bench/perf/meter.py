"""Peak-memory meter (worker side): CUDA allocator statistics on GPU, the process's RSS high-water mark on CPU."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path


def proc_status_kb(field_name: str) -> int:
    """A ``/proc/self/status`` field in kB (0 where absent)."""
    m = re.search(rf"^{field_name}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


class Memory:
    """Peak-memory meter: CUDA allocator statistics on GPU, the process's RSS high-water mark on CPU."""

    def __init__(self, device: str):
        import torch  # heavy optional dependency

        self.torch, self.cuda = torch, device == "cuda"
        self.base = self.current()

    def current(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**20
        return proc_status_kb("VmRSS") / 1024

    def reset_peak(self) -> float:
        """Forget the peak so far; return the memory in use now (MB)."""
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            try:  # hand freed heap pages back first, so the baseline is what is really live
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
            except OSError:
                pass
        return self.current()

    def peak(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() / 2**20
        return proc_status_kb("VmHWM") / 1024


def sync(device: str) -> None:
    """Wait for queued CUDA work, so a timer stops after it (no-op on CPU)."""
    if device == "cuda":
        import torch  # heavy optional dependency

        torch.cuda.synchronize()

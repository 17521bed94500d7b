"""``local``: the coordinator runs every stage itself, one at a time, in graph order (today's ``bench run``)."""
from __future__ import annotations

from .base import Executor


class LocalExecutor(Executor):
    name = "local"
    inline = True

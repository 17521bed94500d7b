"""Stage state files: ``state/<stage>.json`` holds the stage's key and whether it finished."""
from __future__ import annotations

import time
from pathlib import Path

from ..rundir import RunDir, StageState
from ..rundir.paths import STATE  # noqa: F401  (re-exported)
from .graph import Stage


def stage_status(out: Path, stage: Stage) -> str:
    """done | partial (same key, unfinished: resumes) | stale (other key: redone) | todo."""
    st = StageState.read(RunDir(out), stage.name)
    if st is None:
        return "todo"
    if st.key != stage.key:
        return "stale"
    if st.status == "done" and all(o.exists() for o in stage.outputs):
        return "done"
    return "partial"


def mark(out: Path, stage: Stage, status: str, **extra) -> None:
    """Record ``stage``'s key and ``status`` (running, done, incomplete) with the time and ``extra`` fields."""
    StageState(stage.key, status, time.time(), extra).write(RunDir(out), stage.name)

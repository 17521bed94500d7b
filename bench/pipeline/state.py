"""Stage state files: ``state/<stage>.json`` holds the stage's key and whether it finished."""
from __future__ import annotations

import sys
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
        return "partial" if _damaged_model(stage) else "done"
    return "partial"


_WARNED: set[str] = set()


def _damaged_model(stage: Stage) -> bool:
    """A finished training whose saved model is damaged (e.g. a truncated model.safetensors) is resumed: trained
    again from its last checkpoint (or from scratch) and saved again. Said once per process."""
    from sftmix.io import model_dir_problem

    for o in stage.outputs:
        if RunDir.of_model_dir(o) is None:
            continue
        why = model_dir_problem(o)
        if why:
            if str(o) not in _WARNED:
                _WARNED.add(str(o))
                print(f"bench: warning: {o}: {why}; {stage.name} runs again (from its last checkpoint when one is "
                      "kept)", file=sys.stderr, flush=True)
            return True
    return False


def mark(out: Path, stage: Stage, status: str, **extra) -> None:
    """Record ``stage``'s key and ``status`` (running, done, incomplete) with the time and ``extra`` fields."""
    StageState(stage.key, status, time.time(), extra).write(RunDir(out), stage.name)

"""Stage state files: ``state/<stage>.json`` holds the stage's key and whether it finished."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from core.errors import UserError
from core.io import file_problem, model_dir_problem

from ..rundir import RunDir, StageState
from ..rundir.paths import STATE  # noqa: F401  (re-exported)
from .graph import Stage


def stage_status(out: Path, stage: Stage) -> str:
    """done | partial (same key, unfinished: resumes) | stale (other key: redone) | todo.

    A damaged state file counts as absent (the stage runs, resuming what it can); a "done" stage whose output is
    damaged (a truncated model, parquet table or record) is "partial", so it runs again. Both say so once."""
    st = read_state(RunDir(out), stage.name)
    if st is None:
        return "todo"
    if st.key != stage.key:
        return "stale"
    if st.status == "done" and all(o.exists() for o in stage.outputs):
        return "partial" if _damaged_output(stage) else "done"
    return "partial"


_WARNED: set[str] = set()


def read_state(rd: RunDir, stage: str) -> StageState | None:
    """The stage's state file; a damaged one (does not parse, no key or status) reads as absent - the stage then
    runs again, resuming what it can - and is said once."""
    try:
        return StageState.read(rd, stage)
    except UserError as e:
        _warn(str(rd.state(stage)), f"{e}; {stage} runs again")
        return None


def _warn(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"bench: warning: {message}", file=sys.stderr, flush=True)


def _damaged_output(stage: Stage) -> bool:
    """Whether a finished stage's output is damaged: a trained model (its weights against their sizes), a parquet
    table (its magic bytes), a JSON record or JSON-lines file (parses). A damaged training is resumed from its last
    checkpoint (or trained again) and saved again; the other stages run again, mostly from the cache."""
    for o in stage.outputs:
        why = model_dir_problem(o) if RunDir.of_model_dir(o) is not None else file_problem(o)
        if why:
            more = " (from its last checkpoint when one is kept)" if stage.name.startswith("train/") else ""
            _warn(str(o), f"{o}: {why}; {stage.name} runs again{more}")
            return True
    return False


def mark(out: Path, stage: Stage, status: str, **extra) -> None:
    """Record ``stage``'s key and ``status`` (running, done, incomplete) with the time and ``extra`` fields."""
    StageState(stage.key, status, time.time(), extra).write(RunDir(out), stage.name)

"""Stage state files: ``state/<stage>.json`` holds the stage's key and whether it finished."""
from __future__ import annotations

import json
import time
from pathlib import Path

from sftmix.io import write_json

from .graph import Stage

STATE = "state"


def state_path(out: Path, stage: Stage) -> Path:
    return out / STATE / (stage.name.replace("/", "__") + ".json")


def stage_status(out: Path, stage: Stage) -> str:
    """done | partial (same key, unfinished: resumes) | stale (other key: redone) | todo."""
    p = state_path(out, stage)
    if not p.exists():
        return "todo"
    st = json.loads(p.read_text())
    if st.get("key") != stage.key:
        return "stale"
    if st.get("status") == "done" and all(o.exists() for o in stage.outputs):
        return "done"
    return "partial"


def mark(out: Path, stage: Stage, status: str, **extra) -> None:
    """Record ``stage``'s key and ``status`` (running, done, incomplete) with the time and ``extra`` fields."""
    write_json(state_path(out, stage), {"key": stage.key, "status": status, "time": time.time(), **extra})

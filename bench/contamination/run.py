"""A contamination check from a run config (`bench contamination`, `bench run`'s contamination stage): the training
rows exactly as training loads them, each task's items as the run evaluates them, and the reports stored in a run
directory."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from core.errors import UserError
from sftmix.sources import data_identity

from ..provenance import git_commit, versions
from ..rundir import ContaminationReport, Provenance, RunConfigRecord, RunDir
from ..tasks import load_task
from .check import Settings, check

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..tasks import Task


def train_data(cfg: RunConfig) -> dict:
    """The training data's identity (file hash or hub id) and how it is read (split, row limit), as keyed."""
    return {**data_identity(cfg.data.data), "split": cfg.data.split, "max_examples": cfg.data.max_examples}


def train_rows(cfg: RunConfig) -> list[dict]:
    """The training rows as training loads them (``data.max_examples`` applied): row i is training row i."""
    from sftmix.data import load_rows  # heavy: imports torch

    return load_rows(cfg.data.data, split=cfg.data.split, limit=cfg.data.max_examples)


def task_items(cfg: RunConfig) -> list[tuple[Task, list[dict]]]:
    """Each task of the config with its items (``run.limit`` and ``--data-path`` applied, every item otherwise)."""
    for name in cfg.run.data_paths:
        if name not in cfg.run.tasks:
            raise UserError(f"--data-path names task {name!r}, which is not in --tasks ({', '.join(cfg.run.tasks)})")
    out = []
    for name in cfg.run.tasks:
        task = load_task(name)
        items = task.load_records(limit=cfg.run.limit, local=cfg.run.data_paths.get(name),
                                  limit_mode=cfg.run.limit_mode)
        out.append((task, items))
    return out


def provenance() -> dict:
    """When and with which code a report was made."""
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit()["commit"],
            "packages": {k: v for k, v in versions(("sftmix-bench", "lm_eval", "datasketch")).items() if v}}


def check_config(cfg: RunConfig, tasks: Sequence[tuple[Task, list[dict]]] | None = None,
                 progress: bool = True) -> dict[str, dict]:
    """The reports of ``cfg``'s training data against ``tasks`` (default: the config's tasks and their items)."""
    tasks = task_items(cfg) if tasks is None else tasks
    reports = check(train_rows(cfg), train_data(cfg), tasks, Settings.of(cfg.contamination), progress=progress)
    made = provenance()
    return {name: {**r, **made} for name, r in reports.items()}


def check_run_dir(out: Path, cfg: RunConfig) -> None:
    """Refuse to store reports in a run directory trained on other data, or other rows of it, than ``cfg``'s."""
    rd = RunDir(out).check()
    prov = Provenance.read(rd)
    ran = (prov.train_data or {}) if prov else {}
    ours = data_identity(cfg.data.data)
    why = "its table would set these reports beside the wrong scores"
    if ran and ran != ours:
        raise UserError(f"{out} was trained on {ran.get('source')} ({ran.get('sha256_16', 'hub')}), not on "
                        f"{ours.get('source')} ({ours.get('sha256_16', 'hub')}): {why}")
    data = RunConfigRecord.read(rd).data
    for key in ("split", "max_examples"):
        if key in data and data[key] != getattr(cfg.data, key):
            raise UserError(f"{out} was trained with data.{key}={data[key]}, not {getattr(cfg.data, key)}: {why} "
                            f"(pass {key}={data[key]})")


def store(out: Path, reports: dict[str, dict], **extra) -> list[Path]:
    """Write each task's report to ``out/contamination/<task>.json`` and the summary ``out/contamination.json``;
    returns the reports' paths."""
    rd = RunDir(out)
    paths = []
    for task, r in reports.items():
        own = ("task", "n_items", "item_ids", "dirty")
        paths.append(ContaminationReport(task, r["n_items"], r["item_ids"], r["dirty"],
                                         {**{k: v for k, v in r.items() if k not in own}, **extra}).write(rd))
    ContaminationReport.write_summary(rd)  # contamination.json: every task's dirty items (what bench view reads)
    return paths

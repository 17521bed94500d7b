"""A run's stages as the coordinator sees them, for ``bench status`` (any shell, while the run goes on)."""
from __future__ import annotations

import time
from pathlib import Path

from ..executors import EXECUTORS, get_executor
from ..executors.processes import pid_alive
from ..lock import HOLDER, RunLock
from ..rundir.records import JobRecord
from .state import read_state
from .worker import worker_runner


def stage_rows(run_dir: str | Path) -> tuple[list[dict], dict]:
    """One dict per stage (name, status, and where/when/why) and a header (run, config hash, coordinator)."""
    runner = worker_runner(run_dir)
    rd = runner.ctx.rd
    executors: dict[str, object] = {}
    rows = []
    for i, s in enumerate(runner.stages, 1):
        st = read_state(rd, s.name)
        row = {"index": i, "name": s.name, "status": runner.status(s), "resources": s.resources.describe()}
        if st is not None and st.key == s.key:
            # the state file's word, unless its outputs say otherwise (a "done" whose outputs are gone resumes)
            status = row["status"] if row["status"] == "done" or st.status == "done" else st.status
            row.update({k: v for k, v in st.details().items() if k != "counters"}, status=status, time=st.time)
            job = JobRecord.read(rd, s.name)
            if st.status in ("queued", "running") and job is not None:
                row.update(job_id=row.get("job_id") or job.job_id or None, executor=job.executor or None)
                kind = job.executor
                if kind in EXECUTORS and kind not in ("local", "ray"):  # ray: a task dies with its coordinator
                    if kind not in executors:
                        runner.cfg.executor.kind = kind
                        executors[kind] = get_executor(runner.cfg, rd)
                    row["alive"] = executors[kind].find(job) is not None
            elif st.status == "running":
                row["alive"] = row.get("host") is None or pid_alive(int(row.get("pid") or 0))
        elif st is not None:
            row["status"] = "stale"
        rows.append(row)
    header = {"run": str(rd.root), "config_hash": runner.cfg.config_hash(), "coordinator": coordinator(rd.root)}
    return rows, header


def coordinator(root: Path) -> dict | None:
    """The live ``bench run`` holding the run directory (its holder file), or None."""

    lock = RunLock(root)
    if not (root / HOLDER).exists():
        return None
    if lock.try_acquire():  # nobody holds it: the holder file is a dead run's
        lock.release()
        return None
    return lock.holder()


def render_status(rows: list[dict], header: dict) -> str:
    c = header["coordinator"]
    who = (f"coordinator: pid {c.get('pid')} on {c.get('host', '?')}, {c.get('command', 'bench')} started "
           f"{time.strftime('%H:%M:%S', time.localtime(c['time']))}" if c and "time" in c
           else "coordinator: none running")
    lines = [f"run {header['run']} (config {header['config_hash']}); {who}"]
    width = max(len(r["name"]) for r in rows) if rows else 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        lines.append(f"[{r['index']}/{len(rows)}] {r['status']:<10} {r['name']:<{width}}  {detail(r)}".rstrip())
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def detail(r: dict) -> str:
    job = f"{r.get('executor')} job {r['job_id']}" if r.get("job_id") and r.get("executor") not in (None, "local") \
        else None
    where = f"on {r['host']}" if r.get("host") else ""
    attempt = f"attempt {r['attempt']}" if (r.get("attempt") or 1) > 1 else ""
    st = r["status"]
    if st in ("done", "incomplete"):
        parts = [f"{float(r.get('seconds') or 0):.1f} s", where, f"as {job}" if job else "", attempt]
    elif st == "running":
        since = f"for {time.time() - r['time']:.0f} s" if r.get("time") else ""
        gone = "" if r.get("alive", True) else "(its process is gone: re-run bench run to resume it)"
        parts = [where, f"as {job}" if job else "", attempt, since, gone]
    elif st == "queued":
        gone = "" if r.get("alive", True) else "(the job is gone: re-run bench run to resubmit it)"
        parts = [job or "", attempt, gone]
    elif st == "failed":
        parts = [r.get("error") or "", f"(log: {r['log']})" if r.get("log") else ""]
    elif st == "interrupted":
        parts = [where, "(re-run bench run to resume it)"]
    else:
        parts = [r["resources"]]
    return ", ".join(p for p in parts if p)

"""``slurm``: one Slurm job per stage, through submitit (``pip install -e '.[slurm]'``).

Options come from ``executor.*``: partition, account, qos, time_min, gpus_per_node, cpus_per_task, mem_gb,
constraint, setup (shell lines run before the job, e.g. ``module load cuda``), array_parallelism (stages that become
ready together and ask for the same resources go in one job array) and slurm_extra (any other sbatch option).
submitit's folder is ``RUN/executor/slurm/``; each stage's output goes to ``RUN/executor/logs/<stage>.log``.

A job is a :class:`StageJob`, which submitit knows how to checkpoint: on preemption or time-out Slurm sends USR2,
submitit requeues the job (same id), and the stage resumes from its last training checkpoint when it starts again.
A training with ``run.num_nodes`` > 1 gets that many nodes, one task each; every task runs the launcher with its
node rank and the rendezvous taken from Slurm's environment (:func:`bench.pipeline.stages.train.launch`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from core.errors import UserError

from .base import Executor, Job, Worker, last_line, redirect_output

ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
         "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED",
         "UNKNOWN"}  # squeue failed for a moment (slurmctld busy): keep waiting rather than resubmit


class StageJob:
    """The callable submitit pickles into the job: the pipeline's worker (``bench stage``'s body) in the job's own
    process."""

    def __init__(self, worker: Worker, run_dir: str, name: str, key: str, attempt: int, cwd: str, log: str):
        self.worker = worker
        self.run_dir, self.name, self.key, self.attempt, self.cwd, self.log = run_dir, name, key, attempt, cwd, log

    def __call__(self) -> str:
        os.chdir(self.cwd)  # relative data paths in the config are the coordinator's
        redirect_output(Path(self.log))
        return self.worker(self.run_dir, self.name, key=self.key, executor="slurm", job_id=slurm_job_id(),
                           attempt=self.attempt)

    def checkpoint(self, *args, **kwargs):
        """Preempted or timed out: requeue the same call (the stage resumes from its last checkpoint)."""
        import submitit  # heavy optional dependency

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmJob(Job):
    def __init__(self, executor: "SlurmExecutor", job_id: str):
        self.executor, self.id = executor, job_id

    def alive(self) -> bool:
        return self.executor.job_state(self.id) in ALIVE

    def error(self) -> str | None:
        base = self.id.split("_")[0]
        for p in sorted(self.executor.rd.slurm_dir.glob(f"{base}*/{self.id}_0_log.err")):
            return last_line(p)
        return None

    def cancel(self) -> None:
        subprocess.run(["scancel", self.id], check=False, capture_output=True)


def slurm_job_id() -> str | None:
    """``JOB`` or ``ARRAYJOB_TASK`` inside a Slurm job, as squeue shows it."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def sbatch_parameters(cfg, resources, name: str) -> dict:
    """submitit's SlurmExecutor parameters for one job of a stage with ``resources``."""
    ex = cfg.executor
    params = {"job_name": name, "time": resources.time_min or ex.time_min, "nodes": resources.nodes,
              "ntasks_per_node": 1, "cpus_per_task": resources.cpus, "array_parallelism": ex.array_parallelism,
              "signal_delay_s": 120}
    if resources.gpus:
        params["gpus_per_node"] = resources.gpus
    if resources.mem_gb:
        params["mem"] = f"{int(resources.mem_gb)}GB"
    for k in ("partition", "account", "qos", "constraint"):
        if getattr(ex, k):
            params[k] = getattr(ex, k)
    if ex.setup:
        params["setup"] = list(ex.setup)
    if ex.slurm_extra:
        params["additional_parameters"] = dict(ex.slurm_extra)
    return params


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, cfg, rd, worker=None):
        super().__init__(cfg, rd, worker)
        self._squeue: tuple[float, dict[str, str]] = (0.0, {})
        self._submitit = None

    def _executor(self):
        if self._submitit is None:
            try:
                import submitit  # optional dependency
            except ImportError:
                raise UserError("the slurm executor needs submitit: pip install -e '.[slurm]'") from None
            if shutil.which("sbatch") is None or shutil.which("srun") is None:
                raise UserError("the slurm executor needs Slurm's sbatch and srun on this machine (a login node)")
            self.rd.slurm_dir.mkdir(parents=True, exist_ok=True)
            self._submitit = submitit.SlurmExecutor(folder=self.rd.slurm_dir.resolve() / "%j",
                                                    python=sys.executable)
        return self._submitit

    def submit(self, stages, attempts):
        ex = self._executor()
        groups: dict = {}
        for s in stages:  # stages ready together with the same resources: one job array
            groups.setdefault((s.kind, s.resources), []).append(s)
        jobs = {}
        for (kind, res), group in groups.items():
            name = f"bench:{group[0].name}" if len(group) == 1 else f"bench:{kind}x{len(group)}"
            ex.update_parameters(**sbatch_parameters(self.cfg, res, name))
            calls = [self._call(s, attempts[s.name]) for s in group]
            try:
                submitted = [ex.submit(calls[0])] if len(calls) == 1 else ex.submit_array(calls)
            except Exception as e:  # noqa: BLE001 - sbatch's own refusal (bad partition, account, ...) is the message
                msg = str(e).strip().splitlines()
                raise UserError(f"sbatch refused {group[0].name}: {msg[-1] if msg else type(e).__name__}") from None
            for s, j in zip(group, submitted):
                jobs[s.name] = SlurmJob(self, str(j.job_id))
        self._squeue = (0.0, {})
        return jobs

    def _call(self, stage, attempt: int) -> StageJob:
        return StageJob(self.worker, str(self.rd.root.resolve()), stage.name, stage.key, attempt, os.getcwd(),
                        str(self.rd.stage_log(stage.name).resolve()))

    def job_state(self, job_id: str) -> str | None:
        """The job's state as squeue shows it (None once it has left the queue), one squeue call per second."""
        t, states = self._squeue
        if time.time() - t > 1.0:
            out = subprocess.run(["squeue", "-h", "-r", "-u", str(os.getuid()), "-o", "%i|%T"], capture_output=True,
                                 text=True, check=False)
            if out.returncode != 0:
                return "UNKNOWN"
            states = dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
            self._squeue = (time.time(), states)
        return states.get(job_id)

    def find(self, record):
        job_id = record.job_id
        return SlurmJob(self, job_id) if job_id and self.job_state(job_id) in ALIVE else None

    def describe(self, stages):
        """One generated sbatch script, as submitit would write it: the first GPU stage's (the one worth checking),
        else the first stage's."""
        if not stages:
            return []
        try:
            from submitit.slurm.slurm import _make_sbatch_string  # optional dependency
        except ImportError:
            return ["(install submitit, pip install -e '.[slurm]', to see the sbatch script)"]
        s = next((x for x in stages if x.resources.gpus), stages[0])
        folder = self.rd.slurm_dir.resolve() / "%j"
        params = sbatch_parameters(self.cfg, s.resources, f"bench:{s.name}")
        text = _make_sbatch_string(command=f"{sys.executable} -u -m submitit.core._submit {folder}",
                                   folder=folder, **params)
        return [f"sbatch script for {s.name} (submitit):", *("  " + ln for ln in text.splitlines())]

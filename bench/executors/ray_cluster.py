"""``ray``: one Ray task per stage (``pip install -e '.[ray]'``), on the cluster at ``executor.ray_address`` (or
``$RAY_ADDRESS``), else on a local one Ray starts for the run.

Each task asks for the stage's CPUs and GPUs and runs in a fresh worker process (``max_calls=1``: no model or CUDA
state carries over between stages); the worker chdirs to the coordinator's directory and gets its environment
(offline switches, caches) through the task's ``runtime_env``. Ray ends a driver's tasks with the driver, so after
a coordinator is killed its running stages are simply re-submitted (their stage locks keep a straggler and its
replacement from overlapping; training resumes from its checkpoint)."""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import UserError

from .base import Executor, Job, Worker, redirect_output, worker_env


def _run_stage_task(worker: Worker, run_dir: str, name: str, key: str, attempt: int, cwd: str, log: str) -> str:
    """The Ray task: the pipeline's worker (``bench stage``'s body) in the task's worker process."""
    import ray  # optional dependency (the ray extra); this runs only inside a Ray task

    os.chdir(cwd)
    redirect_output(Path(log))
    job_id = ray.get_runtime_context().get_task_id()
    return worker(run_dir, name, key=key, executor="ray", job_id=job_id, attempt=attempt)


class RayJob(Job):
    def __init__(self, ref):
        self.ref = ref
        self.id = ref.task_id().hex()[:16]
        self._error: str | None = None

    def alive(self) -> bool:
        import ray  # heavy optional dependency

        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return True
        try:
            ray.get(self.ref)
        except Exception as e:  # noqa: BLE001 - the task's failure is reported, not raised, by the coordinator
            self._error = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
        return False

    def error(self) -> str | None:
        return self._error

    def cancel(self) -> None:
        import ray  # heavy optional dependency

        ray.cancel(self.ref, force=True)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, cfg, rd, worker=None):
        super().__init__(cfg, rd, worker)
        self._remote = None

    def _ray(self):
        if self._remote is None:
            try:
                import ray  # optional dependency
            except ImportError:
                raise UserError("the ray executor needs ray: pip install -e '.[ray]'") from None
            if self.cfg.run.num_nodes > 1:
                raise UserError("run.num_nodes > 1 needs the slurm executor (a multi-node allocation)")
            if not ray.is_initialized():
                try:
                    ray.init(address=self.cfg.executor.ray_address, runtime_env={"env_vars": worker_env()},
                             log_to_driver=False, configure_logging=False)
                except ConnectionError as e:
                    raise UserError(f"cannot reach the Ray cluster at {self.cfg.executor.ray_address}: {e}") from None
            self._remote = ray.remote(max_calls=1)(_run_stage_task)  # a fresh worker process per stage
        return self._remote

    def submit(self, stages, attempts):
        remote = self._ray()
        jobs = {}
        for s in stages:
            opts = {"num_cpus": s.resources.cpus, "num_gpus": s.resources.gpus, "max_retries": 0,
                    "name": f"bench:{s.name}"}
            if s.resources.mem_gb:
                opts["memory"] = int(s.resources.mem_gb * 2**30)
            ref = remote.options(**opts).remote(self.worker, str(self.rd.root.resolve()), s.name, s.key,
                                                attempts[s.name], os.getcwd(),
                                                str(self.rd.stage_log(s.name).resolve()))
            jobs[s.name] = RayJob(ref)
        return jobs

    def close(self) -> None:
        if self._remote is not None:
            import ray  # heavy optional dependency

            ray.shutdown()

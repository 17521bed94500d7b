"""What one stage asks of a cluster: GPUs and nodes, CPUs, memory, a time limit.

Training and dynamics get the run's GPUs (``run.num_gpus``, else ``executor.gpus_per_node``) on ``run.num_nodes``
nodes; generation gets the GPUs its backend uses (vLLM: tensor x data parallel; hf: one) when training has GPUs;
scoring gets none unless an in-process local judge needs one."""
from __future__ import annotations

from ..config import RunConfig
from ..executors.base import Resources

CPUS_PER_GPU = 8


def train_gpus(cfg: RunConfig) -> int:
    """GPUs per node a training uses: ``run.num_gpus``, else the cluster's ``executor.gpus_per_node`` (more than one:
    it runs under `accelerate launch`)."""
    return cfg.run.num_gpus or cfg.executor.gpus_per_node or 0


def stage_resources(cfg: RunConfig, kind: str, judged: bool = False) -> Resources:
    """The resources a stage of ``kind`` asks for under ``cfg`` (``judged``: a score stage that calls a judge)."""
    ex = cfg.executor
    train_gpus_ = train_gpus(cfg)
    if kind in ("dynamics", "train"):
        gpus, nodes = train_gpus_, cfg.run.num_nodes
    elif kind == "generate":
        g = cfg.generation
        gpus, nodes = (g.tensor_parallel_size if g.backend == "vllm" else 1) if train_gpus_ else 0, 1
    else:
        gpus, nodes = (1 if judged and cfg.judge.local and train_gpus_ else 0), 1
    cpus = ex.cpus_per_task or (CPUS_PER_GPU * gpus if gpus else 1)
    return Resources(gpus=gpus, nodes=nodes, cpus=cpus, mem_gb=ex.mem_gb, time_min=ex.time_min)

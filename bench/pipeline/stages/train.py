"""The dynamics (reference) and training stages: in process on one device, under `accelerate launch` on more."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from core.errors import UserError
from core.io import write_text
from sftmix.variants import Variant

from ..context import RunContext
from ..resources import train_gpus


def confidence_path(ctx: RunContext, v: Variant) -> Path:
    """The confidence table ``v`` trains with (from its reference model's dynamics run at its seed)."""
    return ctx.rd.confidence(ctx.dyn_dir(v.reference_model, ctx.seed_arg(v)))


def run_dynamics_stage(ctx: RunContext, ref: str | None, d: Path, seed: int | None = None) -> None:
    """Record training dynamics of reference model ``ref`` (``None``: the run's model) into ``d``."""
    if distributed(ctx):
        args = ["dynamics", "--out", str(d)] + ([f"reference_model={ref}"] if ref else [])
        return launch(ctx, args, ctx.rd.launch_config(d), seed)
    from sftmix.recipe import run_dynamics  # heavy: imports torch

    keep = ref in (None, ctx.cfg.model.model) and any(ctx.reference_stands_in(v) for v in ctx.variants
                                                      if ctx.seed_arg(v) == seed)
    run_dynamics(ctx.train_config(seed), d, reference_model=ref, keep_model=keep)


def train_stage(ctx: RunContext, v: Variant) -> None:
    """Fine-tune variant ``v`` into its folder, resuming from its last checkpoint."""
    if distributed(ctx):
        return _train_distributed(ctx, v)
    from sftmix.recipe import finetune  # heavy: imports torch

    conf = confidence_path(ctx, v) if v.needs_confidence else None
    reuse = ctx.dyn_dir(None, ctx.seed_arg(v)) if ctx.reference_stands_in(v) else None
    finetune(v, ctx.train_config(ctx.seed_arg(v)), ctx.variant_dir(v), confidence=conf, resume=True, reuse=reuse)


def _train_distributed(ctx: RunContext, v: Variant) -> None:
    """Multi-GPU: the same `bench train` under `accelerate launch` (DDP/FSDP/DeepSpeed from accelerate's config)."""
    vdir = ctx.variant_dir(v)
    args = ["train", "--variant", ctx.bases[v.name], "--out", str(vdir)]
    args += [f"{k}={getattr(v, k)}" for k in ("alpha", "mu", "pairing", "ntp_weight", "irdro_tau")]
    if v.reference_model:
        args.append(f"reference_model={v.reference_model}")
    if v.confidence_split:
        args.append(f"confidence_split={v.confidence_split}")
    if v.needs_confidence:
        args += ["--confidence", str(confidence_path(ctx, v))]
    launch(ctx, args, ctx.rd.launch_config(vdir), ctx.seed_arg(v))


def distributed(ctx: RunContext) -> bool:
    """More than one device: the stage runs under `accelerate launch`."""
    return train_gpus(ctx.cfg) > 1 or ctx.cfg.run.num_nodes > 1


def launch(ctx: RunContext, bench_args: list[str], cfg_path: Path, seed: int | None = None) -> None:
    """Run ``bench <bench_args>`` under `accelerate launch` with the seed's TrainConfig written to ``cfg_path``."""
    write_text(cfg_path, yaml.safe_dump(ctx.train_config(seed).to_dict(), sort_keys=False))
    subprocess.run(launch_command(train_gpus(ctx.cfg), ctx.cfg.run.num_nodes, bench_args, cfg_path), check=True)


def launch_command(num_gpus: int, num_nodes: int, bench_args: list[str], cfg_path: Path,
                   env: dict | None = None) -> list[str]:
    """`accelerate launch` of ``bench <bench_args>``: ``num_gpus`` processes per node; on ``num_nodes`` > 1 (one
    task per node of a Slurm allocation) with this node's rank and the rendezvous from Slurm's environment."""
    env = os.environ if env is None else env
    per_node = max(1, num_gpus)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(per_node * num_nodes)]
    if num_nodes > 1:
        if "SLURM_JOB_NODELIST" not in env:
            raise UserError("run.num_nodes > 1 runs inside a Slurm allocation: use --executor slurm")
        host = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], capture_output=True,
                              text=True, check=True, env={**os.environ, **env}).stdout.split()[0]
        port = 29500 + int(env.get("SLURM_JOB_ID", "0")) % 20000  # one port per job: jobs may share a node
        cmd += ["--num_machines", str(num_nodes), "--machine_rank", env.get("SLURM_NODEID", "0"),
                "--main_process_ip", host, "--main_process_port", str(port), "--multi_gpu"]
    return cmd + ["-m", "bench.cli", *bench_args[:1], "--config", str(cfg_path), *bench_args[1:]]

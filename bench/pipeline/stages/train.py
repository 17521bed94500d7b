"""The dynamics (reference) and training stages: in process on one device, under `accelerate launch` on more."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sftmix.io import write_text
from sftmix.variants import Variant

from ..context import RunContext


def confidence_path(ctx: RunContext, v: Variant) -> Path:
    """The confidence table ``v`` trains with (from its reference model's dynamics run at its seed)."""
    return ctx.rd.confidence(ctx.dyn_dir(v.reference_model, ctx.seed_arg(v)))


def run_dynamics_stage(ctx: RunContext, ref: str | None, d: Path, seed: int | None = None) -> None:
    """Record training dynamics of reference model ``ref`` (``None``: the run's model) into ``d``."""
    if ctx.cfg.run.num_gpus > 1:
        args = ["dynamics", "--out", str(d)] + ([f"reference_model={ref}"] if ref else [])
        return launch(ctx, args, ctx.rd.launch_config(d), seed)
    from sftmix.recipe import run_dynamics

    keep = ref in (None, ctx.cfg.model.model) and any(ctx.reference_stands_in(v) for v in ctx.variants
                                                      if ctx.seed_arg(v) == seed)
    run_dynamics(ctx.train_config(seed), d, reference_model=ref, keep_model=keep)


def train_stage(ctx: RunContext, v: Variant) -> None:
    """Fine-tune variant ``v`` into its folder, resuming from its last checkpoint."""
    if ctx.cfg.run.num_gpus > 1:
        return _train_distributed(ctx, v)
    from sftmix.recipe import finetune

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


def launch(ctx: RunContext, bench_args: list[str], cfg_path: Path, seed: int | None = None) -> None:
    """Run ``bench <bench_args>`` under `accelerate launch` with the seed's TrainConfig written to ``cfg_path``."""
    import yaml

    write_text(cfg_path, yaml.safe_dump(ctx.train_config(seed).to_dict(), sort_keys=False))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(ctx.cfg.run.num_gpus),
           "-m", "bench.cli", *bench_args[:1], "--config", str(cfg_path), *bench_args[1:]]
    subprocess.run(cmd, check=True)

"""`bench train --variant V --model M --data D [--confidence FILE] --out DIR [key=value ...]`."""
from __future__ import annotations

import argparse

from sftmix.variants import get_variant

from ._train_common import add_common, build_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default="sftmix", help="training variant (see `bench variants`)")
    parser.add_argument("--confidence", help="confidence table from `bench dynamics` (else computed first)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    add_common(parser)


def run(args) -> int:
    from sftmix.recipe import finetune  # heavy: imports torch

    cfg, variant_opts = build_config(args)
    variant = get_variant(args.variant, **variant_opts)
    result = finetune(variant, cfg, args.out, confidence=args.confidence, resume=not args.no_resume)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    first, last = (f"{losses[0]:.4f}", f"{losses[-1]:.4f}") if losses else ("-", "-")
    if result.reused:
        print(f"{variant.name} is already trained in {args.out} with this config and data (loss {first} -> {last}): "
              f"nothing to do; model in {result.model_dir} (--no-resume trains again)")
        return 0
    print(f"trained {variant.name}: loss {first} -> {last}; model saved to {result.model_dir}")
    return 0

"""`bench dynamics --model M --data D --out DIR`: reference run, confidence table, split, histogram."""
from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import UserError
from sftmix.constants import CONFIDENT

from ._train_common import add_common, build_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference-model", help="model for the reference run (default: --model)")
    add_common(parser)


def run(args) -> int:
    from sftmix.recipe import run_dynamics  # heavy: imports torch

    cfg, variant_opts = build_config(args)
    ref = variant_opts.pop("reference_model", None) or args.reference_model
    if variant_opts:
        raise UserError(f"option(s) {', '.join(variant_opts)} apply to `bench train`, not `bench dynamics`")
    df = run_dynamics(cfg, args.out, reference_model=ref)
    out = Path(args.out)
    n_conf = int((df["split"] == CONFIDENT).sum())
    print(f"confidence table: {out / 'confidence.parquet'} ({len(df)} examples, {n_conf} confident, "
          f"{len(df) - n_conf} unconfident; median confidence {df['confidence'].median():.4f})")
    print(f"histogram: {out / 'confidence.png'}")
    return 0

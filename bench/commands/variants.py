"""`bench variants`: the training variants with one-line descriptions."""
from __future__ import annotations

import argparse

from sftmix.variants import VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="also print each variant's settings")


def run(args) -> int:
    width = max(len(n) for n in VARIANTS)
    for name, desc in VARIANTS.describe():
        print(f"{name:<{width}}  {desc}")
        if args.verbose:
            v = VARIANTS.get(name)
            print(f"{'':<{width}}  ntp_weight={v.ntp_weight} mu={v.mu} alpha={v.alpha} pairing={v.pairing}")
    return 0

"""`bench table RUN [RUN...]`: comparison tables in the paper's layouts, with paired-bootstrap CIs vs NTP."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.tables import FORMATS, LAYOUTS, render_table
from core.errors import UserError
from core.io import write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="bench run result directories")
    parser.add_argument("--layout", default="default", choices=LAYOUTS,
                        help="table layout (default: every task's headline metric; auto: pick from the tasks)")
    parser.add_argument("--format", dest="fmt", default="md", choices=FORMATS + ("tex",), help="output format")
    parser.add_argument("--paper", action="store_true",
                        help="add the paper's reported numbers (Xiao et al. 2024) as separately marked rows")
    parser.add_argument("--out", metavar="FILE", help="write the table to FILE (atomically) instead of stdout")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--contamination", default="auto", choices=["auto", "only", "off"],
                        help="scores on the clean items (runs with contamination reports): auto = after the table "
                             "(md, latex), only = that table alone (any format), off = never")


def run(args) -> int:
    if args.resamples < 1:
        raise UserError(f"--resamples must be >= 1 (the bootstrap's resample count), got {args.resamples}")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.out:
        out = Path(args.out)
        if out.is_dir() or args.out.endswith(("/", "\\")):
            raise UserError(f"--out {args.out} is a directory: name the file to write, e.g. {out / 'table.md'}")
        if out.parent.exists() and not out.parent.is_dir():
            raise UserError(f"--out {args.out}: {out.parent} is a file, not a directory")
    warnings: list[str] = []
    text = render_table(args.runs, args.layout, args.fmt, paper=args.paper, n_resamples=args.resamples,
                        seed=args.seed, contamination=args.contamination, warnings=warnings)
    for w in warnings:  # an unfinished run or mixed judges: said on stderr too, not only under the table
        print(f"bench table: warning: {w}", file=sys.stderr)
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0

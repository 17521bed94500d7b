"""`bench tasks`: list the evaluation tasks (name, kind, items, scorer, data source), then the scorers."""
from __future__ import annotations

import argparse

from bench.scorers import SCORERS, get_scorer
from bench.tasks import all_tasks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="also show each task's YAML file")


def run(args: argparse.Namespace) -> int:
    rows = [(t.name, t.kind, str(t.count_items() or "?"), t.scorer, t.describe_source(),
             t.path if args.verbose else "") for t in all_tasks()]
    header = ("task", "kind", "items", "scorer", "source", "file" if args.verbose else "")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    get_scorer("mcq")  # loads the built-in scorers, then the plugins' (entry points sftmix_bench.scorers)
    print("\nscorers: " + ", ".join(f"{n} (from {SCORERS.origin[n]})" if n in SCORERS.origin else n
                                    for n in SCORERS))
    return 0

"""`bench contamination --data D --tasks T [--data-path TASK=FILE ...] [--n 13] [--json FILE] [--out RUN]`: which
evaluation items the training data already holds (lm-eval's 13-gram rule, bench.contamination).

It takes `bench run`'s data options (``--config``, ``--data``/``--train-data``, ``--tasks``, ``--data-path``,
``--limit``, ``key=value`` such as ``max_examples=1000`` or ``contamination.method=minhash``) and reads the data the
same way, so a report made here is the one `bench run`'s contamination stage would make for the same items.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from types import SimpleNamespace

from bench.commands.run import build_config
from bench.contamination import dirty_rows, summary_lines
from bench.contamination.run import check_config, check_run_dir, store
from core.io import write_text

ACCEPTS_OVERRIDES = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config, or the name of a bundled experiment (bench/experiments/)")
    p.add_argument("--data", "--train-data", dest="train_data",
                   help="training data: 'toy', a hub id, a local json/jsonl/parquet file or bigbench:TASK")
    p.add_argument("--tasks", help="comma-separated tasks (see `bench tasks`)")
    p.add_argument("--data-path", action="append", default=[], metavar="TASK=PATH",
                   help="local data file/folder for a task (repeatable), e.g. medqa_5=US/test.jsonl")
    p.add_argument("--limit", type=int, help="first N items of each task")
    p.add_argument("--n", type=int, help="word n-gram length (default 13, lm-eval's)")
    p.add_argument("--method", choices=["ngram", "minhash"],
                   help="ngram: exact n-gram overlap (default); minhash: near duplicates (needs datasketch)")
    p.add_argument("--threshold", type=float, help="minhash: Jaccard threshold of word-shingle sets (default 0.8)")
    p.add_argument("--json", metavar="FILE",
                   help='write {"<task>": {"n_items": N, "dirty": {"<item id>": [<training row index>, ...]}}}')
    p.add_argument("--out", metavar="RUN",
                   help="store the full reports in this run directory (RUN/contamination/<task>.json), where "
                        "`bench table RUN` shows scores on the clean items")
    p.add_argument("--show", type=int, default=5, metavar="K", help="dirty items printed per task (default 5)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config field, e.g. max_examples=1000")


def _config(args):
    flags = {"n": "contamination.n", "method": "contamination.method", "threshold": "contamination.threshold"}
    extra = [f"{key}={getattr(args, name)}" for name, key in flags.items() if getattr(args, name) is not None]
    ns = SimpleNamespace(config=args.config, variants=None, model=None, train_data=args.train_data, tasks=args.tasks,
                         backend=None, judge_model=None, judge_base_url=None, judge_prompts=None, limit=args.limit,
                         out=None, executor=None, data_path=args.data_path,
                         overrides=list(args.overrides or []) + extra, extra=getattr(args, "extra", None))
    return build_config(ns)


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = _config(args)
    if args.out:
        check_run_dir(Path(args.out), cfg)  # before the work: a run of other training data is refused
    reports = check_config(cfg)
    print("\n".join(summary_lines(reports, show=args.show)))
    if args.json:
        write_text(args.json, json.dumps(dirty_rows(reports), indent=1, sort_keys=True) + "\n")
        print(f"\nwrote {args.json}")
    if args.out:
        paths = store(Path(args.out), reports)
        print(f"stored {len(paths)} report(s) under {paths[0].parent}" if paths else "")
    return 0

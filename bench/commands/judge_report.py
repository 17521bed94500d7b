"""`bench judge-report RUN`: how far the judge can be trusted on every judged task of a run - repeat spread,
disagreement and test-retest agreement (not estimable with one repeat), position bias (flip rate, P(first wins)),
length bias (alpaca_eval's definition) and failures by cause - from the task summaries (:mod:`bench.reliability`)."""
from __future__ import annotations

import argparse

from bench.reliability import describe
from bench.rundir import RunDir, TaskSummary, fail
from core.io import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="+", metavar="RUN", help="run directories (bench run --out, or bench judge folders)")
    p.add_argument("--json", metavar="FILE", help="also write {run: {variant: {task: reliability}}} as JSON")


def run(args) -> int:
    out: dict = {}
    for run_dir in args.run:
        rd = RunDir(run_dir).check()
        files = rd.summaries()
        if not files:
            fail(f"{run_dir}: not a bench run directory with results (no scores/<variant>/<task>.json)")
        judged = [s for s in map(TaskSummary.read, files) if s.judge_kind != "none"]
        print(f"{run_dir}: {len(judged)} judged task summaries")
        for s in judged:
            rel = s.reliability
            if s.pairwise_baseline:
                line = f"the pairwise baseline ({s.judge}): no verdicts of its own"
            else:
                line = f"{s.judge} ({s.judge_kind}), {s.repeats} repeat(s): {describe(rel)}"
            print(f"  {s.variant} / {s.task}: {line}")
            out.setdefault(run_dir, {}).setdefault(s.variant, {})[s.task] = rel
    if args.json:
        write_json(args.json, out)
    return 0

"""`bench run`: train each variant, generate, judge and score, and print the comparison table.

With no arguments it runs the embedded default: the tiny preset on the bundled toy data and tasks, offline.
"""
from __future__ import annotations

import argparse
import logging

from bench import threads
from bench.config import experiment_path, load_run_config
from bench.pipeline import run_pipeline
from bench.rundir import RunDir
from core.errors import UserError
from sftmix.config import split_overrides

ACCEPTS_OVERRIDES = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config, or the name of a bundled experiment (bench/experiments/)")
    p.add_argument("--variants", help="comma-separated variants (see `bench variants`)")
    p.add_argument("--model", help="preset, HF hub id or local folder")
    p.add_argument("--train-data", help="training data: 'toy', a hub id or a local file")
    p.add_argument("--tasks", help="comma-separated tasks (see `bench tasks`)")
    p.add_argument("--backend", choices=["hf", "vllm"], help="generation backend")
    p.add_argument("--judge-model", help="LLM judge model name (OpenAI-compatible endpoint)")
    p.add_argument("--judge-base-url", help="judge endpoint, e.g. http://127.0.0.1:8000/v1 for `vllm serve`")
    p.add_argument("--judge-prompts", metavar="FILE",
                   help="FastChat's judge_prompts.jsonl for MT-Bench (default: downloaded once at a pinned commit)")
    p.add_argument("--limit", type=int, help="first N items of each task")
    p.add_argument("--data-path", action="append", default=[], metavar="TASK=PATH",
                   help="local data file/folder for a task (repeatable), e.g. medqa_5=US/test.jsonl")
    p.add_argument("--out", help="results directory")
    p.add_argument("--threads", type=int, help="torch's CPU threads (run.threads; default: from the free cores)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (stages, calls, tokens, cost) and stop")
    p.add_argument("--force", action="store_true", help="reuse an output directory made by a different config")
    p.add_argument("--executor", choices=["local", "processes", "slurm", "ray"],
                   help="where stages run: local (this process, default), processes (executor.workers local "
                        "workers), slurm (a job per stage, submitit), ray (a task per stage); options as "
                        "executor.KEY=VALUE, e.g. executor.partition=gpu; never part of a stage key")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config field, e.g. judge.repeats=3")


def build_config(args):
    flags = {"run.variants": args.variants, "model.model": args.model, "data.data": args.train_data,
             "run.tasks": args.tasks, "generation.backend": args.backend, "judge.model": args.judge_model,
             "judge.base_url": args.judge_base_url, "judge.prompts": args.judge_prompts, "run.limit": args.limit,
             "run.out": args.out, "executor.kind": args.executor, "run.threads": getattr(args, "threads", None)}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.data_path:
        bad = [p for p in args.data_path if "=" not in p.strip("=")]
        if bad:
            raise UserError(f"--data-path must look like TASK=PATH, got {bad[0]!r}")
        overrides["run.data_paths"] = dict(p.split("=", 1) for p in args.data_path)
    overrides.update(split_overrides(list(args.overrides or []) + list(getattr(args, "extra", None) or [])))
    # no --config: the embedded default (tiny preset, bundled toy data and tasks)
    return load_run_config(experiment_path(args.config or "default"), overrides)


def judge_count(cfg, summary: dict) -> str:
    """The judge's work in this run, honestly named: API requests for an LLM judge; verdicts for the in-process
    judges, which make no request (``judge verdicts: 140 (reference rubric, no requests)``)."""
    verdicts = summary.get("judge_verdicts", 0)
    if cfg.judge.model:
        return f"judge requests: {summary['judge_requests']} ({cfg.judge.model}; {verdicts} new verdicts)"
    what = f"local model {cfg.judge.local}, in process" if cfg.judge.local else "reference rubric"
    return f"judge verdicts: {verdicts} ({what}, no requests)"


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = build_config(args)
    if cfg.run.threads and not getattr(args, "threads", None):  # --threads was applied by bench.cli already
        threads.apply(cfg.run.threads, "run.threads")
    summary = run_pipeline(cfg, dry_run=args.dry_run, force=args.force)
    if args.dry_run:
        return 0
    print(summary["table"])
    rd = RunDir(summary["out"])
    print(f"\nresults: {summary['out']}  (tables in {rd.tables_dir}, plots in {rd.plots_dir}, "
          f"provenance in {rd.provenance})")
    print(f"stages run: {len(summary['ran'])}, skipped (already done): {len(summary['skipped'])}; "
          f"model requests: {summary['model_requests']}, {judge_count(cfg, summary)}; {summary['seconds']:.1f} s")
    if summary.get("judge_cost") and summary["judge_cost"].get("cost_usd"):
        print(f"judge cost: ${summary['judge_cost']['cost_usd']:.4f}")
    if summary.get("judge_failures"):
        print(f"{summary['judge_failures']} judge verdicts failed (see the table's notes); run the same command "
              "again to ask exactly those again")
        return 1
    return 0

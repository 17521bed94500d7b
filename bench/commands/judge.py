"""`bench judge`: judge and score the generations `bench generate` wrote (DIR/<task>.generations.jsonl).

Chat tasks go to the configured judge (an OpenAI-compatible LLM, a local model in-process, or by default the
reference-based rubric, which says so in every score); mcq/exact tasks are scored from their records.
Writes DIR/judgments/<label>/<task>.jsonl and the task summary DIR/scores/<label>/<task>.json (+ .items.jsonl),
so DIR is then a run directory that `bench table DIR` reads (docs/RUNDIR.md).

Failed verdicts are counted by cause (transport, refused, unparsable, malformed) and never cached, so running the same
command
again asks exactly those again; a refusing judge (bad key, unknown model: 400/401/403/404, or replies without
choices) stops the command with exit 2 before any task summary is written. The folder is locked while judging.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cache import Cache
from bench.config import JudgeArgs
from bench.evaluate import evaluate_task, judge_config, judge_requests, make_judge
from bench.judge.ledger import CostLedger, estimate
from bench.lock import RunLock
from bench.reliability import describe
from bench.rundir import RunDir, read_json
from bench.rundir.generations import read_generations
from bench.scorers import get_scorer
from bench.tasks import load_task
from bench.validate import check_judge_key, check_judge_url, check_model
from core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generations", required=True, help="folder written by `bench generate`")
    p.add_argument("--tasks", help="comma-separated tasks (default: every <task>.generations.jsonl in the folder)")
    p.add_argument("--judge-model", help="LLM judge model (OpenAI-compatible)")
    p.add_argument("--judge-base-url", help="judge endpoint (default OpenAI)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--judge-local", help="a local transformers model as in-process judge")
    p.add_argument("--judge-prompts", metavar="FILE",
                   help="FastChat's judge_prompts.jsonl for MT-Bench (default: downloaded once at a pinned commit)")
    p.add_argument("--text-verdicts", action="store_true",
                   help="judge without log-probabilities: AlpacaEval from the reply's text (flagged as such)")
    p.add_argument("--swap", action="store_true",
                   help="AlpacaEval: also judge every item in the other output order (position bias; mean preference)")
    p.add_argument("--alpaca-eval-prompt", metavar="FILE",
                   help="alpaca_eval's alpaca_eval_clf.txt (default: the alpaca-eval package, else a pinned download)")
    p.add_argument("--repeats", type=int, default=1,
                   help="judgments per item (combined as each scorer defines: median for MT-Bench, mean "
                        "preference for AlpacaEval)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--label", help="name of this model in the scores (default: the folder name)")
    p.add_argument("--data-path", action="append", default=[], metavar="TASK=PATH", help="local data for a task")
    p.add_argument("--dry-run", action="store_true", help="print judge calls, tokens and cost; call nothing")


def run(args) -> int:
    gdir = Path(args.generations)
    rd = RunDir(gdir)
    if not gdir.is_dir():
        raise UserError(f"generations folder not found: {gdir}")
    names = [n.strip() for n in args.tasks.split(",")] if args.tasks else sorted(
        p.name.split(".")[0] for p in gdir.glob(rd.generate_output("*").name))
    if not names:
        raise UserError(f"{gdir} holds no <task>.generations.jsonl files")
    bad = [p for p in args.data_path if "=" not in p.strip("=")]
    if bad:
        raise UserError(f"--data-path must look like TASK=PATH, got {bad[0]!r}")
    local = dict(pair.split("=", 1) for pair in args.data_path)
    local = {**_recorded_data_paths(rd, names, local), **local}
    for flag, value in (("--repeats", args.repeats), ("--concurrency", args.concurrency)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    jargs = JudgeArgs(model=args.judge_model, base_url=args.judge_base_url, api_key_env=args.api_key_env,
                      local=args.judge_local, repeats=args.repeats, concurrency=args.concurrency,
                      prompts=args.judge_prompts, text_verdicts=args.text_verdicts, swap=args.swap,
                      alpaca_eval_prompt=args.alpaca_eval_prompt)
    if jargs.model:
        check_judge_url(jargs.base_url)
    if not args.dry_run:
        check_judge_key(jargs.model, jargs.base_url, jargs.api_key_env)
        if jargs.local:
            check_model(jargs.local, "--judge-local")
    for name in names:  # unknown tasks and missing generation files fail before anything is written
        load_task(name)
        if not rd.generate_output(name).exists():
            raise UserError(f"no generations for task {name}: {rd.generate_output(name)} is missing "
                            "(run `bench generate` first)")
    if args.dry_run:
        return _run(args, gdir, names, local, jargs)
    rd.check()  # refuse, before judging, a folder in a run-directory format this bench cannot write
    with RunLock(gdir, "bench judge"):
        return _run(args, gdir, names, local, jargs)


def _recorded_data_paths(rd, names: list[str], given: dict) -> dict:
    """The local data `bench generate` read each task from (``generate.json``), for the tasks not given
    ``--data-path`` here: the judge must see the items the answers were made for."""
    if not rd.generate_marker.is_file():
        return {}
    recorded = read_json(rd.generate_marker).get("data_paths") or {}
    out = {t: p for t, p in recorded.items() if t in names and t not in given and isinstance(p, str)}
    for task, path in out.items():
        if not Path(path).exists():
            raise UserError(f"{task}: the generations were made from --data-path {task}={path}, which is gone; "
                            f"pass --data-path {task}=FILE with the same data")
        print(f"{task}: data from {path} (the --data-path the generations were made with, {rd.generate_marker.name})")
    return out


def _check_items(task, gens: list, items: list[dict], local: str | None) -> None:
    """Every generation must have its item in the data read here: judging against other data is refused."""
    ids = {str(it["id"]) for it in items}
    orphans = [g.example_id for g in gens if g.example_id not in ids]
    if orphans:
        where = f"--data-path {task.name}={local}" if local else f"its default source ({task.source})"
        raise UserError(f"{task.name}: {len(set(orphans))} of {len({g.example_id for g in gens})} "
                        f"generated items (e.g. {orphans[0]!r}) are not in the data read from {where}; the "
                        f"generations were made from other data - pass --data-path {task.name}=FILE with that data")


def _run(args, gdir: Path, names: list[str], local: dict, jargs) -> int:
    rd = RunDir(gdir)
    cache = Cache(rd.cache)
    ledger = CostLedger(jargs.prices)
    judge = make_judge(jargs, cache=cache, ledger=ledger, log_path=rd.judge_log)
    label = args.label or gdir.name
    if args.judge_model and not args.dry_run:
        judge.preflight()
    status = 0
    for name in names:
        task = load_task(name)
        gens = read_generations(rd.generate_output(name))
        items = task.load_records(local=local.get(name))
        if get_scorer(task.scorer).judged:
            _check_items(task, gens, items, local.get(name))
        ids = {g.example_id for g in gens}
        items = [it for it in items if str(it["id"]) in ids]
        if args.dry_run:
            reqs = judge_requests(task, items, gens, judge, judge_config(task, jargs), jargs)
            est = estimate(reqs, judge.name, repeats=args.repeats, prices=jargs.prices, cache=cache)
            print(f"{name}: {json.dumps(est)}")
            continue
        s = evaluate_task(task, items, gens, judge, run_dir=gdir, variant=label, meta={"model": label},
                       repeats=args.repeats, judge_args=jargs)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s["metrics"].items() if "/" not in k}
        failures = s.get("failures") or {}
        causes = f" ({', '.join(f'{k} {n}' for k, n in failures.items())})" if failures else ""
        print(f"{name}: {shown}  judge={s['judge']}  failed={s['n_failed']}/{s['n_items']}{causes}")
        if s.get("reliability"):
            print(f"  judge reliability: {describe(s['reliability'])}")
        if any(failures.values()):
            status = 1  # scores were written from the verdicts that came back; re-run to ask the failed ones again
    if status:
        print("some verdicts failed: run the same command again to ask exactly those again (answers are cached)")
    if ledger.summary().get("calls"):
        print(f"judge usage: {json.dumps(ledger.summary())}")
    if judge.kind != "llm" and not args.dry_run:  # in-process judges send no request: count their verdicts
        what = "reference rubric" if judge.kind == "reference" else f"local model {judge.name}, in process"
        print(f"judge verdicts: {judge.verdicts_made} ({what}, no requests)")
    return status

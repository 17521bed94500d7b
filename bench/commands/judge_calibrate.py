"""`bench judge-calibrate`: calibrate a judge against MT-Bench's expert votes before trusting it.

The judge plays FastChat's pairwise matches (both orders) on the MT-Bench pairs experts voted on among the five
models whose answers the reference data has (10 of the 15 pairs, 80 questions, 2 turns), and its agreement with the
experts is printed next to GPT-4's on the same matches, per turn, with and without ties (FastChat's
``compute_agreement.py``). ``--dry-run`` prints the calls, tokens and cost first; verdicts are cached in ``--out``, so
a re-run (after Ctrl-C or failures) asks only what is missing. See :mod:`bench.calibrate`.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bench import agreement as ag
from bench import calibrate
from bench.cache import Cache
from bench.config import JudgeArgs
from bench.evaluate import make_judge
from bench.judge.ledger import CostLedger, estimate
from bench.lock import RunLock
from bench.provenance import git_commit, package_versions
from bench.rundir import write_jsonl
from bench.validate import check_judge_key
from core.errors import UserError
from core.io import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge-model", required=True, help="the judge model (OpenAI-compatible endpoint)")
    p.add_argument("--judge-base-url", help="judge endpoint (default OpenAI)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--peer-dir", help="folder in ../shared/peer's layout (default: ../shared/peer beside the "
                                      "repository if present, else the pinned, sha256-checked downloads)")
    p.add_argument("--out", help="folder for the cache, verdicts and results (default runs/judge-calibrate/<model>)")
    p.add_argument("--limit", type=int, help="only the first N questions (a cheaper, rougher calibration)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", metavar="FILE", help='write {"<judge>": {"turn1": {"with_ties": {"agree", "total"}, '
                                                  '"without_ties": ...}, "turn2": ...}, "gpt-4": ...}')
    p.add_argument("--dry-run", action="store_true", help="print the judge calls, tokens and cost; call nothing")


def run(args) -> int:
    for flag, value in (("--limit", args.limit), ("--concurrency", args.concurrency)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    out = Path(args.out or Path("runs") / "judge-calibrate" / re.sub(r"[^\w.-]+", "_", args.judge_model))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is not a folder")
    data = calibrate.load(args.peer_dir or ag.default_peer_dir())
    keys = calibrate.matches(data, args.limit)
    reqs = calibrate.requests(data, keys)
    prices = {**JudgeArgs().prices, **(data["config"].price_per_1m or {})}
    cache = Cache(out / "cache.sqlite") if (out / "cache.sqlite").exists() or not args.dry_run else None
    est = estimate(reqs, args.judge_model, prices=prices, completion_tokens_per_call=250, cache=cache)
    usd = est["cost_usd"]
    print(f"{len(keys)} matches (both orders: {len(reqs)} judge calls, {est['cached']} cached) to "
          f"{args.judge_model}: ~{est['prompt_tokens']:,} prompt + ~{est['completion_tokens']:,} completion tokens "
          f"({est['tokenizer']}; ~250 completion tokens a call); "
          + (f"cost ~${usd:,.2f}" if usd is not None else "cost: no price for this model"))
    if args.dry_run:
        return 0
    check_judge_key(args.judge_model, args.judge_base_url, args.api_key_env)
    jargs = JudgeArgs(model=args.judge_model, base_url=args.judge_base_url, api_key_env=args.api_key_env,
                      concurrency=args.concurrency)
    with RunLock(out, "bench judge-calibrate"):
        ledger = CostLedger(prices)
        judge = make_judge(jargs, cache=Cache(out / "cache.sqlite"), ledger=ledger, log_path=out / "judge_log.jsonl")
        if est["calls"]:
            judge.preflight()
        verdicts = judge.judge_many(reqs)
        records = [v.to_record() for v in verdicts]
        votes, no_vote = calibrate.votes(verdicts, args.judge_model)
        table = calibrate.table(data, args.judge_model, votes)
        write_jsonl(out / "judgments.jsonl", records)
        write_jsonl(out / "votes.jsonl", votes)
        write_json(out / "calibration.json", {
            "agreement": table, "judge": {"model": args.judge_model, "base_url": args.judge_base_url,
                                          "config": data["config"].name, "fingerprint": data["config"].fingerprint()},
            "matches": len(keys), "matches_without_vote": no_vote, "limit": args.limit,
            "failures": {c: sum(1 for r in records if r.get("failure") == c) for c in ("transport", "refused",
                                                                                       "unparsable")},
            "usage": ledger.summary(), "git": git_commit(), "packages": package_versions(),
            "peer_dir": str(args.peer_dir or ag.default_peer_dir() or "pinned downloads")})
    print(f"agreement with MT-Bench's experts on the {len(votes)} matches {args.judge_model} voted on "
          "(FastChat compute_agreement.py; gpt-4 = GPT-4's recorded pairwise votes on the same matches)")
    print(ag.render(table))
    if args.json:
        write_json(args.json, table)
    if no_vote:
        print(f"{no_vote} matches have no vote (a failed game): run the same command again to ask exactly those")
        return 1
    return 0

"""Judge/score stage: generation records of one (variant, task) -> judgments, a score summary and per-item values.

Writes, per the run-directory contract (README "Results directory"):
``judgments/<variant>/<task>.jsonl``, ``scores/<variant>/<task>.json`` and ``scores/<variant>/<task>.items.jsonl``.
Which judge rates a chat task is the run's choice (``judge.model`` / ``judge.local`` / none = the reference rubric);
its name goes into every record and summary.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sftmix.errors import UserError
from sftmix.io import atomic_path, stable_json, write_json

from .config import JudgeArgs
from .judge import load_judge_config
from .judge.client import BaseJudge, JudgeRequest
from .tasks import Task

JUDGE_CONFIGS = {"mt_bench": "mt_bench_single", "reference": "mt_bench_single", "alpaca_eval": "alpaca_eval_pairwise"}


def make_judge(args: JudgeArgs, cache=None, ledger=None, log_path: str | Path | None = None) -> BaseJudge:
    """The configured judge: an OpenAI-compatible LLM, an in-process local model, or the reference rubric."""
    if args.model:
        from .judge.client import OpenAIJudge

        return OpenAIJudge(args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                           concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries,
                           cache=cache, ledger=ledger, log_path=log_path)
    if args.local:
        from sftmix.presets import resolve_model

        from .judge.local import LocalJudge

        return LocalJudge(resolve_model(args.local), cache=cache, ledger=ledger, log_path=log_path)
    from .judge.reference import ReferenceJudge

    return ReferenceJudge(cache=cache, ledger=ledger, log_path=log_path)


def judge_requests(task: Task, items: list[dict], generations: list[dict], judge: BaseJudge) -> list[JudgeRequest]:
    """The judge requests a chat task's generations need (empty for mcq/exact tasks)."""
    if task.kind != "chat":
        return []
    from .scorers import alpaca_eval, mt_bench

    name = JUDGE_CONFIGS.get(task.scorer)
    if name is None:
        raise UserError(f"task {task.name}: no judge for scorer {task.scorer!r}")
    config = load_judge_config(name)
    answers = mt_bench.answers_from_generations(generations)
    if task.scorer == "alpaca_eval":
        if judge.kind == "reference":
            raise UserError(f"task {task.name} needs an LLM judge (pairwise): pass --judge-model/--judge-base-url")
        return alpaca_eval.build_requests(config, alpaca_eval.make_items(items, answers), task=task.name)
    refs = task.reference_categories if task.scorer == "mt_bench" else None
    return mt_bench.build_requests(config, items, answers, task=task.name, ref_categories=refs)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(stable_json(r) + "\n" for r in records), encoding="utf-8")


def _nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def score_task(task: Task, items: list[dict], generations: list[dict], judge: BaseJudge | None, *, run_dir: Path,
               variant: str, meta: dict, repeats: int = 1, progress: bool = True) -> dict:
    """Judge (if needed) and score one (variant, task); write judgments, summary and items; return the summary."""
    from .generate import score_records
    from .scorers import alpaca_eval, mt_bench

    categories = {str(it["id"]): it.get("category") for it in items}
    summary: dict[str, Any] = {"task": task.name, "variant": variant, "repeats": repeats, **meta,
                               "data_hash": task.data_hash, "prompt_hash": task.prompt_hash}
    item_values: list[dict] = []
    if task.kind == "chat":
        requests = judge_requests(task, items, generations, judge)
        verdicts = judge.judge_many(requests, repeats=repeats, progress=progress)
        records = [{**v.to_record(), "variant": variant} for v in verdicts]
        _write_jsonl(run_dir / "judgments" / variant / f"{task.name}.jsonl", records)
        summary.update(judge=judge.name, judge_kind=judge.kind)
        if task.scorer == "alpaca_eval":
            res = alpaca_eval.score(records, alpaca_eval.make_items(items, mt_bench.answers_from_generations(generations)),
                                    generator=variant)
            prefs = alpaca_eval.combine(records).dropna(subset=["preference"])
            item_values = [{"example_id": str(e), "turn": 1, "category": categories.get(str(e)), "value": float(p) - 1}
                           for e, p in zip(prefs["example_id"], prefs["preference"])]
            metrics = {"win_rate": res["win_rate"], "lc_win_rate": res["lc_win_rate"], "avg_length": res["avg_length"]}
            summary.update(kind="pairwise", n_items=res["n_judged"] + res["n_failed"], n_failed=res["n_failed"],
                           lc_note=res.get("lc_note"))
        else:
            res = mt_bench.aggregate(records, categories)
            metrics = {"turn1": res["turn_1"], "turn2": res["turn_2"], "overall": res["overall"]}
            metrics.update({f"category/{c}": v["overall"] for c, v in res["per_category"].items()})
            import pandas as pd

            df = pd.DataFrame([{"example_id": r["example_id"], "turn": r["turn"], "score": r["score"]}
                               for r in records if not r["failed"]])
            if len(df):
                for (eid, turn), s in df.groupby(["example_id", "turn"])["score"].median().items():
                    item_values.append({"example_id": str(eid), "turn": int(turn), "category": categories.get(str(eid)),
                                        "value": float(s)})
            summary.update(kind="chat", n_items=res["n_judged"] + res["n_failed"], n_failed=res["n_failed"])
    else:
        res = score_records(task, generations) or {}
        src = res.get("primary") or ("acc" if task.kind == "mcq" else "em")  # the scorer's documented headline
        shown = {"em": "exact_match"}.get(src, src)
        metrics = {k: res[k] for k in ("acc", "acc_norm") if k in res} if task.kind == "mcq" else {"exact_match": res.get("em")}
        item_values = [{"example_id": str(r["example_id"]), "turn": int(r.get("turn", 0)),
                        "category": r.get("category"), "value": float(r[src])} for r in generations if r.get(src) is not None]
        summary.update(kind=task.kind, judge="none", judge_kind="none", metric_shown=shown,
                       n_items=len(generations), n_failed=0)
    if task.kind == "chat":  # failed verdicts by cause (bench.judge.client.FAILURES); a re-run asks them again
        from .judge.client import FAILURES

        summary["failures"] = {c: sum(1 for r in records if r.get("failure") == c) for c in FAILURES}
    summary["metrics"] = {k: _nan_to_none(v) for k, v in metrics.items()}
    write_json(run_dir / "scores" / variant / f"{task.name}.json", summary)
    _write_jsonl(run_dir / "scores" / variant / f"{task.name}.items.jsonl", item_values)
    return summary

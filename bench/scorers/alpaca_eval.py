"""AlpacaEval 2.0 exactly as alpaca_eval's annotator ``weighted_alpaca_eval_gpt4_turbo`` scores it.

Per item, one judge call: alpaca_eval's prompt with the reference (``output_1``, gpt4_turbo) and the model
(``output_2``) shown in an order randomised per item and seeded by the instruction
(:func:`is_switched`, alpaca_eval's ``RandomSwitchTwoColumnsProcessor`` as its ``PairwiseAnnotator`` sets it up:
seeded by ``"is_switched_outputs" + instruction + "0"``, the annotator's own ``seed=0`` handed down to the
processor); ``max_tokens=1``, top-5 log-probabilities. With ``judge.swap`` (our addition) every item is also judged
in the other order and the two preferences are averaged; the pair of verdicts measures position bias.
The parser turns p = P(m) / (P(m) + P(M)) into the shown-order preference 2 - p; a switched item's preference is
mirrored (3 - x), so ``preference`` in [1, 2] is always "how much the model beats the reference" + 1. Items whose
output equals the reference get 1.5 without a call, as alpaca_eval does. Repeats (our addition) are averaged.

Metrics (``alpaca_eval.metrics.get_winrate``; :func:`winrate`):
- ``win_rate`` = 100 · mean(preference − 1); ``standard_error`` = 100 · its standard error (ddof 1);
- ``n_wins`` / ``n_wins_base``: preference − 1 above / below 0.5; ``n_draws``: preference exactly 1.5;
  ``n_total``: items with a preference;
- ``discrete_win_rate``: the same mean after rounding each preference to 1 or 2 (1.5 stays a draw);
- ``length_controlled_winrate``: alpaca_eval's own GLM (``glm_winrate``), which needs the package and its
  ``df_gamed.csv`` from the hub (or ``glm_data_dir``); otherwise NaN and ``lc_note`` says why;
- ``avg_length``: ``int`` of the mean character length of the model's outputs (alpaca_eval's leaderboard column).

With ``judge.text_verdicts`` (endpoints without log-probabilities) the reply's text "m"/"M" is used instead: the
win rate is then discrete, and every table says it is not AlpacaEval 2.0's weighted win rate.
"""
from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Iterable
from unittest import mock

import pandas as pd

from core.errors import UserError, first_line

from bench import reliability as rel
from bench.judge import JudgeConfig, JudgeRequest
from bench.rundir.judgments import Verdict

from . import SCORERS
from .base import Metric, ScoreResult, max_repeats
from .chat import ChatScorer
from .mt_bench import answers_from_generations

TASK = "alpaca_eval"
SWITCH_COLUMN = "is_switched_outputs"  # alpaca_eval's _switch_column for pairwise annotators
# The seed alpaca_eval really uses: BaseAnnotator(seed=0) builds each SingleAnnotator with seed=self.seed, which
# sets processor_kwargs["seed"] for the RandomSwitchTwoColumnsProcessor; the processor's own default (123) and the
# SingleAnnotator's default (123) are both overridden. Checked item by item against real annotations
# (`bench conformance`: the order inferred from each recorded preference and the raw reply's logprobs).
SWITCH_SEED = 0


def is_switched(instruction: str, seed: int = SWITCH_SEED) -> bool:
    """alpaca_eval's per-item output order: True shows the model's output first (as ``output_1``).

    ``utils.random_seeded_choice(seed=_switch_column + "".join(row[random_seed_columns]) + str(seed),
    choices=[False, True])`` with ``random_seed_columns == ["instruction"]``."""
    return random.Random(SWITCH_COLUMN + instruction + str(seed)).choices([False, True], k=1)[0]


def make_items(task_items: list[dict], outputs: dict[str, str | list[str]]) -> list[dict]:
    """Task items (``id``, ``turns`` [instruction], ``reference`` [reference output]) and the model's outputs
    ({id: text or [text]}) -> scorer items. ``index`` is the item's position in ``task_items`` (the GLM's key)."""
    out = []
    for pos, it in enumerate(task_items):
        eid = str(it["id"])
        if eid in outputs:
            text = outputs[eid]
            out.append({"example_id": eid, "instruction": it["turns"][0], "reference_output": it["reference"][0],
                        "output": text[0] if isinstance(text, list) else text, "index": pos})
    return out


def build_requests(config: JudgeConfig, items: list[dict], task: str = TASK,
                   both_orders: bool | None = None) -> list[JudgeRequest]:
    """One request per item whose output differs from the reference, in alpaca_eval's per-item order; with
    ``both_orders`` (default: the config's, i.e. ``judge.swap``) a second one in the other order
    (``meta.order == "reversed"``)."""
    both_orders = config.both_orders if both_orders is None else both_orders
    out = []
    for it in items:
        ref, model = it["reference_output"], it["output"]
        if ref == model:
            continue  # alpaca_eval: identical outputs are a draw (1.5), never sent to the judge
        switched = is_switched(it["instruction"])
        orders = [(switched, "alpaca_eval")] + ([(not switched, "reversed")] if both_orders else [])
        for sw, order in orders:
            o1, o2 = (model, ref) if sw else (ref, model)
            meta = {"swapped": sw, **({"order": order} if both_orders else {})}
            out.append(config.request("pairwise", task=task, example_id=str(it["example_id"]), turn=1,
                                      fields={"instruction": it["instruction"], "output_1": o1, "output_2": o2},
                                      meta=meta))
    return out


def model_preference(shown: float, switched: bool) -> float:
    """Shown-order preference (1: output_1 preferred .. 2: output_2) -> model-centred (2: model wins)."""
    return 3.0 - shown if switched else shown


def preferences(records: Iterable[Verdict], items: list[dict]) -> pd.DataFrame:
    """One row per item: model-centred ``preference`` (NaN when every repeat failed), ``n_repeats``."""
    rows = [{"example_id": str(it["example_id"]), "preference": 1.5, "repeat": 0}
            for it in items if it["reference_output"] == it["output"]]
    for r in records:
        ok = not r.failed and r.score is not None
        swapped = bool((r.meta or {}).get("swapped"))
        rows.append({"example_id": r.example_id, "repeat": r.repeat,
                     "preference": model_preference(float(r.score), swapped) if ok else math.nan})
    df = pd.DataFrame(rows, columns=["example_id", "preference", "repeat"])
    order = {str(it["example_id"]): k for k, it in enumerate(items)}
    out = (df.groupby("example_id", sort=False)
           .agg(preference=("preference", "mean"), n_repeats=("repeat", "nunique")).reset_index())
    return out.sort_values("example_id", key=lambda s: s.map(order).fillna(len(order))).reset_index(drop=True)


def per_repeat(records: Iterable[Verdict]) -> dict[str, list[float]]:
    """example_id -> each successful repeat's model-centred preference - 1 (both orders averaged), in repeat order."""
    by: dict[str, dict[int, list[float]]] = {}
    for r in records:
        if not r.failed and r.score is not None:
            pref = model_preference(float(r.score), bool((r.meta or {}).get("swapped")))
            by.setdefault(r.example_id, {}).setdefault(int(r.repeat), []).append(pref - 1)
    return {e: [sum(v) / len(v) for _, v in sorted(reps.items())] for e, reps in by.items()}


def winrate(prefs: Iterable[float]) -> dict:
    """alpaca_eval's ``get_winrate`` (AbsoluteScoringRule + ZeroOneScoringRule) on preferences in [1, 2]."""
    p = pd.Series(list(prefs), dtype=float).replace({0.0: 1.5})
    n_draws = int((p == 1.5).sum())
    valid = p[(p >= 1) & (p <= 2)] - 1  # NaN and out-of-range values are not preferences
    discrete = p.replace({1.5: 0}).round()
    discrete = discrete.replace({0.0: 1.5})
    discrete = discrete[(discrete >= 1) & (discrete <= 2)] - 1
    return {"win_rate": float(valid.mean() * 100) if len(valid) else math.nan,
            "standard_error": float(valid.sem() * 100) if len(valid) > 1 else math.nan,
            "n_wins": int((valid > 0.5).sum()), "n_wins_base": int((valid < 0.5).sum()), "n_draws": n_draws,
            "n_total": int(len(valid)),
            "discrete_win_rate": float(discrete.mean() * 100) if len(discrete) else math.nan}


def length_controlled(df: pd.DataFrame, glm_data_dir: str | Path | None = None) -> tuple[float, str | None]:
    """LC win rate via alpaca-eval's GLM on a dataframe with alpaca_eval's annotation columns
    (``instruction, output_1, output_2, generator_1, generator_2, annotator, preference, index``).
    Returns (lc, None) or (NaN, reason)."""
    try:
        # an optional package (alpaca-eval), heavy to import: only when an LC win rate is asked for
        from alpaca_eval.metrics import glm_winrate
    except Exception as e:  # noqa: BLE001 - ImportError, or its own missing deps (pkg_resources on new setuptools)
        return math.nan, f"alpaca-eval GLM unavailable ({type(e).__name__}: {e}); pip install alpaca-eval"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # sklearn deprecations inside the package's GLM
            if glm_data_dir is not None:
                folder = Path(glm_data_dir)
                if not (folder / "df_gamed.csv").is_file():
                    return math.nan, f"{folder} has no df_gamed.csv (tatsu-lab/alpaca_eval on the hub)"
                # The GLM fetches its precomputed tables from the hub; point it at the local copies instead.
                local = lambda repo_id, filename, **kw: str(folder / filename)  # noqa: E731
                with mock.patch.object(glm_winrate, "hf_hub_download", local):
                    out = glm_winrate.get_length_controlled_winrate(df, save_weights_dir=None,
                                                                    is_add_glm_preference_inplace=False)
            else:
                out = glm_winrate.get_length_controlled_winrate(df, save_weights_dir=None,
                                                                is_add_glm_preference_inplace=False)
    except Exception as e:  # noqa: BLE001 - offline hub, bad data: report, never crash the table
        return math.nan, f"alpaca-eval GLM failed: {type(e).__name__}: {first_line(e)}"
    return float(out["length_controlled_winrate"]), None


def score(records: Iterable[Verdict], items: list[dict], generator: str = "model", baseline: str = "gpt4_turbo",
          lc: bool = True, glm_data_dir: str | Path | None = None) -> dict:
    """AlpacaEval 2.0's figures from the verdicts of :func:`build_requests`' requests."""
    records = list(records)
    judges = sorted({r.judge for r in records if r.judge})
    prefs = preferences(records, items)
    by_id = {str(it["example_id"]): (pos, it) for pos, it in enumerate(items)}
    judged = prefs.dropna(subset=["preference"])
    out = {**winrate(judged["preference"]), "n_failed": int(prefs["preference"].isna().sum()),
           "avg_length": int(pd.Series([len(it["output"]) for it in items]).mean()) if items else math.nan,
           "reference_avg_length": float(pd.Series([len(it["reference_output"]) for it in items]).mean())
           if items else math.nan,
           "judge": judges[0] if len(judges) == 1 else judges, "length_controlled_winrate": math.nan,
           "lc_note": None}
    if not lc:
        out["lc_note"] = "not requested"
    elif len(judged) == 0:
        out["lc_note"] = "no judged items"
    else:
        rows = []
        for eid, pref in zip(judged["example_id"], judged["preference"]):
            pos, it = by_id[eid]
            rows.append({"instruction": it["instruction"], "output_1": it["reference_output"],
                         "output_2": it["output"], "generator_1": baseline, "generator_2": generator,
                         "annotator": out["judge"] if isinstance(out["judge"], str) else "judge",
                         "preference": float(pref), "index": int(it.get("index", pos))})
        out["length_controlled_winrate"], out["lc_note"] = length_controlled(pd.DataFrame(rows), glm_data_dir)
    return out


class AlpacaEvalScorer(ChatScorer):
    name = "alpaca_eval"
    version = "3"  # 3: alpaca_eval's real output order (seed 0); 2: weighted (logprob) preference
    judged = True
    judge_config = "alpaca_eval_weighted"
    text_judge_config = "alpaca_eval_pairwise"
    primary = "win_rate"
    repeat_combine = "mean"
    metrics = (
        Metric("win_rate", "WR", "AlpacaEval 2.0 win rate: mean weighted preference vs gpt4_turbo (alpaca_eval)",
               "%"),
        Metric("lc_win_rate", "LC WR", "AlpacaEval 2.0 length_controlled_winrate (alpaca_eval's GLM)", "%",
               per_item=False),
        Metric("standard_error", "SE", "standard error of the win rate", "%", higher_is_better=False,
               per_item=False),
        Metric("discrete_win_rate", "discrete WR", "win rate with each preference rounded to win/loss/draw", "%",
               per_item=False),
        Metric("avg_length", "length", "average characters of the model's outputs", "chars", per_item=False,
               higher_is_better=False),
    )

    def select_items(self, task, items, judge_kind):
        if judge_kind == "reference":
            raise UserError(f"task {task.name} needs an LLM judge (pairwise): pass --judge-model/--judge-base-url")
        return items

    def requests(self, task, items, generations, config, judge_kind):
        return build_requests(config, make_items(items, answers_from_generations(generations)), task=task.name)

    def n_judge_calls(self, task, items, n_items, repeats):
        return n_items * repeats  # judge.swap doubles it (the pipeline's plan says so)

    def reliability(self, task, items, generations, verdicts, versus=None):
        """Repeats (each repeat's model-centred preference, both orders averaged), position bias (with
        ``judge.swap``: alpaca_eval's order vs the reversed one) and length bias (model vs reference output)."""
        scored = make_items(items, answers_from_generations(generations))
        by_rep: dict[tuple, list[float]] = {}
        sides: dict[tuple, dict[str, float]] = {}
        games = []
        for r in verdicts:
            if r.failed or r.score is None:
                continue
            meta = r.meta or {}
            pref = model_preference(float(r.score), bool(meta.get("swapped")))
            key = (r.example_id, int(r.repeat))
            by_rep.setdefault(key, []).append(pref)
            games.append((key, float(r.score)))
            if "order" in meta:
                sides.setdefault(key, {})[meta["order"]] = pref
        values: dict[str, list[float]] = {}
        for (eid, rep), prefs in sorted(by_rep.items(), key=lambda kv: kv[0][1]):
            values.setdefault(eid, []).append(sum(prefs) / len(prefs))
        both = [(s["alpaca_eval"], s["reversed"]) for s in sides.values() if len(s) == 2]
        position = rel.position_bias(games, both) if sides else rel.not_applicable(
            "each item is judged in one order (judge.swap: true judges both)")
        prefs = preferences(verdicts, scored).set_index("example_id")["preference"]
        pairs = [(it["reference_output"], it["output"], prefs.get(str(it["example_id"]))) for it in scored]
        return {"repeats": rel.repeat_stats(values, max_repeats(verdicts)), "position": position,
                "length": rel.length_bias(pairs), "failures": rel.failures(verdicts)}

    def score(self, task, items, generations, verdicts=(), config=None) -> ScoreResult:
        scored = make_items(items, answers_from_generations(generations))
        res = score(verdicts, scored, generator=generations[0].model if generations else "model")
        prefs = preferences(verdicts, scored).dropna(subset=["preference"])
        categories = {str(it["id"]): it.get("category") for it in items}
        reps = per_repeat(verdicts)
        values = [{"example_id": str(e), "turn": 1, "category": categories.get(str(e)), "value": float(p) - 1,
                   **({"repeats": reps[str(e)]} if len(reps.get(str(e), ())) > 1 else {})}
                  for e, p in zip(prefs["example_id"], prefs["preference"])]
        metrics = {m.name: res["length_controlled_winrate" if m.name == "lc_win_rate" else m.name]
                   for m in self.metrics}
        metrics.update({k: res[k] for k in ("n_wins", "n_wins_base", "n_draws", "n_total")})
        info = {"n_items": len(scored), "n_failed": res["n_failed"], "lc_note": res["lc_note"],
                "protocol": self.protocol(config), "conformant": None if config is None else config.conformant}
        return ScoreResult(metrics, values, info)


SCORERS.add("alpaca_eval", AlpacaEvalScorer(), "AlpacaEval 2.0: weighted win rate vs gpt4_turbo, LC win rate")

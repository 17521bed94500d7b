"""AlpacaEval 2: pairwise preference against the reference outputs, win rate and length-controlled win rate.

Position swapping. Every item is judged in both orders: ``swapped=False`` shows (output_1, output_2) =
(reference, model), ``swapped=True`` shows (model, reference). A verdict's score uses alpaca_eval's encoding
(1: output_1 preferred, 2: output_2 preferred, 1.5: tie). Each order is turned into a model-centred preference
(2: model wins, 1: reference wins), and the two orders are combined: both agree -> that preference; they
disagree -> 1.5 (tie). If either order failed, the item fails for that repeat. Repeats are reduced to the median.
Failed items are excluded and counted in ``n_failed``.

Metrics (as in ``alpaca_eval.metrics``):
- ``win_rate`` = 100 · mean(preference − 1) over judged items, so a tie counts 0.5;
- ``lc_win_rate``: the length-controlled win rate from the alpaca-eval package's own GLM
  (``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate``, ``length_controlled_v1``). It needs the
  package and its precomputed ``df_gamed.csv`` (downloaded from the hub ``tatsu-lab/alpaca_eval`` dataset, or
  read from ``glm_data_dir``); when either is missing LC is NaN and ``lc_note`` says why. The GLM looks up an
  instruction's difficulty by its position in the 805-instruction set: items carry it as ``index`` (default: the
  item's position in the list given);
- ``avg_length``: mean characters of the model's outputs (``reference_avg_length`` beside it).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from bench.judge import JudgeConfig, JudgeRequest

TASK = "alpaca_eval"


def make_items(task_items: list[dict], outputs: dict[str, str | list[str]]) -> list[dict]:
    """Task items (``bench.tasks``: ``id``, ``turns`` [instruction], ``reference`` [reference output]) and the
    model's outputs ({id: text or [text]}) -> scorer items. ``index`` is the item's position in ``task_items``."""
    out = []
    for pos, it in enumerate(task_items):
        eid = str(it["id"])
        if eid in outputs:
            text = outputs[eid]
            out.append({"example_id": eid, "instruction": it["turns"][0], "reference_output": it["reference"][0],
                        "output": text[0] if isinstance(text, list) else text, "index": pos})
    return out


def build_requests(config: JudgeConfig, items: list[dict], task: str = TASK) -> list[JudgeRequest]:
    """Two requests per item (both orders). ``items``: ``example_id``, ``instruction``, ``output`` (model),
    ``reference_output``."""
    out = []
    for it in items:
        ref, model = it["reference_output"], it["output"]
        for swapped, (o1, o2) in ((False, (ref, model)), (True, (model, ref))):
            out.append(config.request("pairwise", task=task, example_id=str(it["example_id"]), turn=1,
                                      fields={"instruction": it["instruction"], "output_1": o1, "output_2": o2},
                                      meta={"swapped": swapped}))
    return out


def _model_pref(score: float, swapped: bool) -> float:
    """Order-specific preference -> model-centred (2 model wins, 1 reference wins, 1.5 tie)."""
    return 3.0 - score if swapped else score


def combine(records: Iterable[dict]) -> pd.DataFrame:
    """Judgment records -> one row per item: model-centred ``preference`` (NaN when failed), ``n_repeats``."""
    rows = []
    for r in records:
        ok = not r.get("failed") and r.get("score") is not None
        rows.append({"example_id": str(r["example_id"]), "repeat": r.get("repeat", 0),
                     "swapped": bool((r.get("meta") or {}).get("swapped")),
                     "pref": _model_pref(float(r["score"]), bool((r.get("meta") or {}).get("swapped")))
                     if ok else math.nan})
    df = pd.DataFrame(rows, columns=["example_id", "repeat", "swapped", "pref"])
    wide = df.pivot_table(index=["example_id", "repeat"], columns="swapped", values="pref", aggfunc="first",
                          dropna=False)
    wide = wide.reindex(columns=[False, True])
    a, b = wide[False], wide[True]
    both = a.notna() & b.notna()
    per_repeat = pd.Series(math.nan, index=wide.index)
    per_repeat[both & (a == b)] = a[both & (a == b)]
    per_repeat[both & (a != b)] = 1.5
    per_repeat = per_repeat.rename("preference").reset_index()
    return (per_repeat.groupby("example_id", sort=False)
            .agg(preference=("preference", "median"), n_repeats=("repeat", "nunique")).reset_index())


def length_controlled(df: pd.DataFrame, glm_data_dir: str | Path | None = None) -> tuple[float, str | None]:
    """LC win rate via alpaca-eval's GLM on a dataframe with alpaca_eval's annotation columns
    (``instruction, output_1, output_2, generator_1, generator_2, annotator, preference, index``).
    Returns (lc, None) or (NaN, reason)."""
    try:
        from alpaca_eval.metrics import glm_winrate
    except Exception as e:  # noqa: BLE001 - ImportError, or its own missing deps (pkg_resources on new setuptools)
        return math.nan, f"alpaca-eval GLM unavailable ({type(e).__name__}: {e}); pip install alpaca-eval"
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # sklearn deprecations inside the package's GLM
            if glm_data_dir is not None:
                from unittest import mock

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
        return math.nan, f"alpaca-eval GLM failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return float(out["length_controlled_winrate"]), None


def score(records: Iterable[dict], items: list[dict], generator: str = "model", baseline: str = "gpt4_turbo",
          lc: bool = True, glm_data_dir: str | Path | None = None) -> dict:
    """Win rate, LC win rate and average lengths from the judgment records of :func:`build_requests`' requests."""
    records = list(records)
    judges = sorted({r.get("judge") for r in records if r.get("judge")})
    prefs = combine(records) if records else pd.DataFrame(columns=["example_id", "preference", "n_repeats"])
    by_id = {str(it["example_id"]): (pos, it) for pos, it in enumerate(items)}
    judged = prefs.dropna(subset=["preference"])
    p = judged["preference"]
    out = {
        "win_rate": float((p - 1).mean() * 100) if len(p) else math.nan,
        "n_wins": int((p == 2).sum()), "n_losses": int((p == 1).sum()), "n_ties": int(((p > 1) & (p < 2)).sum()),
        "n_judged": int(len(p)), "n_failed": int(prefs["preference"].isna().sum()),
        "avg_length": float(pd.Series([len(it["output"]) for it in items]).mean()) if items else math.nan,
        "reference_avg_length": float(pd.Series([len(it["reference_output"]) for it in items]).mean())
        if items else math.nan,
        "judge": judges[0] if len(judges) == 1 else judges, "lc_win_rate": math.nan, "lc_note": None,
    }
    if not lc:
        out["lc_note"] = "not requested"
    elif len(p) == 0:
        out["lc_note"] = "no judged items"
    else:
        rows = []
        for eid, pref in zip(judged["example_id"], p):
            pos, it = by_id[eid]
            rows.append({"instruction": it["instruction"], "output_1": it["reference_output"],
                         "output_2": it["output"], "generator_1": baseline, "generator_2": generator,
                         "annotator": out["judge"] if isinstance(out["judge"], str) else "judge",
                         "preference": float(pref), "index": int(it.get("index", pos))})
        out["lc_win_rate"], out["lc_note"] = length_controlled(pd.DataFrame(rows), glm_data_dir)
    return out
VERSION = "1"  # bump when the scoring changes: the score stage key includes it

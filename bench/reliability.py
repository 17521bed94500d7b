"""How far a judge's verdicts can be trusted, from the verdicts of one task: repeat noise, position bias, length
bias and failures. Pure functions on plain values; each scorer feeds them its own view of the verdicts
(``Scorer.reliability``), and the result is stored as ``reliability`` in the task summary.

- **repeats** (``judge.repeats`` >= 2): per item, the values its repeats gave. ``spread``: the mean over items of
  the repeats' standard deviation (ddof 1); ``disagreement``: the share of items whose repeats are not all equal;
  ``test_retest``: Pearson's r between repeat 1 and repeat 2 over the items that have both (None when either is
  constant). With one repeat none of these can be estimated: they are None with ``note`` saying so, never 0.
- **position** (a pair shown in both orders: MT-Bench pairwise, AlpacaEval with ``judge.swap``): ``p_first_wins``,
  P(the output shown first wins) over decisive verdicts (not a tie, not a preference of exactly 1.5), and
  ``flip_rate``: over pairs decisive in both orders, the share whose winner changed with the order (the same
  position won both times). An unbiased judge has 0.5 and 0.
- **length** (alpaca_eval ``analyze.Analyzer.get_length_biases``): over pairs whose outputs' lengths differ by more
  than 30 characters, P(the preferred output is the longer one); preferences of exactly 1.5 count for neither.
- **failures**: failed verdicts by cause (``bench.rundir.FAILURES``).
"""
from __future__ import annotations

import math
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

from .rundir import FAILURES

SIGNIFICANT_DELTA_LENGTH = 30  # alpaca_eval's get_length_biases default


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def repeat_stats(values: Mapping[Hashable, Sequence[float]], repeats: int) -> dict:
    """Judge noise over repeats; ``values``: item -> the values of its successful repeats, in repeat order."""
    out = {"repeats": int(repeats), "n_items": len(values), "spread": None, "disagreement": None,
           "test_retest": None, "note": None}
    multi = [np.asarray(v, dtype=float) for v in values.values() if len(v) >= 2]
    if repeats < 2 or not multi:
        out["note"] = ("not estimable: 1 judge repeat (judge.repeats >= 2 measures it)" if repeats < 2
                       else "not estimable: no item has two successful repeats")
        return out
    out["spread"] = float(np.mean([v.std(ddof=1) for v in multi]))
    out["disagreement"] = float(np.mean([bool(np.any(v != v[0])) for v in multi]))
    first = np.array([v[0] for v in multi])
    second = np.array([v[1] for v in multi])
    if len(multi) >= 2 and first.std() > 0 and second.std() > 0:
        out["test_retest"] = float(np.corrcoef(first, second)[0, 1])
    else:
        out["note"] = "test-retest r not estimable: repeat 1 or 2 gives one value for every item"
    return out


def position_bias(games: Iterable[tuple[Hashable, float]], both_orders: Iterable[tuple[float, float]]) -> dict:
    """``games``: (pair, shown-order preference: 1 = the first output wins .. 2 = the second, 1.5 tie) of every
    verdict; ``both_orders``: for each pair judged in both orders, the two verdicts as *one side's* preference
    (mirrored for the swapped order), so that a flip is a change of side."""
    shown = [p for _, p in games if p is not None and not math.isnan(p)]
    decisive = [p for p in shown if p != 1.5]
    first = sum(p < 1.5 for p in decisive)
    pairs = [(a, b) for a, b in both_orders if a is not None and b is not None and not (math.isnan(a) or math.isnan(b))]
    decided = [(a, b) for a, b in pairs if a != 1.5 and b != 1.5]
    flips = sum((a < 1.5) != (b < 1.5) for a, b in decided)
    return {"n_decisive": len(decisive), "first_wins": int(first),
            "p_first_wins": first / len(decisive) if decisive else None,
            "n_pairs": len(pairs), "n_decisive_pairs": len(decided), "flips": int(flips),
            "flip_rate": flips / len(decided) if decided else None,
            "note": None if pairs else "not estimable: no pair judged in both orders"}


def length_bias(pairs: Iterable[tuple[str, str, float]], delta: int = SIGNIFICANT_DELTA_LENGTH) -> dict:
    """alpaca_eval's length bias: ``pairs`` of (output_1, output_2, preference in [1, 2], 1 = output_1 better).

    As ``get_length_biases``: best = output_1 when 1 <= preference < 1.5 else output_2; worse = output_1 when
    1.5 < preference <= 2 else output_2 (so a 1.5 or a missing preference compares output_2 with itself)."""
    n = longer = 0
    for o1, o2, pref in pairs:
        p = float("nan") if pref is None else float(pref)
        best = o1 if 1 <= p < 1.5 else o2
        worse = o1 if 1.5 < p <= 2 else o2
        if abs(len(best) - len(worse)) > delta:
            n += 1
            longer += len(best) > len(worse)
    return {"n_pairs": n, "prefer_longer": longer, "p_prefer_longer": longer / n if n else None,
            "delta_chars": delta, "note": None if n else f"not estimable: no pair differs by more than {delta} chars"}


def failures(records: Iterable) -> dict:
    """Failed verdicts (:class:`bench.rundir.Verdict`) by cause."""
    records = list(records)
    return {c: sum(1 for r in records if r.failure == c) for c in FAILURES}


def not_applicable(why: str) -> dict:
    return {"note": f"not applicable: {why}"}


def describe(rel: Mapping | None) -> str:
    """One line for tables and reports: repeats, position and length bias, failures ("not estimable" spelled out)."""
    if not rel:
        return "no reliability record (scored before reliability was recorded)"
    parts = []
    rep = rel.get("repeats") or {}
    if rep.get("spread") is None:
        parts.append(f"repeats {rep.get('repeats', 1)}: spread, disagreement and test-retest not estimable"
                     + ("" if (rep.get("repeats") or 1) < 2 else f" ({rep.get('note')})"))
    else:
        r = rep.get("test_retest")
        parts.append(f"repeats {rep['repeats']}: spread {rep['spread']:.3g}, {100 * rep['disagreement']:.0f}% of "
                     f"{rep['n_items']} items disagree, test-retest r "
                     + (f"{r:.2f}" if r is not None else "not estimable"))
    pos = rel.get("position") or {}
    if "p_first_wins" in pos:
        p, f = pos.get("p_first_wins"), pos.get("flip_rate")
        parts.append("position: P(first wins) " + (f"{100 * p:.0f}% of {pos['n_decisive']}" if p is not None
                                                    else "not estimable")
                     + ", flip rate " + (f"{100 * f:.0f}% of {pos['n_decisive_pairs']} pairs" if f is not None
                                         else "not estimable"))
    elif pos.get("note"):
        parts.append(f"position bias {pos['note']}")
    length = rel.get("length") or {}
    if length.get("p_prefer_longer") is not None:
        parts.append(f"length: P(longer preferred) {100 * length['p_prefer_longer']:.0f}% of {length['n_pairs']} "
                     f"pairs (> {length.get('delta_chars', SIGNIFICANT_DELTA_LENGTH)} chars apart)")
    elif length.get("note"):
        parts.append(f"length bias {length['note']}")
    fails = {k: v for k, v in (rel.get("failures") or {}).items() if v}
    parts.append("failures: " + (", ".join(f"{k} {v}" for k, v in fails.items()) if fails else "none"))
    return "; ".join(parts)

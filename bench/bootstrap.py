"""Paired bootstrap confidence intervals for "variant minus baseline" differences.

Both systems are scored on the same examples, so the difference is estimated on *paired* items: resampling the
shared keys (example id, or (example id, turn) for multi-turn chat) with replacement keeps each example's two scores
together, which removes the between-example variance that an unpaired test would have to carry. The interval is the
percentile interval of the resampled mean differences (Efron & Tibshirani 1993; Koehn 2004 for its use in NLP).

Judge repeats must be collapsed first (:func:`aggregate_repeats`, median per item) so that a repeated judgment is
not counted as a second example. Pure numpy; no I/O.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

# Resampling draws an (n_resamples, n) index matrix; chunk it so 2000 × 100k items stays ~200 MB at most.
_MAX_CELLS = 4_000_000


def aggregate_repeats(records: Iterable[Mapping], key: Sequence[str] = ("example_id", "turn"),
                      value: str = "value") -> list[dict]:
    """Collapse repeated judgments: one record per key with the median ``value`` (other fields from the first).

    Records with a missing/None value (failed verdicts) are dropped; a key with no valid value disappears.
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    first: dict[tuple, dict] = {}
    for r in records:
        if r.get(value) is None:
            continue
        k = tuple(r.get(f) for f in key)
        groups[k].append(float(r[value]))
        first.setdefault(k, dict(r))
    out = []
    for k, vals in groups.items():
        rec = first[k]
        rec[value] = float(np.median(vals))
        rec.pop("repeat", None)
        out.append(rec)
    return out


def _resampled_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(d)
    out = np.empty(n_resamples)
    step = max(1, _MAX_CELLS // max(n, 1))
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = d[idx].mean(axis=1)
    return out


def _paired_diffs(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> tuple[np.ndarray, int, int]:
    shared = [k for k in a if k in b]
    # Sort for determinism independent of insertion order (keys may mix str/int ids: sort on repr).
    shared.sort(key=repr)
    d = np.array([float(b[k]) - float(a[k]) for k in shared], dtype=float)
    return d, len(a), len(b)


def paired_bootstrap(a: Mapping[Hashable, float], b: Mapping[Hashable, float], n_resamples: int = 2000,
                     seed: int = 0, ci: float = 0.95) -> dict:
    """Paired bootstrap of ``mean(b) - mean(a)`` over the keys both share.

    ``a`` is the baseline (NTP), ``b`` the compared system; keys are item ids (e.g. ``(example_id, turn)``).
    Returns ``{"delta", "lo", "hi", "n", "n_a", "n_b", "complete"}``: the observed mean difference over the
    ``n`` paired keys, the percentile ``ci`` interval of ``n_resamples`` resampled differences, and whether
    the key sets overlapped fully (a :class:`UserWarning` is issued when they did not). With no shared key
    every number is NaN.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    d, n_a, n_b = _paired_diffs(a, b)
    n = len(d)
    complete = n == n_a == n_b
    if not complete:
        warnings.warn(f"paired bootstrap: only {n} keys shared ({n_a} in a, {n_b} in b); unpaired items ignored",
                      stacklevel=2)
    if n == 0:
        return {"delta": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "n_a": n_a, "n_b": n_b,
                "complete": False}
    means = _resampled_means(d, n_resamples, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"delta": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": n, "n_a": n_a, "n_b": n_b,
            "complete": complete}


def paired_bootstrap_macro(pairs: Sequence[tuple[Mapping, Mapping]], n_resamples: int = 2000, seed: int = 0,
                           ci: float = 0.95) -> dict:
    """Paired bootstrap of an unweighted macro mean over several tasks (e.g. the health table's average).

    Each task's items are resampled independently (the tasks are separate test sets), and each replicate's
    macro delta is the mean of its per-task deltas. ``n`` is the total of paired items over tasks; a task
    with no paired key makes the result NaN.
    """
    rng = np.random.default_rng(seed)
    deltas, reps, ns, complete = [], [], [], True
    for a, b in pairs:
        d, n_a, n_b = _paired_diffs(a, b)
        complete &= len(d) == n_a == n_b
        if len(d) == 0:
            return {"delta": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "complete": False}
        deltas.append(d.mean())
        reps.append(_resampled_means(d, n_resamples, rng))
        ns.append(len(d))
    if not pairs:
        raise ValueError("paired_bootstrap_macro needs at least one (a, b) pair")
    if not complete:
        warnings.warn("paired bootstrap (macro): some tasks' keys do not fully overlap; unpaired items ignored",
                      stacklevel=2)
    macro = np.mean(reps, axis=0)
    lo, hi = np.quantile(macro, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"delta": float(np.mean(deltas)), "lo": float(lo), "hi": float(hi), "n": int(sum(ns)),
            "complete": bool(complete)}

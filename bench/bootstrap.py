"""Paired bootstrap confidence intervals for "variant minus baseline" differences.

Both systems are scored on the same examples, so the difference is estimated on *paired* items: resampling the
shared keys (example id, or (example id, turn) for multi-turn chat) with replacement keeps each example's two scores
together, which removes the between-example variance that an unpaired test would have to carry. The interval is the
percentile interval of the resampled mean differences (Efron & Tibshirani 1993; Koehn 2004 for its use in NLP).

Runs repeated over training seeds (``run.seeds``) use a two-level bootstrap (:func:`two_level_bootstrap`):
resample seeds, then items within each resampled seed (Davison & Hinkley 1997, §3.8 on multi-stage sampling), so
the interval carries the seed-to-seed spread of the difference as well as the item noise.

Judge repeats must be collapsed first (:func:`aggregate_repeats`, median per item) so that a repeated judgment is
not counted as a second example. When an item's repeats are known, :func:`paired_bootstrap` can resample them
within each drawn item as well (``a_repeats`` / ``b_repeats``: items, then repeats, combined per item as the scorer
combines them, median or mean), so the interval carries the judge's own noise besides the item sampling.
Pure numpy; no I/O.
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


def _repeat_matrix(keys: list, values: Mapping, repeats: Mapping | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, R) repeat values, NaN-padded, and each row's count; an item without repeats is its one value."""
    rows = [list((repeats or {}).get(k) or [values[k]]) for k in keys]
    width = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, np.array([len(r) for r in rows])


def _resampled_means_with_repeats(keys: list, a: Mapping, b: Mapping, a_rep: Mapping | None, b_rep: Mapping | None,
                                  combine: str, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Two-level replicates: items with replacement, then each drawn item's repeats with replacement (per side),
    combined per item (``median`` or ``mean``); the replicate is the mean of the paired differences."""
    reduce = np.nanmedian if combine == "median" else np.nanmean
    (ra, ca), (rb, cb) = _repeat_matrix(keys, a, a_rep), _repeat_matrix(keys, b, b_rep)
    n = len(keys)
    out = np.empty(n_resamples)
    step = max(1, _MAX_CELLS // max(n * max(ra.shape[1], rb.shape[1]), 1))
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        sides = []
        for reps, counts in ((ra, ca), (rb, cb)):
            c = counts[idx][..., None]
            j = np.floor(rng.random((stop - start, n, reps.shape[1])) * c).astype(int)
            drawn = reps[idx[..., None], j]
            drawn[np.arange(reps.shape[1]) >= c] = np.nan  # an item draws as many repeats as it has
            sides.append(reduce(drawn, axis=-1))
        out[start:stop] = (sides[1] - sides[0]).mean(axis=1)
    return out


def paired_bootstrap(a: Mapping[Hashable, float], b: Mapping[Hashable, float], n_resamples: int = 2000,
                     seed: int = 0, ci: float = 0.95, a_repeats: Mapping[Hashable, Sequence[float]] | None = None,
                     b_repeats: Mapping[Hashable, Sequence[float]] | None = None, combine: str = "median") -> dict:
    """Paired bootstrap of ``mean(b) - mean(a)`` over the keys both share.

    ``a`` is the baseline (NTP), ``b`` the compared system; keys are item ids (e.g. ``(example_id, turn)``).
    Returns ``{"delta", "lo", "hi", "n", "n_a", "n_b", "complete", "repeats_resampled"}``: the observed mean
    difference over the ``n`` paired keys, the percentile ``ci`` interval of ``n_resamples`` resampled differences,
    and whether the key sets overlapped fully (a :class:`UserWarning` is issued when they did not). With no shared
    key every number is NaN. ``a_repeats`` / ``b_repeats`` (item -> its judge repeats' values): when any item has
    more than one, each replicate also resamples every drawn item's repeats and combines them with ``combine``
    (``repeats_resampled`` is then True); ``a`` / ``b`` still give the observed values.
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
                "complete": False, "repeats_resampled": False}
    rng = np.random.default_rng(seed)
    with_repeats = any(len(v) > 1 for reps in (a_repeats, b_repeats) if reps for v in reps.values())
    if with_repeats:
        if combine not in ("median", "mean"):
            raise ValueError(f"combine must be 'median' or 'mean', got {combine!r}")
        keys = sorted((k for k in a if k in b), key=repr)
        means = _resampled_means_with_repeats(keys, a, b, a_repeats, b_repeats, combine, n_resamples, rng)
    else:
        means = _resampled_means(d, n_resamples, rng)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"delta": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": n, "n_a": n_a, "n_b": n_b,
            "complete": complete, "repeats_resampled": bool(with_repeats)}


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


def two_level_replicates(diffs: Sequence[np.ndarray], n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Replicates of the mean-over-seeds paired difference, resampling seeds, then items within each drawn seed.

    ``diffs[k]`` holds the per-item differences (b - a) of training seed ``k``. Replicate ``r`` draws ``S`` seed
    indices with replacement (``I[r]``, from ``default_rng([seed, 1])``); every drawn slot gets its own item
    resample of that seed's differences, and the replicate is the mean of the slots' item means. Item resamples
    come from ``default_rng(seed)``, seed by seed, in the row-major order of the slots that drew it, so with one
    seed this is exactly :func:`paired_bootstrap`'s resampling.
    """
    s = len(diffs)
    if s == 0 or any(len(d) == 0 for d in diffs):
        raise ValueError("two_level_replicates needs at least one seed, each with at least one paired item")
    draws = np.random.default_rng([seed, 1]).integers(0, s, size=(n_resamples, s)) if s > 1 \
        else np.zeros((n_resamples, 1), dtype=int)
    item_rng = np.random.default_rng(seed)
    slot_means = np.empty(draws.shape)
    for k, d in enumerate(diffs):
        where = draws == k
        count = int(where.sum())
        if count:
            slot_means[where] = _resampled_means(np.asarray(d, dtype=float), count, item_rng)
    return slot_means.mean(axis=1)


def two_level_bootstrap(pairs: Mapping[Hashable, tuple[Mapping, Mapping]], n_resamples: int = 2000, seed: int = 0,
                        ci: float = 0.95) -> dict:
    """Two-level paired bootstrap of ``mean over seeds of (mean(b) - mean(a))`` for runs repeated over seeds.

    ``pairs`` maps a training seed to that seed's ``(a, b)`` per-item scores (baseline, compared system; the
    same keys as :func:`paired_bootstrap`). The interval resamples seeds, then items within each resampled seed
    (:func:`two_level_replicates`), so it carries both the seed-to-seed spread of the difference and the item
    sampling noise. Returns ``{"delta", "lo", "hi", "n", "n_seeds", "per_seed": {seed: delta}, "complete"}``;
    ``n`` is the paired items per seed summed over seeds. With one seed it equals :func:`paired_bootstrap`.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if not pairs:
        raise ValueError("two_level_bootstrap needs at least one seed")
    order = sorted(pairs, key=repr)
    diffs, complete = [], True
    for k in order:
        d, n_a, n_b = _paired_diffs(*pairs[k])
        complete &= len(d) == n_a == n_b
        diffs.append(d)
    if not complete:
        warnings.warn("two-level bootstrap: some seeds' keys do not fully overlap; unpaired items ignored",
                      stacklevel=2)
    per_seed = {k: float(d.mean()) if len(d) else float("nan") for k, d in zip(order, diffs)}
    if any(len(d) == 0 for d in diffs):
        return {"delta": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "n_seeds": len(order),
                "per_seed": per_seed, "complete": False}
    reps = two_level_replicates(diffs, n_resamples, seed)
    lo, hi = np.quantile(reps, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"delta": float(np.mean(list(per_seed.values()))), "lo": float(lo), "hi": float(hi),
            "n": int(sum(len(d) for d in diffs)), "n_seeds": len(order), "per_seed": per_seed,
            "complete": bool(complete)}

"""Paired bootstrap on synthetic data with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from bench.bootstrap import (
    aggregate_repeats, paired_bootstrap, paired_bootstrap_macro, two_level_bootstrap, two_level_replicates,
)


def test_constant_shift_gives_exact_delta_and_degenerate_ci():
    rng = np.random.default_rng(1)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.integers(1, 11, size=200))}
    b = {k: v + 0.5 for k, v in a.items()}
    r = paired_bootstrap(a, b)
    assert r["delta"] == pytest.approx(0.5)
    assert r["lo"] == pytest.approx(0.5) and r["hi"] == pytest.approx(0.5)
    assert r["n"] == 200 and r["complete"]


def test_noisy_known_difference_is_covered_and_excludes_zero():
    rng = np.random.default_rng(2)
    n, true = 3000, 0.3
    base = rng.normal(5.0, 2.0, n)  # large per-item variance that pairing cancels
    a = {i: float(x) for i, x in enumerate(base)}
    noise = rng.normal(0, 1.0, n)
    noise -= noise.mean()  # the sample's mean difference is exactly `true`; a valid CI must cover it
    b = {i: float(x + true + e) for i, (x, e) in enumerate(zip(base, noise))}
    r = paired_bootstrap(a, b, n_resamples=1000, seed=3)
    assert r["delta"] == pytest.approx(true)
    assert r["lo"] < true < r["hi"]
    assert r["lo"] > 0
    # width ~ 2 * 1.96 * sd(diff)/sqrt(n) = 0.072; pairing must not carry the per-item variance (would be ~0.17)
    assert 0.04 < r["hi"] - r["lo"] < 0.11


def test_no_difference_ci_contains_zero():
    rng = np.random.default_rng(4)
    a = {i: float(x) for i, x in enumerate(rng.integers(0, 2, 500))}
    b = {i: float(x) for i, x in enumerate(rng.integers(0, 2, 500))}
    r = paired_bootstrap(a, b)
    assert r["lo"] < 0 < r["hi"] or r["delta"] == 0


def test_deterministic_with_seed_and_order_independent():
    rng = np.random.default_rng(5)
    a = {f"k{i}": float(x) for i, x in enumerate(rng.normal(size=100))}
    b = {k: v + float(rng.normal()) for k, v in a.items()}
    r1, r2 = paired_bootstrap(a, b, seed=7), paired_bootstrap(a, b, seed=7)
    assert r1 == r2
    shuffled = dict(reversed(list(b.items())))
    assert paired_bootstrap(a, shuffled, seed=7) == r1
    assert paired_bootstrap(a, b, seed=8)["lo"] != r1["lo"]


def test_partial_overlap_warns_and_pairs_shared_keys():
    a = {1: 1.0, 2: 2.0, 3: 3.0}
    b = {2: 4.0, 3: 5.0, 4: 100.0}
    with pytest.warns(UserWarning, match="only 2 keys shared"):
        r = paired_bootstrap(a, b)
    assert r["n"] == 2 and not r["complete"] and r["delta"] == pytest.approx(2.0)
    with pytest.warns(UserWarning):
        empty = paired_bootstrap({1: 0.0}, {2: 0.0})
    assert empty["n"] == 0 and np.isnan(empty["delta"])


def test_wider_ci_level_is_wider():
    rng = np.random.default_rng(6)
    a = {i: float(x) for i, x in enumerate(rng.normal(size=300))}
    b = {i: float(x) for i, x in enumerate(rng.normal(size=300))}
    r90, r99 = paired_bootstrap(a, b, ci=0.90), paired_bootstrap(a, b, ci=0.99)
    assert r99["lo"] < r90["lo"] < r90["hi"] < r99["hi"]


def test_macro_bootstrap_averages_task_deltas():
    t1 = ({i: 0.0 for i in range(50)}, {i: 1.0 for i in range(50)})  # delta 1 everywhere
    t2 = ({i: 0.0 for i in range(80)}, {i: 0.0 for i in range(80)})  # delta 0
    r = paired_bootstrap_macro([t1, t2])
    assert r["delta"] == pytest.approx(0.5) and r["lo"] == pytest.approx(0.5) and r["hi"] == pytest.approx(0.5)
    assert r["n"] == 130
    rng = np.random.default_rng(9)
    noisy = [({i: float(x) for i, x in enumerate(rng.normal(0, 1, 400))},
              {i: float(x) for i, x in enumerate(rng.normal(1, 1, 400))}) for _ in range(3)]
    m = paired_bootstrap_macro(noisy)
    assert m["lo"] < 1.0 < m["hi"] and m["lo"] > 0.5


def test_aggregate_repeats_takes_median_and_drops_failures():
    recs = [{"example_id": "1", "turn": 1, "value": 3.0, "repeat": 0},
            {"example_id": "1", "turn": 1, "value": 9.0, "repeat": 1},
            {"example_id": "1", "turn": 1, "value": 4.0, "repeat": 2},
            {"example_id": "1", "turn": 2, "value": 5.0},
            {"example_id": "2", "turn": 1, "value": None}]
    out = {(r["example_id"], r["turn"]): r["value"] for r in aggregate_repeats(recs)}
    assert out == {("1", 1): 4.0, ("1", 2): 5.0}


# ---- two-level (seeds, then items) ------------------------------------------------------------------------------
def test_two_level_with_one_seed_is_the_single_level_bootstrap():
    rng = np.random.default_rng(3)
    a = {i: float(v) for i, v in enumerate(rng.integers(0, 2, 60))}
    b = {i: float(v) for i, v in enumerate(rng.integers(0, 2, 60))}
    one = two_level_bootstrap({7: (a, b)}, n_resamples=500, seed=11)
    ref = paired_bootstrap(a, b, n_resamples=500, seed=11)
    assert (one["delta"], one["lo"], one["hi"], one["n"]) == (ref["delta"], ref["lo"], ref["hi"], ref["n"])
    assert one["n_seeds"] == 1 and one["per_seed"] == {7: ref["delta"]}


def test_two_level_by_hand_seed_spread_only():
    """Seeds with constant item differences (1 and 3): items add no noise, so a replicate is the mean of two
    seeds drawn with replacement: 1 (p 1/4), 2 (p 1/2) or 3 (p 1/4); the 95% interval is [1, 3]."""
    zeros = {i: 0.0 for i in range(5)}
    pairs = {0: (zeros, {i: 1.0 for i in range(5)}), 1: (zeros, {i: 3.0 for i in range(5)})}
    r = two_level_bootstrap(pairs, n_resamples=4000, seed=0)
    assert r["delta"] == 2.0 and r["per_seed"] == {0: 1.0, 1: 3.0} and r["n"] == 10 and r["n_seeds"] == 2
    assert (r["lo"], r["hi"]) == (1.0, 3.0)
    reps = two_level_replicates([np.ones(5), np.full(5, 3.0)], n_resamples=4000, seed=0)
    assert set(np.round(reps, 12)) == {1.0, 2.0, 3.0}
    assert abs(np.mean(reps == 2.0) - 0.5) < 0.05 and abs(np.mean(reps == 1.0) - 0.25) < 0.05


def test_two_level_matches_a_plain_loop_of_its_documented_draws():
    """The vectorised replicates equal an explicit loop over replicates and slots with the same generators."""
    diffs = [np.array([1.0, 0.0, -1.0, 1.0]), np.array([0.0, 1.0, 1.0]), np.array([-1.0, 0.0, 0.0, 0.0, 1.0])]
    got = two_level_replicates(diffs, n_resamples=50, seed=5)
    draws = np.random.default_rng([5, 1]).integers(0, 3, size=(50, 3))
    item_rng = np.random.default_rng(5)
    slot = np.empty((50, 3))
    for k, d in enumerate(diffs):  # seed by seed; slots in row-major order; one item resample per slot
        for r in range(50):
            for j in range(3):
                if draws[r, j] == k:
                    slot[r, j] = d[item_rng.integers(0, len(d), size=(1, len(d)))].mean()
    # the vectorised version draws a seed's resamples as one (count, n) matrix: the same stream, row by row
    assert np.allclose(got, slot.mean(axis=1))

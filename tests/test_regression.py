"""CI regression: the `ci` experiment's scores stay within tolerance of the committed baseline, and that baseline
is far enough above an untrained model that a run which learns nothing fails the comparison."""
import json

import pytest

from bench.regression import BASELINE, TOLERANCES, collect, compare, run_ci, score_untrained

# What training adds over the untrained model (absolute rates), at least, for every variant of the baseline. Each
# margin is more than twice its metric's tolerance, so a ci run at the untrained level is flagged by `compare`.
MARGINS = {"toy_mcq/acc": 0.3, "toy_exact/exact_match": 0.2}


def test_compare_flags_moves_beyond_tolerance():
    base = {"sftmix": {"toy_mcq/acc": 0.5, "final_loss": 2.0}}
    assert compare({"sftmix": {"toy_mcq/acc": 0.52, "final_loss": 2.01}}, base) == []
    bad = compare({"sftmix": {"toy_mcq/acc": 0.7}}, base)
    assert any("toy_mcq/acc" in p and "tolerance" in p for p in bad) and any("final_loss: missing" in p for p in bad)


def test_baseline_is_well_above_an_untrained_model(tiny_model_dir):
    baseline = json.loads(BASELINE.read_text())
    untrained = score_untrained()
    # the untrained scores recorded in the file are what the same model scores today
    assert compare({"untrained": untrained}, {"untrained": baseline["untrained"]}) == []
    for key, margin in MARGINS.items():
        assert margin > 2 * TOLERANCES[key.split("/")[-1]]
        for variant, metrics in baseline["metrics"].items():
            assert metrics[key] - untrained[key] >= margin, (variant, key, metrics[key], untrained[key])
    # so a run whose training did nothing cannot pass the regression check
    flat = {variant: {**metrics, **untrained} for variant, metrics in baseline["metrics"].items()}
    problems = compare(flat, baseline["metrics"])
    assert all(any(f"{variant} {key}:" in p for p in problems) for variant in flat for key in MARGINS)


@pytest.mark.slow
def test_ci_run_matches_committed_baseline(tmp_path):
    baseline = json.loads(BASELINE.read_text())
    assert baseline["tolerances"] == TOLERANCES
    current = run_ci(tmp_path / "ci")
    assert set(current) == set(baseline["metrics"])
    assert compare(current, baseline["metrics"]) == []
    assert collect(tmp_path / "ci") == current

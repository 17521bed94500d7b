"""CI regression: the `ci` experiment's scores stay within tolerance of the committed baseline."""
import json

import pytest

from bench.regression import BASELINE, TOLERANCES, collect, compare, run_ci


def test_compare_flags_moves_beyond_tolerance():
    base = {"sftmix": {"toy_mcq/acc": 0.5, "final_loss": 2.0}}
    assert compare({"sftmix": {"toy_mcq/acc": 0.52, "final_loss": 2.01}}, base) == []
    bad = compare({"sftmix": {"toy_mcq/acc": 0.7}}, base)
    assert any("toy_mcq/acc" in p and "tolerance" in p for p in bad) and any("final_loss: missing" in p for p in bad)


@pytest.mark.slow
def test_ci_run_matches_committed_baseline(tmp_path):
    baseline = json.loads(BASELINE.read_text())
    assert baseline["tolerances"] == TOLERANCES
    current = run_ci(tmp_path / "ci")
    assert set(current) == set(baseline["metrics"])
    assert compare(current, baseline["metrics"]) == []
    assert collect(tmp_path / "ci") == current

"""dynamics.split: the median cut over all examples (the paper) or within each source task (per_source), and the
sftmix-stratified variant that uses the latter."""
import numpy as np
import pytest

from sftmix.constants import CONFIDENT, UNCONFIDENT
from sftmix.dynamics import confidence_table, labels_for, median_split_by
from core.errors import UserError
from sftmix.variants import get_variant


def test_per_source_halves_each_source():
    # task a is easy (high confidence) throughout, task b hard: the global cut sorts tasks, the per-source cut does not
    conf = np.array([-1.0, -1.1, -1.2, -1.3, -5.0, -5.1, -5.2, -5.3])
    sources = ["a"] * 4 + ["b"] * 4
    df = confidence_table([str(i) for i in range(8)], list("hhhhhhhh"), {10: -conf}, sources, how="per_source")
    assert df["split_global"].tolist() == [CONFIDENT] * 4 + [UNCONFIDENT] * 4
    assert df["split_per_source"].tolist() == [CONFIDENT, CONFIDENT, UNCONFIDENT, UNCONFIDENT] * 2
    assert df["split"].tolist() == df["split_per_source"].tolist() and df["source"].tolist() == sources
    assert median_split_by(conf, [None] * 8) == df["split_global"].tolist()  # no sources: one group
    examples = [{"id": str(i), "hash": "h", "source": s} for i, s in enumerate(sources)]
    assert labels_for(df, examples, how="global") == df["split_global"].tolist()
    old = df[["id", "hash", "confidence", "split"]]  # a table from before the per-source columns
    assert labels_for(old, examples, how="per_source") == df["split_per_source"].tolist()
    with pytest.raises(UserError, match="global or per_source|one of global, per_source"):
        labels_for(old, examples, how="median")


def test_the_stratified_variant():
    v = get_variant("sftmix-stratified")
    assert v.confidence_split == "per_source" and v.mu == 0.2 and v.needs_confidence
    assert "confidence_split" not in get_variant("sftmix").to_dict()  # unset: older stage keys stay
    assert v.to_dict()["confidence_split"] == "per_source"
    with pytest.raises(UserError, match="confidence_split must be global or per_source"):
        get_variant("sftmix", confidence_split="tasks")

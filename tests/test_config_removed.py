"""A removed config option (train.mixup_reduction, never read): old configs still load, with a deprecation warning,
and config hashes / stage keys / finished-training records from before the removal stay valid."""
import logging
from dataclasses import asdict

import sftmix.keyschema
from bench.config import RunConfig, load_run_config
from sftmix.config import TrainArgs, TrainConfig, apply_overrides, hashed_section, without_removed


def test_old_config_with_the_removed_option_is_accepted_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  mixup_reduction: pair\n  learning_rate: 1.0e-5\n")
    with caplog.at_level(logging.WARNING, logger="sftmix"):
        cfg = load_run_config(str(path), {})
    assert cfg.train.learning_rate == 1e-5 and not hasattr(cfg.train, "mixup_reduction")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "'train.mixup_reduction' is deprecated and ignored" in msgs[0]
    assert "never read" in msgs[0] and "\n" not in msgs[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sftmix"):  # the flat command-line form too, any old value
        apply_overrides(TrainConfig(), {"mixup_reduction": "token"})
    assert ["'mixup_reduction' is deprecated" in r.getMessage() for r in caplog.records] == [True]


def test_hashes_and_records_from_before_the_removal_stay_valid(monkeypatch):
    train = TrainArgs()
    assert "mixup_reduction" not in asdict(train)
    assert hashed_section("train", train) == {**asdict(train), "mixup_reduction": "pair"}
    # A train.json written before the removal still matches today's config of the same training.
    old = TrainConfig().to_dict()
    old["train"]["mixup_reduction"] = "pair"
    assert without_removed(old) == TrainConfig().to_dict()
    cfg = RunConfig()
    before = cfg.config_hash()
    monkeypatch.setattr(sftmix.keyschema, "REMOVED", {})  # the hash does read the removed option's old value
    assert cfg.config_hash() != before

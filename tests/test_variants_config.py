"""Variants registry and strict config overrides."""
import pytest

from sftmix.config import TrainConfig, apply_overrides, load_config_file, split_overrides
from core.errors import UserError
from sftmix.variants import VARIANTS, get_variant


def test_registry_has_paper_variants():
    assert {"ntp", "sftmix", "sftmix-random", "sftmix-cc", "sftmix-uu", "mixup-equal", "mixup-only"} <= set(VARIANTS)
    assert not get_variant("ntp").uses_mixup
    s = get_variant("sftmix")
    assert (s.mu, s.alpha, s.pairing, s.ntp_weight) == (0.2, 0.5, "conf_unconf", 1.0)
    assert get_variant("mixup-only").ntp_weight == 0 and get_variant("mixup-equal").mu == 1.0
    assert get_variant("sftmix-random").needs_confidence is False
    assert get_variant("sftmix-cc").pairing == "conf_conf"


def test_variant_overrides_and_errors():
    v = get_variant("sftmix", alpha=1.0, mu=0.5, pairing="random", reference_model="tiny-llama")
    assert (v.alpha, v.mu, v.pairing, v.reference_model) == (1.0, 0.5, "random", "tiny-llama")
    with pytest.raises(UserError, match="did you mean 'alpha'"):
        get_variant("sftmix", alpah=1.0)
    with pytest.raises(UserError, match="pairing"):
        get_variant("sftmix", pairing="conf_unconfident")
    with pytest.raises(UserError, match="unknown variant 'sftmx'.*did you mean 'sftmix'"):
        get_variant("sftmx")


def test_config_overrides_typed_and_strict(tmp_path):
    cfg = TrainConfig()
    rest = apply_overrides(cfg, split_overrides(["learning_rate=1e-3", "train.num_train_epochs=2", "lora=true",
                                                 "max_length=128", "mu=0.3", "max_examples=null"]))
    assert cfg.train.learning_rate == 1e-3 and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.num_train_epochs == 2.0 and cfg.model.lora is True and cfg.data.max_length == 128
    assert cfg.data.max_examples is None and rest == {"mu": 0.3}
    with pytest.raises(UserError, match="learning_rate"):
        apply_overrides(cfg, {"learning_rat": 1})
    with pytest.raises(UserError, match="integer"):
        apply_overrides(cfg, {"max_length": 1.5})
    with pytest.raises(UserError, match="key=value"):
        split_overrides(["learning_rate"])
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  seed: 7\nmodel:\n  template: alpaca\n")
    apply_overrides(cfg, load_config_file(str(f)))
    assert cfg.train.seed == 7 and cfg.model.template == "alpaca"
    f.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config_file(str(f))

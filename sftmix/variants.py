"""Training variants: NTP and the SFTMix family, as small frozen records in one registry.

A variant is fully described by how much NTP and Mixup loss it uses and how batches are paired;
adding one is one ``VARIANTS.add(...)`` line. Every field can be overridden per run (``alpha=1.0`` ...). Its loss
object is chosen from these fields by :func:`sftmix.loss.loss_for` (``mu > 0``: Mixup; ``irdro_tau > 0``: IR-DRO;
else NTP).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from core.errors import UserError
from core.registry import Registry, nearest
from .config import TrainConfig
from .constants import PAIRINGS
from .keyschema import variant_key


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    ntp_weight: float = 1.0  # weight of the NTP loss over all examples of the batch
    mu: float = 0.0  # weight of the Mixup loss (0 = plain NTP)
    alpha: float = 0.5  # λ ~ Beta(alpha, alpha)
    pairing: str = "conf_unconf"
    reference_model: str | None = None  # None = the target base model (weak-to-strong: name another)
    # > 0: IR-DRO, NTP with per-example weights softmax(loss / tau) in each batch (sftmix.loss.irdro)
    irdro_tau: float = 0.0
    # the median cut its confident/unconfident halves come from: None = the run's dynamics.split, or global /
    # per_source (within each example's source task or data set; sftmix-stratified)
    confidence_split: str | None = None

    @property
    def uses_mixup(self) -> bool:
        return self.mu > 0

    @property
    def needs_confidence(self) -> bool:
        """Whether training needs the confidence split (any confidence-based pairing with Mixup)."""
        return self.uses_mixup and self.pairing != "random"

    def with_overrides(self, **overrides) -> "Variant":
        """Return a copy with user overrides; unknown keys or bad values are a UserError."""
        allowed = {f.name for f in fields(self)} - {"name", "description"}
        for k in overrides:
            if k not in allowed:
                raise UserError(f"unknown variant option {k!r}{nearest(k, allowed)}; options: {', '.join(sorted(allowed))}")
        v = replace(self, **overrides)
        v.validate()
        return v

    def validate(self) -> None:
        for k in ("alpha", "mu", "ntp_weight", "irdro_tau"):
            value = getattr(self, k)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"variant {self.name!r}: {k} must be a finite number, got {value!r}")
        if self.pairing not in PAIRINGS:
            raise UserError(f"unknown pairing {self.pairing!r}{nearest(self.pairing, PAIRINGS)}; choose from {', '.join(PAIRINGS)}")
        if self.alpha <= 0:
            raise UserError(f"alpha must be > 0, got {self.alpha}")
        if self.mu < 0 or self.ntp_weight < 0 or (self.mu == 0 and self.ntp_weight == 0):
            raise UserError(f"variant {self.name!r}: weights must be >= 0 and not both 0")
        if self.confidence_split not in (None, "global", "per_source"):
            raise UserError(f"variant {self.name!r}: confidence_split must be global or per_source, "
                            f"got {self.confidence_split!r}")
        if self.irdro_tau < 0 or (self.irdro_tau > 0 and (self.uses_mixup or self.ntp_weight == 0)):
            raise UserError(f"variant {self.name!r}: irdro_tau must be >= 0, and IR-DRO reweights NTP alone (mu = 0)")

    def to_dict(self) -> dict:
        return variant_key(asdict(self))  # options added later left out while unset: older stage keys stay


def _plugin_variant(obj) -> Variant:
    if not isinstance(obj, Variant):
        raise TypeError(f"expected a sftmix.variants.Variant, got {type(obj).__name__}")
    obj.validate()
    return obj


# Other packages add variants through the entry-point group sftmix_bench.variants (README "Plugins").
VARIANTS: Registry[Variant] = Registry("variant", plugins="sftmix_bench.variants", plugin_item=_plugin_variant)


def _add(v: Variant) -> None:
    v.validate()
    VARIANTS.add(v.name, v, v.description)


_add(Variant("ntp", "plain next-token prediction (the baseline)", mu=0.0))
_add(Variant("sftmix", "NTP + 0.2 x Mixup of confident/unconfident pairs, alpha 0.5 (the paper's recipe)", mu=0.2))
_add(Variant("sftmix-stratified", "SFTMix with the confident/unconfident median cut made within each source task / "
             "data set (an ablation beyond the paper)", mu=0.2, confidence_split="per_source"))
_add(Variant("sftmix-random", "SFTMix with random pairs instead of confident/unconfident", mu=0.2, pairing="random"))
_add(Variant("sftmix-cc", "SFTMix mixing confident with confident examples only", mu=0.2, pairing="conf_conf"))
_add(Variant("sftmix-uu", "SFTMix mixing unconfident with unconfident examples only", mu=0.2, pairing="unconf_unconf"))
_add(Variant("mixup-equal", "NTP + 1.0 x Mixup (Mixup as an equal-weight loss)", mu=1.0))
_add(Variant("mixup-only", "Mixup loss alone, no NTP term", ntp_weight=0.0, mu=1.0))
_add(Variant("irdro", "IR-DRO (Chen et al. 2024): NTP with per-example weights softmax(loss / tau), tau 1", irdro_tau=1.0))


def get_variant(name: str, **overrides) -> Variant:
    """Look up a registered variant and apply overrides (``alpha``, ``mu``, ``pairing``, ``reference_model``...)."""
    v = VARIANTS.get(name)
    return v.with_overrides(**overrides) if overrides else v


def reference_stands_in(variant: Variant, cfg: TrainConfig) -> bool:
    """Whether the reference run of :func:`sftmix.recipe.run_dynamics` trains exactly what
    ``sftmix.recipe.finetune(variant, cfg)`` would: a plain NTP variant (NTP's settings, the target model as
    reference), ``dynamics.reference_epochs`` equal to ``train.num_train_epochs``, offline dynamics (the perplexity
    passes between steps touch neither the weights, the optimiser nor the data order). Then its final model is that variant's, and one training per seed is saved."""
    ntp = {k: v for k, v in get_variant("ntp").to_dict().items() if k not in ("name", "description")}
    mine = {k: v for k, v in variant.to_dict().items() if k not in ("name", "description")}
    return (mine == ntp and cfg.dynamics.reference_epochs == cfg.train.num_train_epochs
            and not cfg.dynamics.online)

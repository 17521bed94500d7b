"""The loss families: plain NTP, NTP + μ·Mixup (SFTMix and its ablations) and IR-DRO's reweighted NTP.

Each is an :class:`~sftmix.loss.base.SFTLoss` registered in :data:`~sftmix.loss.base.LOSSES`; :func:`loss_for`
picks one from a variant's data (``mu > 0``: Mixup; ``irdro_tau > 0``: IR-DRO; else NTP). The maths lives in the
functional losses (:func:`ntp_loss`, :func:`ntp_mixup_loss`, :func:`irdro_loss`); these objects hold the
configuration and turn one micro-step's context into their arguments.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from core.errors import UserError
from ..constants import IGNORE_INDEX, PAIRINGS
from ..pairing import mix_pair_mask
from .base import LossContext, LossOptions, LossOutput, SFTLoss, register_loss
from .irdro import irdro_loss
from .mixup import _ntp_mixup, sample_lambda
from .ntp import ntp_loss


@register_loss
class NTPLoss(SFTLoss):
    """next-token prediction over every response token (the baseline)"""

    name = "ntp"

    def __init__(self, ntp_weight: float = 1.0, options: LossOptions = LossOptions(), transform: Any = None):
        super().__init__(options, transform)
        self.ntp_weight = ntp_weight

    @classmethod
    def handles(cls, variant) -> bool:
        return not variant.uses_mixup and not variant.irdro_tau

    @classmethod
    def from_variant(cls, variant, options: LossOptions = LossOptions()) -> "NTPLoss":
        return cls(variant.ntp_weight, options)

    def forward(self, hidden: Tensor, labels: Tensor, head, ctx: LossContext) -> LossOutput:
        sc, o = ctx.scale, self.options
        tok = None
        if ctx.record_nll and ctx.training:  # per-position NLL from this very pass: no perplexity pass needed
            tok = torch.zeros(labels.shape[0], labels.shape[1] - 1, dtype=torch.float32, device=hidden.device)
        ntp = ntp_loss(hidden, labels, head, num_items=sc.num_items, lean=o.lean, transform=self.transform,
                       kernel=o.kernel, token_losses=tok, chunk_size=o.chunk_size) * sc.ntp_scale
        nll = None
        if tok is not None:
            nll = tok.sum(1) / (labels[:, 1:] != IGNORE_INDEX).sum(1).clamp(min=1)
        return LossOutput(hidden.new_zeros(()) + self.ntp_weight * ntp, ntp=ntp.detach() * sc.ga, example_nll=nll)


@register_loss
class MixupLoss(SFTLoss):
    """ntp_weight x NTP + mu x Mixup of paired rows, lambda ~ Beta(alpha, alpha) (SFTMix and its ablations)"""

    name = "mixup"

    def __init__(self, ntp_weight: float = 1.0, mu: float = 0.2, alpha: float = 0.5, pairing: str = "conf_unconf",
                 options: LossOptions = LossOptions(), transform: Any = None):
        super().__init__(options, transform)
        if not alpha > 0 or mu < 0 or ntp_weight < 0:
            raise UserError(f"MixupLoss: alpha must be > 0 and the weights >= 0 (alpha={alpha}, mu={mu}, "
                            f"ntp_weight={ntp_weight})")
        if pairing not in PAIRINGS:
            raise UserError(f"MixupLoss: unknown pairing {pairing!r}; choose from {', '.join(PAIRINGS)}")
        self.ntp_weight, self.mu, self.alpha, self.pairing = ntp_weight, mu, alpha, pairing

    @classmethod
    def handles(cls, variant) -> bool:
        return variant.uses_mixup

    @classmethod
    def from_variant(cls, variant, options: LossOptions = LossOptions()) -> "MixupLoss":
        return cls(variant.ntp_weight, variant.mu, variant.alpha, variant.pairing, options)

    def pairs(self, batch: int, device: torch.device, confident: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """The mixed pairs of a batch laid out as :class:`sftmix.pairing.PairedBatchSampler` makes it: rows ``k`` and
        ``k + B/2``; with ``confident`` flags, a ``conf_conf`` / ``unconf_unconf`` pairing keeps its kind of pair."""
        k = batch // 2
        if confident is not None and self.pairing in ("conf_conf", "unconf_unconf"):
            a = torch.nonzero(mix_pair_mask(confident, self.pairing)).flatten().to(device)
        else:
            a = torch.arange(k, device=device)
        return a, a + k

    def forward(self, hidden: Tensor, labels: Tensor, head, ctx: LossContext) -> LossOutput:
        if not ctx.training:  # evaluation: the NTP term alone
            if not self.ntp_weight:
                return LossOutput(hidden.new_zeros(()))
            return NTPLoss(self.ntp_weight, self.options, self.transform).forward(hidden, labels, head, ctx)
        sc, o = ctx.scale, self.options
        a, b = self.pairs(hidden.shape[0], hidden.device, ctx.confident)
        n_lam = 1 if o.lambda_per == "batch" else a.numel()
        lam = sample_lambda(n_lam, self.alpha, generator=ctx.rng() if ctx.rng is not None else None)
        lam = lam.to(hidden.device, torch.float32)
        lam = lam.expand(a.numel()) if n_lam == 1 else lam
        # One LM-head pass for both terms (the mixed logits are the mix of the NTP logits).
        loss, ntp, mix = _ntp_mixup(
            hidden, labels, head, a, b, lam, ntp_weight=self.ntp_weight, mu=self.mu, num_items=sc.num_items,
            ntp_scale=sc.ntp_scale, mix_scale=sc.mean_scale, lean=o.lean, chunk_size=o.chunk_size,
            tr=self.transform, one_pass=o.one_pass, check_pairs=False,
        )
        return LossOutput(loss, ntp=ntp * sc.ga if self.ntp_weight > 0 else None, mixup=mix * sc.ga)


@register_loss
class IRDROLoss(SFTLoss):
    """NTP with per-example weights softmax(loss / tau) within each batch (IR-DRO, Chen et al. 2024)"""

    name = "irdro"

    def __init__(self, tau: float = 1.0, ntp_weight: float = 1.0, options: LossOptions = LossOptions(),
                 transform: Any = None):
        super().__init__(options, transform)
        if not tau > 0:
            raise UserError(f"IRDROLoss: tau must be > 0, got {tau}")
        self.tau, self.ntp_weight = tau, ntp_weight

    @classmethod
    def handles(cls, variant) -> bool:
        return variant.irdro_tau > 0

    @classmethod
    def from_variant(cls, variant, options: LossOptions = LossOptions()) -> "IRDROLoss":
        return cls(variant.irdro_tau, variant.ntp_weight, options)

    def forward(self, hidden: Tensor, labels: Tensor, head, ctx: LossContext) -> LossOutput:
        sc = ctx.scale
        loss, losses, _ = irdro_loss(hidden, labels, head, self.tau, lean=self.options.lean,
                                     transform=self.transform, chunk_size=self.options.chunk_size)
        ntp = loss * sc.mean_scale  # a mean per micro-batch, as Mixup's
        nll = None
        if ctx.record_nll and ctx.training:  # the per-example losses the weights came from
            nll = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)
            nll[(labels[:, 1:] != IGNORE_INDEX).any(1)] = losses.to(nll.dtype)
        return LossOutput(hidden.new_zeros(()) + self.ntp_weight * ntp, ntp=ntp.detach() * sc.ga, example_nll=nll)

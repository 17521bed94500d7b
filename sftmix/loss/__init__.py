"""Losses: next-token prediction, the SFTMix Mixup regulariser and IR-DRO, with a memory-lean linear cross-entropy.

Two layers. The loss objects (:mod:`.base`, :mod:`.losses`; torchtune's style) own a variant's configuration,
take the LM head explicitly and return a typed :class:`LossOutput` whose parts stay tensors (no host sync per
step): :class:`NTPLoss`, :class:`MixupLoss` (SFTMix and its ablations), :class:`IRDROLoss`, chosen from a variant
by :func:`loss_for` through the :data:`LOSSES` registry. Beneath them the functional losses do the maths:
:func:`ntp_loss`, :func:`mixup_loss`, the one-pass :func:`ntp_mixup_loss`, :func:`irdro_loss`.

Every loss sends only the positions that predict a response token through the LM head, and by default computes
the head, the model's logit transform (soft-capping, scaling: :class:`LogitTransform`) and the cross-entropy
together in token chunks, so the full ``[tokens, V]`` logits never exist. One kernel does it all
(:mod:`.kernel`): NTP is its row term alone, NTP + Mixup adds the Mixup slots.

Modules: :mod:`.transform` (the logit transform), :mod:`.kernel` (the chunked forward/backward), :mod:`.fused`
(one chunk's softmax, Mixup targets and gradient as one fused body: C++ on CPU, ``torch.compile`` on request),
:mod:`.head` (reaching the head's real weight under ZeRO-3/FSDP hooks, peft LoRA; the full-logits fallback),
:mod:`.ntp` (``ntp_loss``, ``response_token_nll``), :mod:`.mixup` (``mixup_loss``, ``ntp_mixup_loss``,
``sample_lambda``), :mod:`.irdro` (``irdro_loss``, ``irdro_weights``), :mod:`.base` (the objects' types and
registry) and :mod:`.losses` (the families).
"""
from ..constants import IGNORE_INDEX
from .base import (LOSSES, GradAccumScale, LossContext, LossOptions, LossOutput, SFTLoss, grad_accum_scale, loss_for,
                   register_loss)
from .irdro import irdro_loss, irdro_weights
from .kernel import auto_chunk_size, chunk_rows, linear_cross_entropy
from .losses import IRDROLoss, MixupLoss, NTPLoss
from .mixup import mixup_loss, ntp_mixup_loss, sample_lambda
from .ntp import KERNELS, ntp_loss, response_token_nll
from .transform import LogitTransform, logit_transform

__all__ = [
    "SFTLoss", "NTPLoss", "MixupLoss", "IRDROLoss", "LossOutput", "LossContext", "LossOptions", "GradAccumScale",
    "grad_accum_scale", "LOSSES", "loss_for", "register_loss",
    "linear_cross_entropy", "ntp_loss", "mixup_loss", "ntp_mixup_loss", "irdro_loss", "irdro_weights",
    "sample_lambda", "IGNORE_INDEX", "LogitTransform", "logit_transform", "response_token_nll", "chunk_rows",
    "auto_chunk_size", "KERNELS",
]

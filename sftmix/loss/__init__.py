"""Losses: next-token prediction and the SFTMix Mixup regulariser, with a memory-lean linear cross-entropy.

Both losses send only the positions that predict a response token through the LM head, and by default compute
the head, the model's logit transform (soft-capping, scaling: :class:`LogitTransform`) and the cross-entropy
together in token chunks, so the full ``[tokens, V]`` logits never exist. One kernel does it all
(:mod:`.kernel`): NTP is its row term alone, NTP + Mixup adds the Mixup slots.

Modules: :mod:`.transform` (the logit transform), :mod:`.kernel` (the chunked forward/backward), :mod:`.fused`
(one chunk's softmax, Mixup targets and gradient as one fused body: C++ on CPU, ``torch.compile`` on request),
:mod:`.head` (reaching the head's real weight under ZeRO-3/FSDP hooks, peft LoRA; the full-logits fallback),
:mod:`.ntp` (``ntp_loss``, ``response_token_nll``) and :mod:`.mixup` (``mixup_loss``, ``ntp_mixup_loss``,
``sample_lambda``).
"""
from ..constants import IGNORE_INDEX
from .kernel import auto_chunk_size, chunk_rows, linear_cross_entropy
from .mixup import mixup_loss, ntp_mixup_loss, sample_lambda
from .ntp import KERNELS, ntp_loss, response_token_nll
from .transform import LogitTransform, logit_transform

# Fallback reasons already warned about (once per process); read by .head, reset by tests.
_WARNED: set[str] = set()

__all__ = [
    "linear_cross_entropy", "ntp_loss", "mixup_loss", "ntp_mixup_loss", "sample_lambda", "IGNORE_INDEX",
    "LogitTransform", "logit_transform", "response_token_nll", "chunk_rows", "auto_chunk_size", "KERNELS",
]

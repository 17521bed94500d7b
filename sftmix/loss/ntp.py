"""Next-token prediction: the Hugging Face causal-LM loss from the LM-head input, and per-example response NLL.

Only the positions that predict a response token go through the head, with the lean path through the chunked
kernel (:func:`sftmix.loss.kernel.linear_cross_entropy`: NTP is its row term alone, no Mixup slots).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import UserError
from ..constants import IGNORE_INDEX
from .head import _full_logits, _lean_or_fallback
from .kernel import linear_cross_entropy
from .transform import LogitTransform, logit_transform

KERNELS = ("auto", "sftmix", "liger", "cce")  # ntp_loss's kernel choices (the trainer's ntp_kernel)


def _shifted(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Targets for positions 0..T-2 (HF convention: position t predicts labels[t+1]) and their validity mask."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def _external_ntp(kernel: str, z: Tensor, w: Tensor, b: Optional[Tensor], y: Tensor, tr: LogitTransform):
    """Summed CE from Liger's fused linear CE or cut-cross-entropy (CUDA only, lazily imported); None if neither
    is usable here (not CUDA, not installed, a transform they don't support)."""
    if kernel == "sftmix" or not z.is_cuda or tr.scale != 1.0:
        return None
    softcap = tr.softcap
    if kernel in ("auto", "liger"):
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy  # optional, CUDA
        except ImportError:
            liger_fused_linear_cross_entropy = None
        if liger_fused_linear_cross_entropy is not None:
            out = liger_fused_linear_cross_entropy(z, w, y, bias=b, reduction="sum", softcap=softcap)
            return out[0] if isinstance(out, tuple) else out
    if kernel in ("auto", "cce") and b is None:
        try:
            from cut_cross_entropy import linear_cross_entropy as cce_linear_cross_entropy  # optional, CUDA
        except ImportError:
            return None
        return cce_linear_cross_entropy(z, w, y, softcap=softcap, reduction="sum")
    return None


def ntp_loss(
    hidden: Tensor,
    labels: Tensor,
    lm_head: Union[nn.Module, Callable[[Tensor], Tensor]],
    *,
    num_items: Optional[Union[int, Tensor]] = None,
    lean: bool = True,
    transform: Any = None,
    token_losses: Optional[Tensor] = None,
    kernel: str = "sftmix",
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Next-token CE as Hugging Face computes it for causal LMs, from the LM-head input.

    ``hidden`` is ``[B, T, D]``, ``labels`` ``[B, T]`` aligned with ``input_ids`` (-100 = ignored; shifted here).
    Token mean over the batch's valid positions, or the sum divided by ``num_items`` when given (HF Trainer's
    ``num_items_in_batch`` under gradient accumulation). ``transform``: the model's logit transform (a
    :class:`LogitTransform` or the model's config; None = identity). Only valid positions go through the head;
    with ``lean`` through :func:`linear_cross_entropy`. ``token_losses`` (``[B, T-1]`` float, optional) receives
    each position's NLL (0 where ignored). ``kernel``: ``sftmix`` (ours), or on CUDA ``liger`` /
    ``cce`` / ``auto`` (Liger's fused linear CE or cut-cross-entropy when installed, else ours). ``chunk_size``:
    rows per chunk of our kernel (None: from the memory budget).
    """
    if kernel not in KERNELS:
        raise UserError(f"unknown loss kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    tr = logit_transform(transform)
    targets, mask = _shifted(labels)
    z = hidden[:, :-1][mask]
    y = targets[mask]
    n = y.shape[0]
    if n == 0:
        return hidden.sum() * 0.0
    divisor = n if num_items is None else num_items
    if isinstance(divisor, Tensor):
        divisor = divisor.to(device=hidden.device)
    acc_dtype = torch.promote_types(z.dtype, torch.float32)
    tok = torch.zeros(n, dtype=acc_dtype, device=z.device) if token_losses is not None else None

    def lean_fn(zz, w, b):
        if tok is None:
            ext = _external_ntp(kernel, zz, w, b, y, tr)
            if ext is not None:
                return ext / divisor
        tw = torch.ones(n, dtype=acc_dtype, device=zz.device) / divisor
        return linear_cross_entropy(zz, w, b, y, token_weight=tw, transform=tr, token_losses=tok,
                                    chunk_size=chunk_size)

    ok, loss = _lean_or_fallback(lm_head, z, lean_fn, lean)
    if not ok:
        ce = F.cross_entropy(_full_logits(lm_head, z, tr), y, reduction="none")
        if tok is not None:
            tok = ce.detach()
        loss = ce.sum() / divisor
    if token_losses is not None:
        token_losses.zero_()
        token_losses[mask] = tok.to(token_losses.dtype)
    return loss


@torch.no_grad()
def response_token_nll(
    hidden: Tensor, labels: Tensor, lm_head: Union[nn.Module, Callable[[Tensor], Tensor]], *, transform: Any = None,
) -> Tensor:
    """``[B]`` mean NLL over each row's response tokens (labels != -100), no grad, through the chunked kernel
    (memory flat in the vocabulary). Rows without a response token get NaN."""
    targets, mask = _shifted(labels)
    out = torch.zeros(mask.shape, dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
    ntp_loss(hidden, labels, lm_head, transform=transform, token_losses=out)
    count = mask.sum(1)
    return torch.where(count > 0, out.sum(1) / count.clamp(min=1), torch.full_like(out[:, 0], float("nan")))


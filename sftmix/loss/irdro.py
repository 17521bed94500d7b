"""IR-DRO: instance-reweighted distributionally robust optimisation (Chen et al., 2024, "Take the Bull by the Horns:
Hard Sample-Reweighted Continual Training Improves LLM Generalization", arXiv 2402.14270).

Within each batch, the worst case over example weights ``w`` in the simplex of ``sum_i w_i l_i - tau KL(w || uniform)``
has the closed form ``w_i = exp(l_i / tau) / sum_j exp(l_j / tau)``: a softmax of the per-example losses at
temperature ``tau`` (the paper's KL-regularisation strength). The weights are constants in the backward pass (their
reference code detaches them) and are not clipped; large ``tau`` tends to plain NTP (uniform weights), small ``tau``
to training on the hardest example of the batch only. The per-example loss is the token-mean NLL of the example's
response tokens.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .head import _full_logits, _lean_or_fallback
from .kernel import linear_cross_entropy
from .ntp import _shifted, response_token_nll
from .transform import logit_transform


def irdro_weights(losses: Tensor, tau: float) -> Tensor:
    """The closed-form IR-DRO weights of a batch: ``softmax(losses / tau)`` (max-subtracted, so stable), detached."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    losses = losses.detach().to(torch.promote_types(losses.dtype, torch.float32))
    return torch.softmax(losses / tau, dim=0)


def irdro_loss(hidden: Tensor, labels: Tensor, lm_head: Union[nn.Module, Callable[[Tensor], Tensor]], tau: float,
               lean: bool = True, transform: Any = None, chunk_size: Optional[int] = None
               ) -> tuple[Tensor, Tensor, Tensor]:
    """``sum_i w_i * l_i`` over the examples of a batch that have response tokens, with ``w = irdro_weights(l)``.

    ``hidden`` ``[B, T, D]`` (LM-head input), ``labels`` ``[B, T]`` (-100 ignored, shifted here as for NTP),
    ``transform`` the model's logit transform (as :func:`sftmix.loss.ntp_loss`). Returns ``(loss, per-example
    losses, weights)``, the last two detached. The losses come from the chunked no-grad NLL pass
    (:func:`sftmix.loss.response_token_nll`); the weighted loss is one pass of the chunked kernel with per-token
    weights ``w_i / n_i`` (with ``lean``; else full logits; ``chunk_size`` rows per chunk), so no ``[tokens, V]``
    logits are kept.
    """
    tr = logit_transform(transform)
    targets, mask = _shifted(labels)
    n_tok = mask.sum(1)
    rows = torch.nonzero(n_tok > 0).flatten()
    if rows.numel() == 0:
        empty = hidden.new_zeros(0)
        return hidden.sum() * 0.0, empty, empty
    losses = response_token_nll(hidden.detach(), labels, lm_head, transform=tr)[rows]
    w = irdro_weights(losses, tau)
    z, y = hidden[:, :-1][mask], targets[mask]
    owner = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(mask)[mask]
    per_example = torch.zeros(labels.shape[0], dtype=w.dtype, device=w.device)
    per_example[rows] = w / n_tok[rows].to(w.dtype)
    token_weight = per_example[owner]

    def lean_fn(zz, weight, bias):
        return linear_cross_entropy(zz, weight, bias, y, token_weight=token_weight, transform=tr, chunk_size=chunk_size)

    ok, loss = _lean_or_fallback(lm_head, z, lean_fn, lean)
    if not ok:
        ce = F.cross_entropy(_full_logits(lm_head, z, tr), y, reduction="none")
        loss = (ce * token_weight.to(ce.dtype)).sum()
    return loss, losses.detach(), w

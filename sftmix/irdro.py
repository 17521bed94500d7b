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

from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .loss import _linear_params, _shifted, _upcast, linear_cross_entropy


def irdro_weights(losses: Tensor, tau: float) -> Tensor:
    """The closed-form IR-DRO weights of a batch: ``softmax(losses / tau)`` (max-subtracted, so stable), detached."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    losses = losses.detach().to(torch.promote_types(losses.dtype, torch.float32))
    return torch.softmax(losses / tau, dim=0)


def irdro_loss(hidden: Tensor, labels: Tensor, lm_head: Union[nn.Module, Callable[[Tensor], Tensor]], tau: float,
               lean: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """``sum_i w_i * l_i`` over the examples of a batch that have response tokens, with ``w = irdro_weights(l)``.

    ``hidden`` ``[B, T, D]`` (LM-head input), ``labels`` ``[B, T]`` (-100 ignored, shifted here as for NTP). Returns
    ``(loss, per-example losses, weights)``, the last two detached. With an ``nn.Linear`` head and ``lean`` the
    losses are measured in a no-grad pass and the weighted loss is one chunked pass with per-token weights
    ``w_i / n_i`` (:func:`sftmix.loss.linear_cross_entropy`), so no full ``[tokens, V]`` logits are kept.
    """
    targets, mask = _shifted(labels)
    n_tok = mask.sum(1)
    rows = torch.nonzero(n_tok > 0).flatten()
    if rows.numel() == 0:
        empty = hidden.new_zeros(0)
        return hidden.sum() * 0.0, empty, empty
    z_all, y_all = hidden[:, :-1][mask], targets[mask]
    owner = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(mask)[mask]
    params = _linear_params(lm_head) if lean else None
    if params is None:
        token_ce = F.cross_entropy(_upcast(lm_head(z_all)), y_all, reduction="none")
        per_example = torch.zeros(labels.shape[0], dtype=token_ce.dtype, device=token_ce.device)
        per_example = per_example.index_add(0, owner, token_ce) / n_tok.clamp(min=1)
        losses = per_example[rows]
        w = irdro_weights(losses, tau)
        return (w * losses).sum(), losses.detach(), w
    with torch.no_grad():
        losses = torch.stack([linear_cross_entropy(z_all[owner == i], params[0], params[1], y_all[owner == i])
                              for i in rows.tolist()])
    w = irdro_weights(losses, tau)
    full = torch.zeros(labels.shape[0], dtype=w.dtype, device=w.device)
    full[rows] = w / n_tok[rows].to(w.dtype)
    loss = linear_cross_entropy(z_all, params[0], params[1], y_all, token_weight=full[owner])
    return loss, losses, w

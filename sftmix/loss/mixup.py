"""The SFTMix Mixup loss on paired hidden states, alone or sharing one LM-head pass with NTP.

:func:`mixup_loss` mixes the paired hidden states and runs the head once on the mixed rows (a soft-target CE:
the kernel's row term with two targets). :func:`ntp_mixup_loss` computes NTP over the batch and Mixup over row
pairs in one pass of the kernel: NTP is its row term, Mixup its slot term, which mixes the pairs' logits.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import UserError
from ..constants import IGNORE_INDEX
from .base import GradAccumScale, LossOptions
from .head import _full_logits, _lean_or_fallback
from .kernel import Terms, fused_linear_cross_entropy, kernel_chunk, linear_cross_entropy
from .ntp import _shifted, ntp_loss
from .transform import IDENTITY, LogitTransform, logit_transform


def sample_lambda(n: int, alpha: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """``n`` draws of λ ~ Beta(α, α) as a float32 tensor; reproducible under ``torch.manual_seed`` or ``generator``.

    Uses the Dirichlet sampler behind ``torch.distributions.Beta`` (numerically safe for small α), which,
    unlike ``Beta.sample``, accepts a generator.
    """
    if not alpha > 0:
        raise UserError(f"alpha must be > 0 for Beta(alpha, alpha), got {alpha!r}")
    conc = torch.full((n, 2), float(alpha), dtype=torch.float32)
    return torch._sample_dirichlet(conc, generator=generator)[:, 0]


def _lam_vector(lam: Union[float, Tensor], batch: int, device) -> Tensor:
    lam = torch.as_tensor(lam, device=device).detach()
    if lam.dim() == 0:
        return lam.expand(batch)
    if lam.shape != (batch,):
        raise ValueError(f"mixup_loss: lam must be a float or a [{batch}] tensor, got shape {tuple(lam.shape)}")
    return lam


def mixup_loss(
    hidden_a: Tensor,
    hidden_b: Tensor,
    labels_a: Tensor,
    labels_b: Tensor,
    lm_head: Union[nn.Module, Callable[[Tensor], Tensor]],
    lam: Union[float, Tensor],
    *,
    lean: bool = True,
    transform: Any = None,
) -> Tensor:
    """SFTMix Mixup loss on last-layer hidden states of paired examples.

    ``hidden_*`` are ``[B, T_a|T_b, D]`` LM-head inputs, ``labels_*`` ``[B, T]`` in the HF convention (-100 =
    ignored; shifted here), ``lam`` a float or a ``[B]`` tensor. For pair i the first ``N_i = min(N_a, N_b)``
    response-predicting positions of a and b are mixed, ``z = λ_i h_a + (1-λ_i) h_b``; the pair loss is the mean
    over them of ``λ_i CE(T(head(z)), y_a) + (1-λ_i) CE(T(head(z)), y_b)``, T the model's logit transform
    (``transform``: a :class:`LogitTransform` or the model config; None = identity). Returns the mean over pairs
    with ``N_i > 0`` (a zero with a gradient path if none). ``lean=False`` is the naive full-logits reference.
    """
    tr = logit_transform(transform)
    if hidden_a.shape[0] != hidden_b.shape[0] or hidden_a.shape[-1] != hidden_b.shape[-1]:
        raise ValueError(
            f"mixup_loss: hidden_a {tuple(hidden_a.shape)} and hidden_b {tuple(hidden_b.shape)} "
            "must share batch size and hidden size"
        )
    for h, lab, name in ((hidden_a, labels_a, "a"), (hidden_b, labels_b, "b")):
        if lab.shape != h.shape[:2]:
            raise ValueError(f"mixup_loss: labels_{name} {tuple(lab.shape)} does not match hidden_{name} [B, T]")
    batch = hidden_a.shape[0]
    lam = _lam_vector(lam, batch, hidden_a.device)
    ta, ma = _shifted(labels_a)
    tb, mb = _shifted(labels_b)
    # Rank of each response-predicting position within its sequence; keep ranks < N_i in both sequences.
    ra, rb = ma.cumsum(1) - 1, mb.cumsum(1) - 1
    n_pair = torch.minimum(ma.sum(1), mb.sum(1))  # [B]
    keep_a = ma & (ra < n_pair[:, None])
    keep_b = mb & (rb < n_pair[:, None])
    n_valid = (n_pair > 0).sum()
    zero = (hidden_a.sum() + hidden_b.sum()) * 0.0
    if not lean:
        return _mixup_naive(hidden_a, hidden_b, ta, tb, keep_a, keep_b, ra, rb, n_pair, n_valid, lm_head, lam, zero,
                            tr)
    # Boolean indexing is row-major, so both selections list pair 0's ranks 0..N_0-1, then pair 1's, ...
    za, zb = hidden_a[:, :-1][keep_a], hidden_b[:, :-1][keep_b]
    if za.shape[0] == 0:  # no pair with a response token (read off the shape: no host sync)
        return zero
    ya, yb = ta[keep_a], tb[keep_b]
    lam_tok = lam[:, None].expand_as(keep_a)[keep_a]
    acc_dtype = torch.promote_types(za.dtype, torch.float32)
    per_pair_w = 1.0 / (n_pair.clamp(min=1).to(acc_dtype) * n_valid.to(acc_dtype))
    tw = per_pair_w[:, None].expand_as(keep_a)[keep_a]
    lam_h = lam_tok.to(za.dtype)[:, None]
    z = lam_h * za + (1 - lam_h) * zb
    coef = lam_tok.to(acc_dtype)
    ok, loss = _lean_or_fallback(
        lm_head, z, lambda zz, w, b: linear_cross_entropy(zz, w, b, ya, yb, coef=coef, token_weight=tw, transform=tr),
        True)
    if ok:
        return loss
    logp = F.log_softmax(_full_logits(lm_head, z, tr), dim=-1)
    tok = -(coef * logp.gather(1, ya[:, None]).squeeze(1) + (1 - coef) * logp.gather(1, yb[:, None]).squeeze(1))
    return (tw * tok).sum()


def _mixup_naive(hidden_a, hidden_b, ta, tb, keep_a, keep_b, ra, rb, n_pair, n_valid, lm_head, lam, zero,
                 tr=IDENTITY):
    """Reference/baseline: align whole padded sequences by response index and run the head on all of them."""
    batch, d = hidden_a.shape[0], hidden_a.shape[-1]
    length = max(hidden_a.shape[1], hidden_b.shape[1]) - 1
    if length <= 0 or int(n_valid) == 0:
        return zero
    rows_a, rows_b = keep_a.nonzero(as_tuple=True)[0], keep_b.nonzero(as_tuple=True)[0]
    pad_a = hidden_a.new_zeros(batch, length, d).index_put((rows_a, ra[keep_a]), hidden_a[:, :-1][keep_a])
    pad_b = hidden_b.new_zeros(batch, length, d).index_put((rows_b, rb[keep_b]), hidden_b[:, :-1][keep_b])
    ya = torch.full((batch, length), IGNORE_INDEX, dtype=ta.dtype, device=ta.device)
    yb = ya.clone()
    ya[rows_a, ra[keep_a]] = ta[keep_a]
    yb[rows_b, rb[keep_b]] = tb[keep_b]
    lam_h = lam.to(hidden_a.dtype)[:, None, None]
    logits = _full_logits(lm_head, lam_h * pad_a + (1 - lam_h) * pad_b, tr)  # [B, L, V], the memory hog
    ce_a = F.cross_entropy(logits.transpose(1, 2), ya, reduction="none")  # 0 where ignored
    ce_b = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none")
    lam_f = lam.to(ce_a.dtype)[:, None]
    per_pair = (lam_f * ce_a + (1 - lam_f) * ce_b).sum(1) / n_pair.clamp(min=1)
    return per_pair.sum() / n_valid


def ntp_mixup_loss(
    hidden: Tensor,
    labels: Tensor,
    lm_head: Union[nn.Module, Callable[[Tensor], Tensor]],
    pair_a: Tensor,
    pair_b: Tensor,
    lam: Union[float, Tensor],
    *,
    mu: float = 0.2,
    ntp_weight: float = 1.0,
    transform: Any = None,
    scale: GradAccumScale = GradAccumScale(),
    options: LossOptions = LossOptions(),
) -> tuple[Tensor, Tensor, Tensor]:
    """NTP over the whole batch plus Mixup over row pairs, with one LM-head pass: ``(total, ntp, mix)``.

    ``ntp = ntp_loss(hidden, labels, lm_head, num_items=scale.num_items) * scale.ntp_scale``, ``mix =
    mixup_loss(hidden[pair_a], hidden[pair_b], labels[pair_a], labels[pair_b], lm_head, lam) * scale.mean_scale``
    (``scale``: gradient accumulation, :class:`GradAccumScale`; default none) and ``total = ntp_weight * ntp + mu *
    mix``; ``ntp`` and ``mix`` are returned detached (``ntp`` is 0 when ``ntp_weight`` is 0: the unpaired positions
    are then skipped). ``transform``: the model's logit transform (or config). A linear head makes the mixed raw
    logits ``λ L_a + (1-λ) L_b`` (the transform comes after), so with ``options.lean`` the Mixup term reuses the
    NTP logits (rows of ``pair_a`` and ``pair_b`` must all differ). ``options`` (:class:`LossOptions`): ``lean``,
    ``chunk_size``, ``one_pass`` (False, or a head we cannot bypass, computes the two losses separately).
    """
    return _ntp_mixup(hidden, labels, lm_head, pair_a, pair_b, lam, ntp_weight=ntp_weight, mu=mu,
                      num_items=scale.num_items, ntp_scale=scale.ntp_scale, mix_scale=scale.mean_scale,
                      lean=options.lean, chunk_size=options.chunk_size, tr=logit_transform(transform),
                      one_pass=options.one_pass, check_pairs=True)


def _ntp_mixup(hidden: Tensor, labels: Tensor, lm_head, pair_a, pair_b, lam, *, ntp_weight: float, mu: float,
               num_items, ntp_scale: float, mix_scale: float, lean: bool, chunk_size: Optional[int],
               tr: LogitTransform, one_pass: bool, check_pairs: bool) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`ntp_mixup_loss` with a built transform; ``check_pairs=False`` skips the distinct-rows check (a
    ``unique``, which waits for the device) for callers whose pairs are distinct by construction."""
    pair_a = torch.as_tensor(pair_a, dtype=torch.long, device=hidden.device).flatten()
    pair_b = torch.as_tensor(pair_b, dtype=torch.long, device=hidden.device).flatten()
    if pair_a.shape != pair_b.shape:
        raise ValueError(f"ntp_mixup_loss: pair_a {tuple(pair_a.shape)} and pair_b {tuple(pair_b.shape)} differ")
    n_pairs = pair_a.numel()

    def separate():
        zero = hidden.sum() * 0.0
        ntp = (ntp_loss(hidden, labels, lm_head, num_items=num_items, lean=lean, transform=tr) * ntp_scale
               if ntp_weight else zero)
        mix = mixup_loss(hidden[pair_a], hidden[pair_b], labels[pair_a], labels[pair_b], lm_head, lam, lean=lean,
                         transform=tr)
        mix = mix * mix_scale
        return ntp_weight * ntp + mu * mix, ntp.detach(), mix.detach()

    if not (lean and one_pass):
        return separate()
    if check_pairs and torch.cat([pair_a, pair_b]).unique().numel() != 2 * n_pairs:
        raise ValueError("ntp_mixup_loss: rows in pair_a and pair_b must all be distinct")
    lam = _lam_vector(lam, n_pairs, hidden.device)
    acc = torch.promote_types(hidden.dtype, torch.float32)
    targets, mask = _shifted(labels)
    y_all = targets[mask]
    n = y_all.shape[0]  # the response-predicting positions, read off a shape (no host sync of its own)
    zero = hidden.sum() * 0.0
    if n == 0:
        return zero, zero.detach(), zero.detach()
    # Index of each response-predicting position among the NTP rows (row-major order, as in ntp_loss).
    row_id = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    row_id[mask] = torch.arange(n, device=mask.device)
    rank = mask.cumsum(1) - 1
    count = mask.sum(1)
    n_pair = torch.minimum(count[pair_a], count[pair_b])  # [P]
    keep_a = mask[pair_a] & (rank[pair_a] < n_pair[:, None])
    keep_b = mask[pair_b] & (rank[pair_b] < n_pair[:, None])
    slot_rows = torch.stack([row_id[pair_a][keep_a], row_id[pair_b][keep_b]], 1).flatten()
    n_valid = (n_pair > 0).sum()
    with_ntp = bool(ntp_weight) and bool(ntp_scale)  # else no NTP term: the unpaired positions are skipped
    if with_ntp:
        free = torch.ones(n, dtype=torch.bool, device=mask.device)
        free[slot_rows] = False
        order = torch.cat([slot_rows, free.nonzero().flatten()])
    else:
        order = slot_rows
    if order.numel() == 0:
        return zero, zero.detach(), zero.detach()
    divisor = n if num_items is None else num_items
    if isinstance(divisor, Tensor):
        divisor = divisor.to(device=hidden.device, dtype=acc)
    per_pair_w = 1.0 / (n_pair.clamp(min=1).to(acc) * n_valid.clamp(min=1).to(acc))
    terms = Terms(
        y=y_all[order],
        # Each NTP row weighs ntp_weight * ntp_scale / divisor (the NTP term alone is the zero-slot case).
        row_w=(torch.as_tensor(ntp_weight * ntp_scale / divisor, dtype=acc, device=hidden.device)
               .expand(order.numel()) if with_ntp else None),
        n_slots=slot_rows.numel() // 2,
        slot_lam=lam[:, None].expand_as(keep_a)[keep_a].to(acc),
        slot_w=per_pair_w[:, None].expand_as(keep_a)[keep_a],
        mix_w=mu * mix_scale,
    )
    z = hidden[:, :-1][mask][order]
    # The index bookkeeping is done: free it before the kernel's chunks take the memory.
    del row_id, rank, count, keep_a, keep_b, slot_rows, order, per_pair_w
    if with_ntp:
        del free

    def joint(zz, w, b):
        return fused_linear_cross_entropy(zz, w, b, terms, kernel_chunk(chunk_size, zz, w.shape[0], tr, True), tr)

    ok, res = _lean_or_fallback(lm_head, z, joint, lean, passes=2)
    if not ok:
        return separate()
    total, row_sum, mix_sum = res
    ntp = (row_sum / ntp_weight).detach() if with_ntp else zero.detach()
    return total, ntp, (mix_sum * mix_scale).detach()

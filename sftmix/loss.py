"""Losses: next-token prediction and the SFTMix Mixup regulariser, with a memory-lean linear cross-entropy.

Both losses send only the positions that predict a response token through the LM head, and by default compute
the head and the cross-entropy together in token chunks (:func:`linear_cross_entropy`), so the full
``[tokens, vocab]`` logits tensor never exists.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError

IGNORE_INDEX = -100
# Elements of one chunk's fp32 logits (16M -> 64 MB): keeps the matmuls efficient; smaller chunks measured
# slower on CPU (V=32k: 128 tokens/chunk cost ~20% more CPU time than 512).
_CHUNK_LOGIT_ELEMS = 1 << 24

__all__ = ["linear_cross_entropy", "ntp_loss", "mixup_loss", "ntp_mixup_loss", "sample_lambda", "IGNORE_INDEX"]


# --------------------------------------------------------------------------------------------------------------
# Chunked linear cross-entropy
# --------------------------------------------------------------------------------------------------------------
def auto_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that one chunk's logits hold about ``_CHUNK_LOGIT_ELEMS`` elements."""
    return max(1, _CHUNK_LOGIT_ELEMS // max(1, vocab_size))


def _mm_into(g: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = g @ weight`` written into a slice of a gradient buffer, with no temporary when the dtypes agree."""
    if g.dtype == weight.dtype:
        torch.mm(g, weight, out=out)
    else:
        out.copy_(g @ weight)
    return out


def _acc_mm(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b, in place when dtypes allow (saves a [V, D] temporary per chunk)."""
    if a.dtype == b.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(a @ b)


def _lce_forward(z, weight, bias, target_a, target_b, coef, token_weight, chunk_size, need_z, need_w, need_b):
    """Loss (and, if asked, its gradients) chunk by chunk; returns (loss, grad_z, grad_w, grad_b)."""
    n = z.shape[0]
    acc_dtype = torch.promote_types(z.dtype, torch.float32)
    grad_z = torch.empty_like(z) if need_z else None
    grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device) if need_b else None
    loss = torch.zeros((), dtype=acc_dtype, device=z.device)
    wt = weight.t()
    for s in range(0, n, chunk_size):
        e = min(n, s + chunk_size)
        zc, tw, ya = z[s:e], token_weight[s:e], target_a[s:e, None]
        # Matmul in the input dtype (as F.linear would); the fused log_softmax upcasts to fp32 (or fp64).
        logits = torch.addmm(bias, zc, wt) if bias is not None else zc @ wt
        logp = F.log_softmax(logits, dim=-1, dtype=acc_dtype)
        del logits
        if target_b is None:
            tok_loss = -logp.gather(1, ya).squeeze(1)
        else:
            c, yb = coef[s:e], target_b[s:e, None]
            tok_loss = -(c * logp.gather(1, ya).squeeze(1) + (1 - c) * logp.gather(1, yb).squeeze(1))
        loss += (tw * tok_loss).sum()
        if not (need_z or need_w or need_b):
            continue
        # d loss / d logits = tw * (softmax - c*onehot(a) - (1-c)*onehot(b)). The [chunk, V] part is built in
        # place over logp without tw; tw scales the small [chunk, D] operands instead (one fewer pass over V).
        g = logp.exp_()
        if target_b is None:
            g.scatter_add_(1, ya, torch.full_like(tw, -1.0)[:, None])
        else:
            g.scatter_add_(1, ya, -c[:, None])
            g.scatter_add_(1, yb, -(1 - c)[:, None])
        if need_b:
            grad_b += tw @ g
        g = g.to(z.dtype)
        if need_z:
            gz = _mm_into(g, weight, grad_z[s:e])
            gz.mul_(tw[:, None])
        if need_w:
            _acc_mm(grad_w, g.t(), zc * tw[:, None].to(zc.dtype))
    return loss, grad_z, grad_w, grad_b


class _LinearCrossEntropy(torch.autograd.Function):
    """Liger-style: gradients are computed during forward, chunk by chunk; backward only scales them."""

    @staticmethod
    def forward(ctx, z, weight, bias, target_a, target_b, coef, token_weight, chunk_size):
        need_z, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        loss, gz, gw, gb = _lce_forward(
            z, weight, bias, target_a, target_b, coef, token_weight, chunk_size, need_z, need_w, need_b
        )
        ctx.save_for_backward(gz, gw, gb)
        ctx.dtypes = (z.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # Not in place: gradcheck and retain_graph may run backward more than once.
        pairs = zip(ctx.saved_tensors, ctx.dtypes)
        out = [None if g is None else (g * grad_out.to(g.dtype)).to(dt) for g, dt in pairs]
        return (*out, None, None, None, None, None)


def linear_cross_entropy(
    z: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target_a: Tensor,
    target_b: Optional[Tensor] = None,
    coef: Optional[Tensor] = None,
    token_weight: Optional[Tensor] = None,
    *,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """``sum_t w_t * (c_t * CE(W z_t + b, a_t) + (1 - c_t) * CE(W z_t + b, b_t))`` without full logits.

    ``z`` is ``[N, D]``, ``weight`` ``[V, D]``, ``bias`` ``[V]`` or None, targets ``[N]`` (all valid, no
    ignore index), ``coef`` ``[N]`` (None = 1, i.e. plain CE on ``target_a``), ``token_weight`` ``[N]``
    (None = 1/N, a token mean). Tokens are processed in chunks of ``chunk_size`` (default from the vocabulary
    size); the gradients wrt ``z``, ``weight`` and ``bias`` are computed in the same pass (weight/bias
    gradients accumulated in fp32 or better), so only ``[chunk, V]`` logits live at any time. Not twice
    differentiable.
    """
    n, v = z.shape[0], weight.shape[0]
    acc_dtype = torch.promote_types(z.dtype, torch.float32)
    if token_weight is None:
        token_weight = torch.full((n,), 1.0 / max(n, 1), dtype=acc_dtype, device=z.device)
    else:
        token_weight = token_weight.detach().to(device=z.device, dtype=acc_dtype)
    if target_b is not None:
        coef = (
            torch.ones(n, dtype=acc_dtype, device=z.device)
            if coef is None
            else coef.detach().to(device=z.device, dtype=acc_dtype).expand(n)
        )
    if n == 0:
        return z.sum() * 0.0 + weight.sum() * 0.0
    chunk = max(1, int(chunk_size) if chunk_size else auto_chunk_size(v))
    if not torch.is_grad_enabled():  # e.g. scoring under no_grad: skip the gradient work entirely
        return _lce_forward(z, weight, bias, target_a, target_b, coef, token_weight, chunk, False, False, False)[0]
    return _LinearCrossEntropy.apply(z, weight, bias, target_a, target_b, coef, token_weight, chunk)


# --------------------------------------------------------------------------------------------------------------
# LM-head plumbing
# --------------------------------------------------------------------------------------------------------------
def _linear_params(lm_head) -> Optional[tuple]:
    """(weight, bias) when ``lm_head`` is a plain, materialised nn.Linear we may bypass; else None.

    Hooks (accelerate offload, FSDP), ZeRO-3 partitioned (empty) weights, DTensors and wrappers like a peft
    LoRA layer (not an nn.Linear) must go through ``lm_head(...)`` itself.
    """
    if not isinstance(lm_head, nn.Linear) or lm_head._forward_hooks or lm_head._forward_pre_hooks:
        return None
    w, b = lm_head.weight, lm_head.bias
    if type(w) not in (torch.Tensor, nn.Parameter) or w.dim() != 2 or w.numel() == 0:
        return None
    return w, b


def _upcast(t: Tensor) -> Tensor:
    """At least fp32 for the softmax (like HF's ``logits.float()``), but keep fp64 as fp64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _shifted(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Targets for positions 0..T-2 (HF convention: position t predicts labels[t+1]) and their validity mask."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def ntp_loss(
    hidden: Tensor,
    labels: Tensor,
    lm_head: Union[nn.Module, Callable[[Tensor], Tensor]],
    *,
    num_items: Optional[Union[int, Tensor]] = None,
    lean: bool = True,
) -> Tensor:
    """Next-token CE as Hugging Face computes it for causal LMs, from the LM-head input.

    ``hidden`` is ``[B, T, D]``, ``labels`` ``[B, T]`` aligned with ``input_ids`` (-100 = ignored; shifted here).
    Token mean over the batch's valid positions, or the sum divided by ``num_items`` when given (HF Trainer's
    ``num_items_in_batch`` under gradient accumulation). Only valid positions go through the head; with
    ``lean`` and an ``nn.Linear`` head they go through :func:`linear_cross_entropy`.
    """
    targets, mask = _shifted(labels)
    z = hidden[:, :-1][mask]
    y = targets[mask]
    n = y.shape[0]
    if n == 0:
        return hidden.sum() * 0.0
    divisor = n if num_items is None else num_items
    if isinstance(divisor, Tensor):
        divisor = divisor.to(device=hidden.device)
    params = _linear_params(lm_head) if lean else None
    if params is None:
        return F.cross_entropy(_upcast(lm_head(z)), y, reduction="sum") / divisor
    acc_dtype = torch.promote_types(z.dtype, torch.float32)
    tw = torch.ones(n, dtype=acc_dtype, device=z.device) / divisor
    return linear_cross_entropy(z, params[0], params[1], y, token_weight=tw)


# --------------------------------------------------------------------------------------------------------------
# Mixup
# --------------------------------------------------------------------------------------------------------------
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
) -> Tensor:
    """SFTMix Mixup loss on last-layer hidden states of paired examples.

    ``hidden_*`` are ``[B, T_a|T_b, D]`` LM-head inputs, ``labels_*`` ``[B, T]`` in the HF convention (-100 =
    ignored; shifted here), ``lam`` a float or a ``[B]`` tensor. For pair i the first ``N_i = min(N_a, N_b)``
    response-predicting positions of a and b are mixed, ``z = λ_i h_a + (1-λ_i) h_b``; the pair loss is the mean
    over them of ``λ_i CE(head(z), y_a) + (1-λ_i) CE(head(z), y_b)``. Returns the mean over pairs with
    ``N_i > 0`` (a zero with a gradient path if none). ``lean=False`` is the naive full-logits reference.
    """
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
        return _mixup_naive(hidden_a, hidden_b, ta, tb, keep_a, keep_b, ra, rb, n_pair, n_valid, lm_head, lam, zero)
    if int(n_valid) == 0:
        return zero
    # Boolean indexing is row-major, so both selections list pair 0's ranks 0..N_0-1, then pair 1's, ...
    za, zb = hidden_a[:, :-1][keep_a], hidden_b[:, :-1][keep_b]
    ya, yb = ta[keep_a], tb[keep_b]
    lam_tok = lam[:, None].expand_as(keep_a)[keep_a]
    acc_dtype = torch.promote_types(za.dtype, torch.float32)
    per_pair_w = 1.0 / (n_pair.clamp(min=1).to(acc_dtype) * n_valid.to(acc_dtype))
    tw = per_pair_w[:, None].expand_as(keep_a)[keep_a]
    lam_h = lam_tok.to(za.dtype)[:, None]
    z = lam_h * za + (1 - lam_h) * zb
    params = _linear_params(lm_head)
    coef = lam_tok.to(acc_dtype)
    if params is not None:
        return linear_cross_entropy(z, params[0], params[1], ya, yb, coef=coef, token_weight=tw)
    logp = F.log_softmax(_upcast(lm_head(z)), dim=-1)
    tok = -(coef * logp.gather(1, ya[:, None]).squeeze(1) + (1 - coef) * logp.gather(1, yb[:, None]).squeeze(1))
    return (tw * tok).sum()


def _mixup_naive(hidden_a, hidden_b, ta, tb, keep_a, keep_b, ra, rb, n_pair, n_valid, lm_head, lam, zero):
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
    logits = _upcast(lm_head(lam_h * pad_a + (1 - lam_h) * pad_b))  # [B, L, V], the memory hog
    ce_a = F.cross_entropy(logits.transpose(1, 2), ya, reduction="none")  # 0 where ignored
    ce_b = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none")
    lam_f = lam.to(ce_a.dtype)[:, None]
    per_pair = (lam_f * ce_a + (1 - lam_f) * ce_b).sum(1) / n_pair.clamp(min=1)
    return per_pair.sum() / n_valid


# --------------------------------------------------------------------------------------------------------------
# NTP + Mixup sharing one LM-head pass
# --------------------------------------------------------------------------------------------------------------
def _joint_forward(z, weight, bias, y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk, need_z, need_w, need_b):
    """(ntp_sum, mix_sum, grad_z, grad_w, grad_b); rows 2i, 2i+1 of ``z`` are slot i's a and b positions.

    ``ntp_sum`` is the plain CE sum over all rows (0 when ``w_ntp`` is None: no NTP term), ``mix_sum`` the
    slot-weighted Mixup sum. Gradients are those of ``w_ntp * ntp_sum + w_mix * mix_sum``.
    """
    n = z.shape[0]
    acc = torch.promote_types(z.dtype, torch.float32)
    need = need_z or need_w or need_b
    grad_z = torch.empty_like(z) if need_z else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
    ntp_sum = torch.zeros((), dtype=acc, device=z.device)
    mix_sum = torch.zeros((), dtype=acc, device=z.device)
    # The [chunk, V] gradient is kept in units of w_ntp, which then scales only the small [chunk, D] operands.
    scale = w_ntp if w_ntp is not None and bool(w_ntp != 0) else None
    wt = weight.t()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        zc, yc = z[s:e], y[s:e, None]
        logits = torch.addmm(bias, zc, wt) if bias is not None else zc @ wt
        ns = max(0, min(e, 2 * n_slots) - s)  # slot rows in this chunk (even: s and chunk are even)
        g_mix = None
        if ns:
            # Linear head: the logits of the mixed input are the mix of the two positions' logits.
            sl = slice(s // 2, s // 2 + ns // 2)
            lam, sw = slot_lam[sl, None], slot_w[sl]
            logq = F.log_softmax(torch.lerp(logits[1:ns:2].to(acc), logits[0:ns:2].to(acc), lam), dim=-1)
            ya, yb = yc[0:ns:2], yc[1:ns:2]
            tok = -(lam * logq.gather(1, ya) + (1 - lam) * logq.gather(1, yb)).squeeze(1)
            mix_sum += (sw * tok).sum()
            if need:
                g_mix = logq.exp_()
                g_mix.scatter_add_(1, ya, -lam)
                g_mix.scatter_add_(1, yb, -(1 - lam))
                coef = (w_mix * sw)[:, None] if scale is None else (w_mix * sw)[:, None] / scale
            del logq
        if w_ntp is not None:
            logp = F.log_softmax(logits, dim=-1, dtype=acc)
            del logits
            ntp_sum += -logp.gather(1, yc).sum()
            if not need:
                continue
            g = logp.exp_()
            g.scatter_add_(1, yc, torch.full((e - s, 1), -1.0, dtype=acc, device=z.device))
            if scale is None:
                g.zero_()  # ntp_scale 0: no NTP gradient
        else:
            del logits
            if not need:
                continue
            g = torch.zeros((e - s, weight.shape[0]), dtype=acc, device=z.device)
        if g_mix is not None:
            g[0:ns:2].addcmul_(g_mix, lam * coef)
            g[1:ns:2].addcmul_(g_mix, (1 - lam) * coef)
            del g_mix
        if need_b:
            grad_b += g.sum(0) if scale is None else g.sum(0) * scale
        g = g.to(z.dtype)
        if need_z:
            gz = _mm_into(g, weight, grad_z[s:e])
            if scale is not None:
                gz.mul_(scale)
        if need_w:
            _acc_mm(grad_w, g.t(), zc if scale is None else zc * scale)
    return ntp_sum, mix_sum, grad_z, grad_w, grad_b


class _JointLinearCrossEntropy(torch.autograd.Function):
    """Returns (total, ntp_sum, mix_sum); gradients (of total) are computed in forward, like the class above."""

    @staticmethod
    def forward(ctx, z, weight, bias, y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk):
        need_z, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        ntp_sum, mix_sum, gz, gw, gb = _joint_forward(
            z, weight, bias, y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk, need_z, need_w, need_b
        )
        total = w_mix * mix_sum + (0.0 if w_ntp is None else w_ntp * ntp_sum)
        ctx.save_for_backward(gz, gw, gb)
        ctx.dtypes = (z.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(ntp_sum, mix_sum)
        return total, ntp_sum, mix_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _g_ntp, _g_mix):
        pairs = zip(ctx.saved_tensors, ctx.dtypes)
        out = [None if g is None else (g * grad_out.to(g.dtype)).to(dt) for g, dt in pairs]
        return (*out, None, None, None, None, None, None, None)


def ntp_mixup_loss(
    hidden: Tensor,
    labels: Tensor,
    lm_head: Union[nn.Module, Callable[[Tensor], Tensor]],
    pair_a: Tensor,
    pair_b: Tensor,
    lam: Union[float, Tensor],
    *,
    ntp_weight: float = 1.0,
    mu: float = 0.2,
    num_items: Optional[Union[int, Tensor]] = None,
    ntp_scale: float = 1.0,
    mix_scale: float = 1.0,
    lean: bool = True,
    chunk_size: Optional[int] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """NTP over the whole batch plus Mixup over row pairs, with one LM-head pass: ``(total, ntp, mix)``.

    ``ntp = ntp_scale * ntp_loss(hidden, labels, lm_head, num_items=num_items)``, ``mix = mix_scale *
    mixup_loss(hidden[pair_a], hidden[pair_b], labels[pair_a], labels[pair_b], lm_head, lam)`` and ``total =
    ntp_weight * ntp + mu * mix``; ``ntp`` and ``mix`` are returned detached (``ntp`` is 0 when ``ntp_weight``
    is 0: the unpaired positions are then skipped). A linear head makes the mixed logits ``λ L_a + (1-λ) L_b``,
    so with ``lean`` and an ``nn.Linear`` head the Mixup term reuses the NTP logits (rows of ``pair_a`` and
    ``pair_b`` must all differ); otherwise this falls back to the two separate losses.
    """
    pair_a = torch.as_tensor(pair_a, dtype=torch.long, device=hidden.device).flatten()
    pair_b = torch.as_tensor(pair_b, dtype=torch.long, device=hidden.device).flatten()
    if pair_a.shape != pair_b.shape:
        raise ValueError(f"ntp_mixup_loss: pair_a {tuple(pair_a.shape)} and pair_b {tuple(pair_b.shape)} differ")
    n_pairs = pair_a.numel()
    params = _linear_params(lm_head) if lean else None
    if params is None:
        zero = hidden.sum() * 0.0
        ntp = ntp_loss(hidden, labels, lm_head, num_items=num_items, lean=lean) * ntp_scale if ntp_weight else zero
        mix = mixup_loss(hidden[pair_a], hidden[pair_b], labels[pair_a], labels[pair_b], lm_head, lam, lean=lean)
        mix = mix * mix_scale
        return ntp_weight * ntp + mu * mix, ntp.detach(), mix.detach()
    if torch.cat([pair_a, pair_b]).unique().numel() != 2 * n_pairs:
        raise ValueError("ntp_mixup_loss: rows in pair_a and pair_b must all be distinct")
    lam = _lam_vector(lam, n_pairs, hidden.device)
    acc = torch.promote_types(hidden.dtype, torch.float32)
    targets, mask = _shifted(labels)
    n = int(mask.sum())
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
    n_slots = slot_rows.numel() // 2
    n_valid = (n_pair > 0).sum()
    if ntp_weight:
        free = torch.ones(n, dtype=torch.bool, device=mask.device)
        free[slot_rows] = False
        order = torch.cat([slot_rows, free.nonzero().flatten()])
    else:
        order = slot_rows
    if order.numel() == 0:
        return zero, zero.detach(), zero.detach()
    z = hidden[:, :-1][mask][order]
    y = targets[mask][order]
    slot_lam = lam[:, None].expand_as(keep_a)[keep_a].to(acc)
    per_pair_w = 1.0 / (n_pair.clamp(min=1).to(acc) * n_valid.clamp(min=1).to(acc))
    slot_w = per_pair_w[:, None].expand_as(keep_a)[keep_a]
    divisor = n if num_items is None else num_items
    if isinstance(divisor, Tensor):
        divisor = divisor.to(device=hidden.device, dtype=acc)
    w_ntp = ntp_weight * ntp_scale / divisor if ntp_weight else None
    w_mix = mu * mix_scale
    chunk = max(1, int(chunk_size) if chunk_size else auto_chunk_size(params[0].shape[0]))
    chunk += chunk % 2  # both rows of a slot land in the same chunk
    args = (z, params[0], params[1], y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk)
    if torch.is_grad_enabled():
        total, ntp_sum, mix_sum = _JointLinearCrossEntropy.apply(*args)
    else:
        ntp_sum, mix_sum = _joint_forward(*args, False, False, False)[:2]
        total = w_mix * mix_sum + (0.0 if w_ntp is None else w_ntp * ntp_sum)
    ntp = (ntp_sum * (ntp_scale / divisor)).detach() if ntp_weight else zero.detach()
    return total, ntp, (mix_sum * mix_scale).detach()

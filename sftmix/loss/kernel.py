"""The one chunked linear cross-entropy kernel: LM head, logit transform and cross-entropy, chunk by chunk.

Every loss in this package is one pass of :func:`fused_linear_cross_entropy` over the rows that predict a
response token: NTP (and IR-DRO's reweighted NTP, and a soft-target CE) is its row term alone, the Mixup loss of
``ntp_mixup_loss`` its slot term, which mixes the logits of row pairs. Per chunk of rows the ``[chunk, V]`` logits
are computed in the matmul dtype, transformed (:class:`LogitTransform`) and log-softmaxed in fp32 (or fp64), and
the gradients wrt the rows, the head weight and bias are formed right there (weight/bias accumulated in fp32 or
better), so the full ``[tokens, V]`` logits never exist. Backward only scales the stored gradients (Liger-style).
The elementwise part of a chunk (softmax, both Mixup targets, the gradient) runs either op by op (the eager body
below) or as one fused body (:mod:`.fused`: a C++ kernel on CPU, ``torch.compile`` on request), which makes three
sweeps per row instead of one full ``[chunk, V]`` pass per op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fused
from .transform import IDENTITY, LogitTransform

# Default memory for one chunk's [chunk, V] temporaries (compute-dtype logits + fp32 log-probs and gradient).
# CPU: 192 MiB = the 512-token chunks at V=32k fp32 that measured fastest here (128 tokens cost ~20% more CPU
# time). CUDA: larger chunks keep the GPU's matmuls big (at V=128k, 64 MB chunks were only ~130 tokens).
_CPU_CHUNK_BYTES = 192 << 20
_CUDA_CHUNK_BYTES_MAX = 2 << 30


def _chunk_budget(device: torch.device) -> int:
    env = os.environ.get("SFTMIX_LCE_CHUNK_MB")
    if env:
        return int(float(env) * 2**20)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(min(_CUDA_CHUNK_BYTES_MAX, total // 64))
    return _CPU_CHUNK_BYTES


def chunk_rows(vocab_size: int, compute_dtype: torch.dtype, acc_dtype: torch.dtype, device: torch.device,
               n_fp32_buffers: int = 2, scratch_rows: int = 0) -> int:
    """Tokens per chunk so that one chunk's ``[chunk, V]`` temporaries, plus ``scratch_rows`` single ``[V]``
    rows in ``acc_dtype``, fit the memory budget (a multiple of 8).

    The budget is ``SFTMIX_LCE_CHUNK_MB`` if set, else 192 MiB on CPU and min(2 GiB, 1/64 of the GPU) on CUDA.
    """
    v = max(1, vocab_size)
    per_row = v * (compute_dtype.itemsize + n_fp32_buffers * acc_dtype.itemsize)
    rows = (_chunk_budget(torch.device(device)) - scratch_rows * v * acc_dtype.itemsize) // per_row
    return max(8, rows - rows % 8)


def auto_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk for an fp32 head on CPU (kept for callers of the old API)."""
    return chunk_rows(vocab_size, torch.float32, torch.float32, torch.device("cpu"))


def _compute_dtype(z: Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when it is on (bf16 matmuls on fp32 master weights), else the input's."""
    dev = z.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return z.dtype


def _mm_into(g: Tensor, weight: Tensor, out: Tensor) -> Tensor:
    """``out = g @ weight`` written into a slice of a gradient buffer, with no temporary when the dtypes agree."""
    if g.dtype == out.dtype:
        torch.mm(g, weight, out=out)
    else:
        out.copy_(g @ weight)
    return out


_OUT_DTYPE_MM: dict[str, bool] = {}


def _acc_mm(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """``acc += a @ b`` with ``acc`` in fp32 (or fp64) and ``a``, ``b`` possibly bf16: fp32 accumulation, and on
    CUDA no ``[V, D]`` temporary (``addmm`` with ``out_dtype``, where this torch has it)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
        return
    dev = acc.device.type
    if dev == "cuda" and _OUT_DTYPE_MM.get(dev, True):
        try:
            torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
            _OUT_DTYPE_MM[dev] = True
            return
        except (TypeError, RuntimeError, NotImplementedError):
            _OUT_DTYPE_MM[dev] = False
    acc.add_(a @ b)


@dataclass
class Terms:
    """What one kernel pass computes over the rows ``z_r`` of ``z`` (``[N, D]``), with ``l_r = W z_r + b``.

    Row term (absent when ``row_w`` is None): ``sum_r row_w[r] * (c_r CE(T(l_r), y[r]) + (1-c_r) CE(T(l_r),
    y_b[r]))`` (``y_b`` None: plain CE on ``y``). Slot term (Mixup): slot i pairs rows 2i and 2i+1 (the first
    ``2 n_slots`` rows) through their mixed logits ``m_i = λ_i l_2i + (1-λ_i) l_2i+1``: ``sum_i slot_w[i] *
    (λ_i CE(T(m_i), y[2i]) + (1-λ_i) CE(T(m_i), y[2i+1]))``, counted ``mix_w`` times in the total. With slots,
    ``row_w`` must be nonzero (or None). ``tok_out`` (``[N]``, optional) receives each row's unweighted row loss.
    """

    y: Tensor
    row_w: Optional[Tensor] = None
    y_b: Optional[Tensor] = None
    coef: Optional[Tensor] = None
    n_slots: int = 0
    slot_lam: Optional[Tensor] = None
    slot_w: Optional[Tensor] = None
    mix_w: Union[float, Tensor] = 1.0
    tok_out: Optional[Tensor] = None


def _log_probs(logits: Tensor, tr: LogitTransform, acc: torch.dtype) -> tuple[Tensor, Optional[Tensor]]:
    """``log_softmax(T(logits))`` in ``acc``, and ``T(logits)`` where T's derivative needs it (a soft-cap; else
    None). Logits already in ``acc`` are transformed in place."""
    if tr.identity:
        return F.log_softmax(logits, dim=-1, dtype=acc), None  # fused upcast, no fp32 copy of the logits
    y = tr.apply_(logits.to(acc, copy=True) if logits.dtype != acc else logits)
    return F.log_softmax(y, dim=-1), (y if tr.softcap is not None else None)


def _nll(logp: Tensor, ya: Tensor, yb: Optional[Tensor], c: Optional[Tensor]) -> Tensor:
    """Per row ``-(c log p[ya] + (1-c) log p[yb])``, or ``-log p[ya]`` when ``yb`` is None (all ``[k, 1]``)."""
    if yb is None:
        return -logp.gather(1, ya).squeeze(1)
    return -(c * logp.gather(1, ya) + (1 - c) * logp.gather(1, yb)).squeeze(1)


def _nll_grad_(logp: Tensor, ya: Tensor, yb: Optional[Tensor], c: Optional[Tensor], tr: LogitTransform,
               y: Optional[Tensor]) -> Tensor:
    """d :func:`_nll` / d logits, built in place over ``logp``: ``(softmax - targets) * T'`` (consumes ``y``)."""
    g = logp.exp_()
    if yb is None:
        g.scatter_add_(1, ya, torch.full(ya.shape, -1.0, dtype=g.dtype, device=g.device))
    else:
        g.scatter_add_(1, ya, -c)
        g.scatter_add_(1, yb, -(1 - c))
    if not tr.identity:
        tr.chain_(g, y)
    return g


def _forward(z: Tensor, weight: Tensor, bias: Optional[Tensor], t: Terms, chunk: int, tr: LogitTransform,
             need_z: bool, need_w: bool, need_b: bool):
    """``(row_sum, mix_sum, grad_z, grad_w, grad_b)``: the two terms of ``t`` and the gradients (those asked
    for) of ``row_sum + t.mix_w * mix_sum``. The head is linear, so a slot's mixed raw logits are the lerp of its
    rows' logits; the transform comes after the mixing (its derivative at the mixed logits in the slot gradient,
    at each row's own logits in the row gradient)."""
    n, v = z.shape[0], weight.shape[0]
    acc = torch.promote_types(z.dtype, torch.float32)
    cdt = _compute_dtype(z)
    need = need_z or need_w or need_b
    body = fused.choose(z, n, v, tr, cdt)
    grad_z = torch.empty_like(z) if need_z else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
    row_sum = torch.zeros((), dtype=acc, device=z.device)
    mix_sum = torch.zeros((), dtype=acc, device=z.device)
    with torch.autocast(z.device.type, enabled=False):  # explicit dtypes below; autocast would re-cast per call
        wc = weight.to(cdt)
        bc = None if bias is None else bias.to(cdt)
        wt = wc.t()
        # The cpp body works in place: one logits buffer, reused by every chunk (a fresh [chunk, V] allocation
        # per chunk costs page faults worth another pass over it).
        buf = torch.empty((min(chunk, n), v), dtype=cdt, device=z.device) if body == "cpp" else None
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            zc, yc = z[s:e].to(cdt), t.y[s:e, None]
            ns = max(0, min(e, 2 * t.n_slots) - s)  # slot rows in this chunk (even: s and chunk are even)
            tw = None if t.row_w is None else t.row_w[s:e]
            sl = slice(s // 2, s // 2 + ns // 2)
            if body != "eager":
                res = _fused_chunk(body, _logits(zc, wt, bc, None if buf is None else buf[: e - s]), t, s, e, ns,
                                   tw, tr, need)
                if res is None:  # torch.compile failed (warned once): this and later chunks run eager
                    body = "eager"
            if body != "eager":
                tok, nll_m, g = res
                del res
                if tw is not None:
                    if t.tok_out is not None:
                        t.tok_out[s:e] = tok
                    row_sum += (tw * tok).sum()
                if ns:
                    mix_sum += (t.slot_w[sl] * nll_m).sum()
                if not need:
                    continue
            else:
                # the logits are made inside, so that they can be freed there as soon as their log-probs exist
                g = _eager_chunk(zc, wt, bc, yc, t, s, e, ns, sl, tw, tr, acc, need, row_sum, mix_sum)
                if g is None:
                    continue
            if need_b:
                grad_b += g.sum(0) if tw is None else tw @ g
            g = g.to(cdt)
            if need_z:
                gz = _mm_into(g, wc, grad_z[s:e])
                if tw is not None:
                    gz.mul_(tw[:, None].to(gz.dtype))
            if need_w:
                _acc_mm(grad_w, g.t(), zc if tw is None else zc * tw[:, None].to(cdt))
    return row_sum, mix_sum, grad_z, grad_w, grad_b


def _fused_chunk(body: str, logits: Tensor, t: Terms, s: int, e: int, ns: int, tw: Optional[Tensor],
                 tr: LogitTransform, need: bool):
    """One chunk through a fused body (:mod:`.fused`): ``(tok, nll_m, g)``, ``g`` in units of each row's weight
    ``tw`` like the eager body's; None if ``torch.compile`` failed."""
    acc = torch.promote_types(logits.dtype, torch.float32)
    p = ns // 2
    sl = slice(s // 2, s // 2 + p)
    if p:
        lam = t.slot_lam[sl].to(acc).contiguous()
        cm = (t.mix_w * t.slot_w[sl]).to(acc)
        ca, cb = (cm, cm) if tw is None else (cm / tw[0:ns:2], cm / tw[1:ns:2])
        ka, kb = (lam * ca).contiguous(), ((1 - lam) * cb).contiguous()
    else:
        lam = ka = kb = logits.new_zeros(0, dtype=acc)
    yb = None if t.y_b is None else t.y_b[s:e].contiguous()
    coef = None if t.coef is None else t.coef[s:e].to(acc).contiguous()
    args = (logits, t.y[s:e].contiguous(), yb, coef, p, lam, ka, kb, tw is not None, need, tr.scale)
    if body == "cpp":
        return fused.cpp_chunk(*args)
    return fused.compiled_chunk(*args)


def _logits(zc: Tensor, wt: Tensor, bc: Optional[Tensor], out: Optional[Tensor] = None) -> Tensor:
    """``zc @ wt (+ bc)``, into ``out`` when given."""
    if out is None:
        return torch.addmm(bc, zc, wt) if bc is not None else zc @ wt
    return torch.addmm(bc, zc, wt, out=out) if bc is not None else torch.mm(zc, wt, out=out)


def _eager_chunk(zc: Tensor, wt: Tensor, bc: Optional[Tensor], yc: Tensor, t: Terms, s: int, e: int, ns: int,
                 sl: slice, tw: Optional[Tensor], tr: LogitTransform, acc: torch.dtype, need: bool, row_sum: Tensor,
                 mix_sum: Tensor) -> Optional[Tensor]:
    """One chunk op by op: adds its terms to ``row_sum`` / ``mix_sum``; the gradient wrt its logits (in units of
    each row's weight ``tw``; the slot term's added in), or None without ``need``."""
    logits = _logits(zc, wt, bc)
    v = logits.shape[1]
    g_mix = None
    if ns:
        lam, sw = t.slot_lam[sl, None], t.slot_w[sl]
        ya, yb = yc[0:ns:2], yc[1:ns:2]
        logq, ym = _log_probs(torch.lerp(logits[1:ns:2].to(acc), logits[0:ns:2].to(acc), lam), tr, acc)
        mix_sum += (sw * _nll(logq, ya, yb, lam)).sum()
        if need:
            g_mix = _nll_grad_(logq, ya, yb, lam, tr, ym)
        del logq, ym
    if tw is not None:
        logp, yl = _log_probs(logits, tr, acc)
        del logits
        c = None if t.coef is None else t.coef[s:e, None]
        yb_r = None if t.y_b is None else t.y_b[s:e, None]
        tok = _nll(logp, yc, yb_r, c)
        if t.tok_out is not None:
            t.tok_out[s:e] = tok
        row_sum += (tw * tok).sum()
        if not need:
            return None
        g = _nll_grad_(logp, yc, yb_r, c, tr, yl)
        del yl
    else:
        del logits
        if not need:
            return None
        g = torch.zeros((e - s, v), dtype=acc, device=yc.device)
    # g is kept in units of each row's weight tw, which scales only the small [chunk, D] operands below.
    if g_mix is not None:
        cm = t.mix_w * sw[:, None]
        ca, cb = (cm, cm) if tw is None else (cm / tw[0:ns:2, None], cm / tw[1:ns:2, None])
        g[0:ns:2].addcmul_(g_mix, lam * ca)
        g[1:ns:2].addcmul_(g_mix, (1 - lam) * cb)
    return g


class _LinearCrossEntropy(torch.autograd.Function):
    """``(total, row_sum, mix_sum)`` of :func:`_forward`, ``total = row_sum + mix_w * mix_sum``; the gradients
    (of ``total``) are computed in forward, chunk by chunk; backward only scales them."""

    @staticmethod
    def forward(ctx, z, weight, bias, terms, chunk, tr):
        need_z, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        row_sum, mix_sum, gz, gw, gb = _forward(z, weight, bias, terms, chunk, tr, need_z, need_w, need_b)
        ctx.save_for_backward(gz, gw, gb)
        ctx.dtypes = (z.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(row_sum, mix_sum)
        return row_sum + terms.mix_w * mix_sum, row_sum, mix_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _g_row, _g_mix):
        # Not in place: gradcheck and retain_graph may run backward more than once.
        pairs = zip(ctx.saved_tensors, ctx.dtypes)
        out = [None if g is None else (g * grad_out.to(g.dtype)).to(dt) for g, dt in pairs]
        return (*out, None, None, None)


def kernel_chunk(chunk_size: Optional[int], z: Tensor, vocab: int, tr: LogitTransform, mixing: bool) -> int:
    """Rows per chunk: ``chunk_size`` if given, else from the memory budget (:func:`chunk_rows`: the eager body
    keeps two fp32 ``[chunk, V]`` buffers beside the logits, a Mixup pass one more, a soft-cap one more; the
    fused bodies' temporaries are those of NTP alone, plus, for a Mixup pass of the C++ body, one scratch row per
    thread); even with Mixup, so a slot's rows share a chunk."""
    if chunk_size:
        chunk = max(1, int(chunk_size))
    else:
        acc, cdt = torch.promote_types(z.dtype, torch.float32), _compute_dtype(z)
        body = fused.choose(z, z.shape[0], vocab, tr, cdt)
        extra = int(mixing) + int(tr.softcap is not None) if body == "eager" else 0
        scratch = torch.get_num_threads() if body == "cpp" and mixing else 0
        chunk = chunk_rows(vocab, cdt, acc, z.device, 2 + extra, scratch)
    return chunk + chunk % 2 if mixing else chunk


def fused_linear_cross_entropy(z: Tensor, weight: Tensor, bias: Optional[Tensor], terms: Terms, chunk: int,
                               tr: LogitTransform = IDENTITY) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, row_sum, mix_sum)`` of ``terms`` (see :class:`Terms`) in one chunked pass; ``total`` carries the
    gradients (computed in the same pass when grad mode is on), the other two are detached."""
    if torch.is_grad_enabled():
        return _LinearCrossEntropy.apply(z, weight, bias, terms, chunk, tr)
    row_sum, mix_sum = _forward(z, weight, bias, terms, chunk, tr, False, False, False)[:2]
    return row_sum + terms.mix_w * mix_sum, row_sum, mix_sum


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
    transform: Optional[LogitTransform] = None,
    token_losses: Optional[Tensor] = None,
) -> Tensor:
    """``sum_t w_t * (c_t * CE(T(W z_t + b), a_t) + (1 - c_t) * CE(T(W z_t + b), b_t))`` without full logits.

    ``z`` is ``[N, D]``, ``weight`` ``[V, D]``, ``bias`` ``[V]`` or None, targets ``[N]`` (all valid, no
    ignore index), ``coef`` ``[N]`` (None = 1, i.e. plain CE on ``target_a``), ``token_weight`` ``[N]``
    (None = 1/N, a token mean), ``transform`` T the model's logit transform (None = identity). Tokens are
    processed in chunks (default: sized from a memory budget, :func:`chunk_rows`); the gradients wrt ``z``,
    ``weight`` and ``bias`` are computed in the same pass (weight/bias gradients accumulated in fp32 or better;
    under autocast the matmuls run in autocast's dtype), so only ``[chunk, V]`` logits live at any time.
    ``token_losses`` (``[N]``, fp32/fp64, optional) receives each token's unweighted loss. Not twice
    differentiable.
    """
    n, v = z.shape[0], weight.shape[0]
    tr = transform or IDENTITY
    acc_dtype = torch.promote_types(z.dtype, torch.float32)
    if token_weight is None:
        token_weight = torch.full((n,), 1.0 / max(n, 1), dtype=acc_dtype, device=z.device)
    else:
        token_weight = token_weight.detach().to(device=z.device, dtype=acc_dtype)
    if target_b is None:
        coef = None
    else:
        coef = (
            torch.ones(n, dtype=acc_dtype, device=z.device)
            if coef is None
            else coef.detach().to(device=z.device, dtype=acc_dtype).expand(n)
        )
    if n == 0:
        return z.sum() * 0.0 + weight.sum() * 0.0
    terms = Terms(y=target_a, row_w=token_weight, y_b=target_b, coef=coef, tok_out=token_losses)
    return fused_linear_cross_entropy(z, weight, bias, terms, kernel_chunk(chunk_size, z, v, tr, False), tr)[0]

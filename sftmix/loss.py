"""Losses: next-token prediction and the SFTMix Mixup regulariser, with a memory-lean linear cross-entropy.

Both losses send only the positions that predict a response token through the LM head, and by default compute
the head, the model's logit transform (soft-capping, scaling: :class:`LogitTransform`) and the cross-entropy
together in token chunks (:func:`linear_cross_entropy`), so the full ``[tokens, vocab]`` logits never exist.
The head's real weight is read where it lives: a plain ``nn.Linear``; a head with hooks (DeepSpeed ZeRO-3,
FSDP, accelerate offload) is entered once through its own ``__call__`` so the hooks gather/unshard it; a peft
LoRA head is folded into one wider linear head. Anything else falls back to full logits, with a warning.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .constants import IGNORE_INDEX
from .errors import UserError

log = logging.getLogger("sftmix")

# Default memory for one chunk's [chunk, V] temporaries (compute-dtype logits + fp32 log-probs and gradient).
# CPU: 192 MiB = the 512-token chunks at V=32k fp32 that measured fastest here (128 tokens cost ~20% more CPU
# time). CUDA: larger chunks keep the GPU's matmuls big (at V=128k, 64 MB chunks were only ~130 tokens).
_CPU_CHUNK_BYTES = 192 << 20
_CUDA_CHUNK_BYTES_MAX = 2 << 30

__all__ = [
    "linear_cross_entropy", "ntp_loss", "mixup_loss", "ntp_mixup_loss", "sample_lambda", "IGNORE_INDEX",
    "LogitTransform", "logit_transform", "response_token_nll",
]


# --------------------------------------------------------------------------------------------------------------
# The model's post-head logit transform
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogitTransform:
    """``y = softcap * tanh(scale * x / softcap)`` (``softcap`` None: ``y = scale * x``) on the head's output.

    Gemma-2/3 ``final_logit_softcapping`` -> ``softcap``; Cohere ``logit_scale`` -> ``scale``; Granite
    ``logits_scaling`` -> ``scale = 1 / logits_scaling``. Build it from a model config with :func:`logit_transform`.
    """

    scale: float = 1.0
    softcap: Optional[float] = None

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.softcap is None

    def __call__(self, logits: Tensor) -> Tensor:
        """Differentiable reference form (as the model's forward applies it)."""
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def apply_(self, x: Tensor) -> Tensor:
        """In place on a tensor we own (fp32 or better)."""
        if self.scale != 1.0:
            x.mul_(self.scale)
        if self.softcap is not None:
            x.div_(self.softcap).tanh_().mul_(self.softcap)
        return x

    def chain_(self, grad: Tensor, y: Optional[Tensor]) -> None:
        """``grad *= dy/dx`` in place; ``y`` (the transform's output, consumed) is needed only with a softcap."""
        if self.softcap is not None:
            d = y.div_(self.softcap).square_().neg_().add_(1.0)  # 1 - tanh^2
            grad.mul_(d)
        if self.scale != 1.0:
            grad.mul_(self.scale)


IDENTITY = LogitTransform()

# Config keys that name logits but do not touch the LM head's output (attention/router caps, CLIP-style inits...).
_HARMLESS_LOGIT_KEY = re.compile(r"router|attn|attention|init|keep|temperature|auxiliary|lsd_|cell|conf_")
# Keys known to rescale the head's output that we do not implement (their exact semantics differ by model).
_UNSUPPORTED_KEYS = ("lm_head_multiplier", "output_multiplier", "logits_mup_width_multiplier", "output_logit_soft_cap",
                     "logits_soft_cap")


def logit_transform(config: Any) -> LogitTransform:
    """The post-head transform a model's forward applies, from its ``PretrainedConfig`` (None: identity).

    A config key that changes the logits in a way not implemented here is a ``UserError`` (never a silently
    wrong loss); train with ``train.lean_loss=false`` only if the model's own head module applies it.
    """
    if config is None:
        return IDENTITY
    if isinstance(config, LogitTransform):
        return config
    configs = [config]
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        text = get_text()
        if text is not None and text is not config:
            configs.append(text)
    model_type = str(getattr(config, "model_type", "") or "")
    scale, cap = 1.0, None
    for cfg in configs:
        for key, value in vars(cfg).items():
            if value is None or value is False or isinstance(value, (dict, list)) or hasattr(value, "to_dict"):
                continue
            if key == "final_logit_softcapping":
                cap = float(value) if value else None
            elif key == "logit_scale":
                scale *= float(value)
            elif key == "logits_scaling":
                if model_type.startswith("granite"):
                    scale /= float(value)
                elif model_type.startswith("hyperclovax"):
                    scale *= float(value)
                elif float(value) != 1.0:
                    raise UserError(f"model type {model_type!r}: config logits_scaling={value!r} has no known "
                                    "meaning for this model (multiply or divide?); the loss cannot honour it")
            elif key in _UNSUPPORTED_KEYS or ("logit" in key and not _HARMLESS_LOGIT_KEY.search(key)):
                if isinstance(value, (int, float)) and float(value) == 1.0:
                    continue
                raise UserError(f"model type {model_type!r}: config {key}={value!r} transforms the logits in a way "
                                "the SFTMix loss does not implement; its loss would be wrong")
    return LogitTransform(scale=scale, softcap=cap)


# --------------------------------------------------------------------------------------------------------------
# Chunked linear cross-entropy
# --------------------------------------------------------------------------------------------------------------
def _chunk_budget(device: torch.device) -> int:
    env = os.environ.get("SFTMIX_LCE_CHUNK_MB")
    if env:
        return int(float(env) * 2**20)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(min(_CUDA_CHUNK_BYTES_MAX, total // 64))
    return _CPU_CHUNK_BYTES


def chunk_rows(vocab_size: int, compute_dtype: torch.dtype, acc_dtype: torch.dtype, device: torch.device,
               n_fp32_buffers: int = 2) -> int:
    """Tokens per chunk so that one chunk's ``[chunk, V]`` temporaries fit the memory budget (a multiple of 8).

    The budget is ``SFTMIX_LCE_CHUNK_MB`` if set, else 192 MiB on CPU and min(2 GiB, 1/64 of the GPU) on CUDA.
    """
    per_row = max(1, vocab_size) * (compute_dtype.itemsize + n_fp32_buffers * acc_dtype.itemsize)
    rows = _chunk_budget(torch.device(device)) // per_row
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


def _lce_forward(z, weight, bias, target_a, target_b, coef, token_weight, chunk_size, need_z, need_w, need_b,
                 tr=IDENTITY, tok_out=None):
    """Loss (and, if asked, its gradients) chunk by chunk; returns (loss, grad_z, grad_w, grad_b).

    Per chunk: logits = z W^T + b in the compute dtype; y = tr(logits) and log_softmax in fp32 (or fp64);
    d loss / d logits = tw * (softmax(y) - targets) * tr'(logits). ``tok_out`` ([N], optional) receives each
    token's unweighted loss.
    """
    n = z.shape[0]
    acc_dtype = torch.promote_types(z.dtype, torch.float32)
    cdt = _compute_dtype(z)
    grad_z = torch.empty_like(z) if need_z else None
    grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device) if need_b else None
    loss = torch.zeros((), dtype=acc_dtype, device=z.device)
    with torch.autocast(z.device.type, enabled=False):  # explicit dtypes below; autocast would re-cast per call
        wc = weight.to(cdt)
        bc = None if bias is None else bias.to(cdt)
        wt = wc.t()
        for s in range(0, n, chunk_size):
            e = min(n, s + chunk_size)
            zc, tw, ya = z[s:e].to(cdt), token_weight[s:e], target_a[s:e, None]
            logits = torch.addmm(bc, zc, wt) if bc is not None else zc @ wt
            y = None
            if tr.identity:
                logp = F.log_softmax(logits, dim=-1, dtype=acc_dtype)  # fused upcast, no fp32 copy of the logits
            else:
                y = tr.apply_(logits.to(acc_dtype, copy=True) if logits.dtype != acc_dtype else logits)
                logp = F.log_softmax(y, dim=-1)
                if tr.softcap is None:
                    y = None  # a pure scale's derivative is a constant
            del logits
            if target_b is None:
                tok_loss = -logp.gather(1, ya).squeeze(1)
            else:
                c, yb = coef[s:e], target_b[s:e, None]
                tok_loss = -(c * logp.gather(1, ya).squeeze(1) + (1 - c) * logp.gather(1, yb).squeeze(1))
            if tok_out is not None:
                tok_out[s:e] = tok_loss
            loss += (tw * tok_loss).sum()
            if not (need_z or need_w or need_b):
                continue
            # d loss / d y = tw * (softmax - c*onehot(a) - (1-c)*onehot(b)). The [chunk, V] part is built in
            # place over logp without tw; tw scales the small [chunk, D] operands instead (one fewer pass over V).
            g = logp.exp_()
            if target_b is None:
                g.scatter_add_(1, ya, torch.full_like(tw, -1.0)[:, None])
            else:
                g.scatter_add_(1, ya, -c[:, None])
                g.scatter_add_(1, yb, -(1 - c)[:, None])
            if not tr.identity:
                tr.chain_(g, y)
                del y
            if need_b:
                grad_b += tw @ g
            g = g.to(cdt)
            if need_z:
                gz = _mm_into(g, wc, grad_z[s:e])
                gz.mul_(tw[:, None].to(gz.dtype))
            if need_w:
                _acc_mm(grad_w, g.t(), zc * tw[:, None].to(cdt))
    return loss, grad_z, grad_w, grad_b


class _LinearCrossEntropy(torch.autograd.Function):
    """Liger-style: gradients are computed during forward, chunk by chunk; backward only scales them."""

    @staticmethod
    def forward(ctx, z, weight, bias, target_a, target_b, coef, token_weight, chunk_size, tr, tok_out):
        need_z, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        loss, gz, gw, gb = _lce_forward(
            z, weight, bias, target_a, target_b, coef, token_weight, chunk_size, need_z, need_w, need_b, tr, tok_out
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
        return (*out, None, None, None, None, None, None, None)


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
    if target_b is not None:
        coef = (
            torch.ones(n, dtype=acc_dtype, device=z.device)
            if coef is None
            else coef.detach().to(device=z.device, dtype=acc_dtype).expand(n)
        )
    if n == 0:
        return z.sum() * 0.0 + weight.sum() * 0.0
    chunk = max(1, int(chunk_size)) if chunk_size else chunk_rows(v, _compute_dtype(z), acc_dtype, z.device,
                                                                   2 if tr.softcap is None else 3)
    if not torch.is_grad_enabled():  # e.g. scoring under no_grad: skip the gradient work entirely
        return _lce_forward(z, weight, bias, target_a, target_b, coef, token_weight, chunk, False, False, False,
                            tr, token_losses)[0]
    return _LinearCrossEntropy.apply(z, weight, bias, target_a, target_b, coef, token_weight, chunk, tr,
                                     token_losses)


# --------------------------------------------------------------------------------------------------------------
# LM-head plumbing: where the head's real weight is, and the fallback when we cannot get at it
# --------------------------------------------------------------------------------------------------------------
class _NoLean(Exception):
    """The head cannot be bypassed; the message says why."""


_WARNED: set[str] = set()


def _warn_fallback(reason: str, n_rows: int, vocab: Optional[int], passes: int = 1) -> None:
    """Warn once per reason: the lean path is off, and what the full logits cost."""
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    cost = ""
    if vocab:
        # fp32 logits, their log-softmax and their gradient: ~3 x [N, V] x 4 bytes per pass.
        mb = 3 * 4 * n_rows * vocab * passes / 2**20
        cost = f"; full [{n_rows}, {vocab}] logits cost ~{mb:,.0f} MB for this batch"
    log.warning("sftmix loss: lean path unavailable (%s): computing full logits%s", reason, cost)


def _plain_weight(w: Tensor) -> None:
    if type(w) not in (Tensor, nn.Parameter) or w.dim() != 2 or w.numel() == 0:
        kind = type(w).__name__ if type(w) not in (Tensor, nn.Parameter) else f"shape {tuple(w.shape)}"
        raise _NoLean(f"the LM-head weight is not a materialised tensor ({kind})")


def _inside_forward(head: nn.Module, z: Tensor, fn: Callable) -> Any:
    """``fn(z, weight, bias)`` run as the head's own forward, so its hooks (ZeRO-3 gather, FSDP unshard,
    accelerate offload) materialise the weight exactly once and release it after, as for ``head(z)``."""
    def forward(x, *args, **kwargs):
        _plain_weight(head.weight)
        return fn(x, head.weight, head.bias)

    had = "forward" in head.__dict__
    old = head.__dict__.get("forward")
    head.forward = forward
    try:
        return head(z)
    finally:
        if had:
            head.forward = old
        else:
            del head.forward


def _is_lora(head) -> bool:
    return hasattr(head, "base_layer") and hasattr(head, "lora_A") and hasattr(head, "lora_B")


def _peft_active_module(head):
    """The module a peft ``ModulesToSaveWrapper`` would run (the trainable copy or the original)."""
    if getattr(head, "disable_adapters", False):
        return head.original_module
    active = [a for a in getattr(head, "active_adapters", []) if a in head.modules_to_save]
    if len(active) > 1:
        raise _NoLean("several active modules_to_save adapters on the LM head")
    return head.modules_to_save[active[0]] if active else head.original_module


def _run_lean(head, z: Tensor, fn: Callable) -> Any:
    """``fn(z, weight, bias)`` on the head's real parameters; raises ``_NoLean`` when the head can't be bypassed.

    A LoRA head ``W z + s B A drop(z)`` becomes one linear head on ``[z, s A drop(z)]`` with weight ``[W, B]``.
    """
    if hasattr(head, "modules_to_save") and hasattr(head, "original_module"):
        head = _peft_active_module(head)
    if _is_lora(head):
        if getattr(head, "merged", False) or getattr(head, "disable_adapters", False):
            return _run_lean(head.base_layer, z, fn)
        zs, ws = [z], []
        for name in head.active_adapters:
            if name not in head.lora_A:
                continue
            if name in getattr(head, "lora_variant", {}) or getattr(head, "use_dora", {}).get(name):
                raise _NoLean("a LoRA variant (e.g. DoRA) on the LM head")
            a, b = head.lora_A[name], head.lora_B[name]
            for m in (a, b):
                if not isinstance(m, nn.Linear) or m._forward_hooks or m._forward_pre_hooks or m.bias is not None:
                    raise _NoLean("LoRA A/B of the LM head are not plain bias-free nn.Linear layers")
                _plain_weight(m.weight)
            x = head.lora_dropout[name](z.to(a.weight.dtype))
            zs.append((F.linear(x, a.weight) * head.scaling[name]).to(z.dtype))
            ws.append(b.weight)
        if not ws:
            return _run_lean(head.base_layer, z, fn)
        return _run_lean(head.base_layer, torch.cat(zs, 1),
                         lambda x, w, bias: fn(x, torch.cat([w] + [b.to(w.dtype) for b in ws], 1), bias))
    if not isinstance(head, nn.Linear):
        raise _NoLean(f"the LM head is a {type(head).__name__}, not an nn.Linear")
    if head._forward_hooks or head._forward_pre_hooks:
        return _inside_forward(head, z, fn)
    _plain_weight(head.weight)
    return fn(z, head.weight, head.bias)


def _vocab(head) -> Optional[int]:
    """The head's output size where it can be read off (for the fallback's memory estimate)."""
    if isinstance(head, nn.Module):
        for m in reversed(list(head.modules())):
            if isinstance(getattr(m, "out_features", None), int):
                return m.out_features
    return None


def _lean_or_fallback(head, z: Tensor, fn: Callable, lean: bool, passes: int = 1) -> tuple[bool, Any]:
    """(True, fn's result) through :func:`_run_lean`, or (False, None) after warning once why not."""
    if not lean:
        return False, None
    if not isinstance(head, nn.Module):
        _warn_fallback("the LM head is a plain callable, not a module", z.shape[0], None, passes)
        return False, None
    try:
        return True, _run_lean(head, z, fn)
    except _NoLean as e:
        _warn_fallback(str(e), z.shape[0], _vocab(head), passes)
        return False, None


def _upcast(t: Tensor) -> Tensor:
    """At least fp32 for the softmax (like HF's ``logits.float()``), but keep fp64 as fp64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _full_logits(head, z: Tensor, tr: LogitTransform) -> Tensor:
    return tr(_upcast(head(z)))


def _shifted(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Targets for positions 0..T-2 (HF convention: position t predicts labels[t+1]) and their validity mask."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


# --------------------------------------------------------------------------------------------------------------
# NTP
# --------------------------------------------------------------------------------------------------------------
_KERNELS = ("auto", "sftmix", "liger", "cce")


def _external_ntp(kernel: str, z: Tensor, w: Tensor, b: Optional[Tensor], y: Tensor, tr: LogitTransform):
    """Summed CE from Liger's fused linear CE or cut-cross-entropy (CUDA only, lazily imported); None if neither
    is usable here (not CUDA, not installed, a transform they don't support)."""
    if kernel == "sftmix" or not z.is_cuda or tr.scale != 1.0:
        return None
    softcap = tr.softcap
    if kernel in ("auto", "liger"):
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        except ImportError:
            liger_fused_linear_cross_entropy = None
        if liger_fused_linear_cross_entropy is not None:
            out = liger_fused_linear_cross_entropy(z, w, y, bias=b, reduction="sum", softcap=softcap)
            return out[0] if isinstance(out, tuple) else out
    if kernel in ("auto", "cce") and b is None:
        try:
            from cut_cross_entropy import linear_cross_entropy as cce_linear_cross_entropy
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
) -> Tensor:
    """Next-token CE as Hugging Face computes it for causal LMs, from the LM-head input.

    ``hidden`` is ``[B, T, D]``, ``labels`` ``[B, T]`` aligned with ``input_ids`` (-100 = ignored; shifted here).
    Token mean over the batch's valid positions, or the sum divided by ``num_items`` when given (HF Trainer's
    ``num_items_in_batch`` under gradient accumulation). ``transform``: the model's logit transform (a
    :class:`LogitTransform` or the model's config; None = identity). Only valid positions go through the head;
    with ``lean`` through :func:`linear_cross_entropy`. ``token_losses`` (``[B, T-1]`` float, optional) receives
    each position's NLL (0 where ignored). ``kernel``: ``sftmix`` (ours), or on CUDA ``liger`` /
    ``cce`` / ``auto`` (Liger's fused linear CE or cut-cross-entropy when installed, else ours).
    """
    if kernel not in _KERNELS:
        raise UserError(f"unknown loss kernel {kernel!r}; choose from {', '.join(_KERNELS)}")
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
        return linear_cross_entropy(zz, w, b, y, token_weight=tw, transform=tr, token_losses=tok)

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


# --------------------------------------------------------------------------------------------------------------
# NTP + Mixup sharing one LM-head pass
# --------------------------------------------------------------------------------------------------------------
def _joint_forward(z, weight, bias, y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk, need_z, need_w, need_b,
                   tr=IDENTITY):
    """(ntp_sum, mix_sum, grad_z, grad_w, grad_b); rows 2i, 2i+1 of ``z`` are slot i's a and b positions.

    ``ntp_sum`` is the plain CE sum over all rows (0 when ``w_ntp`` is None: no NTP term), ``mix_sum`` the
    slot-weighted Mixup sum. Gradients are those of ``w_ntp * ntp_sum + w_mix * mix_sum``. The head is linear,
    so the mixed input's raw logits are ``λ L_a + (1-λ) L_b``; the transform T comes after the mixing (and its
    derivative at the mixed logits in the Mixup gradient, at each row's own logits in the NTP gradient).
    """
    n = z.shape[0]
    acc = torch.promote_types(z.dtype, torch.float32)
    cdt = _compute_dtype(z)
    need = need_z or need_w or need_b
    grad_z = torch.empty_like(z) if need_z else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
    ntp_sum = torch.zeros((), dtype=acc, device=z.device)
    mix_sum = torch.zeros((), dtype=acc, device=z.device)
    # The [chunk, V] gradient is kept in units of w_ntp, which then scales only the small [chunk, D] operands.
    scale = w_ntp if w_ntp is not None and bool(w_ntp != 0) else None
    keep_y = tr.softcap is not None
    with torch.autocast(z.device.type, enabled=False):  # explicit dtypes below
        wc = weight.to(cdt)
        bc = None if bias is None else bias.to(cdt)
        wt = wc.t()
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            zc, yc = z[s:e].to(cdt), y[s:e, None]
            logits = torch.addmm(bc, zc, wt) if bc is not None else zc @ wt
            ns = max(0, min(e, 2 * n_slots) - s)  # slot rows in this chunk (even: s and chunk are even)
            g_mix = None
            if ns:
                sl = slice(s // 2, s // 2 + ns // 2)
                lam, sw = slot_lam[sl, None], slot_w[sl]
                ym = torch.lerp(logits[1:ns:2].to(acc), logits[0:ns:2].to(acc), lam)  # mixed raw logits
                if not tr.identity:
                    tr.apply_(ym)
                logq = F.log_softmax(ym, dim=-1)
                if not keep_y:
                    del ym
                ya, yb = yc[0:ns:2], yc[1:ns:2]
                tok = -(lam * logq.gather(1, ya) + (1 - lam) * logq.gather(1, yb)).squeeze(1)
                mix_sum += (sw * tok).sum()
                if need:
                    g_mix = logq.exp_()
                    g_mix.scatter_add_(1, ya, -lam)
                    g_mix.scatter_add_(1, yb, -(1 - lam))
                    if not tr.identity:
                        tr.chain_(g_mix, ym if keep_y else None)
                    coef = (w_mix * sw)[:, None] if scale is None else (w_mix * sw)[:, None] / scale
                if keep_y:
                    del ym
                del logq
            if w_ntp is not None:
                yl = None
                if tr.identity:
                    logp = F.log_softmax(logits, dim=-1, dtype=acc)
                else:
                    yl = tr.apply_(logits.to(acc, copy=True) if logits.dtype != acc else logits)
                    logp = F.log_softmax(yl, dim=-1)
                    if not keep_y:
                        yl = None
                del logits
                ntp_sum += -logp.gather(1, yc).sum()
                if not need:
                    continue
                g = logp.exp_()
                g.scatter_add_(1, yc, torch.full((e - s, 1), -1.0, dtype=acc, device=z.device))
                if scale is None:
                    g.zero_()  # ntp_scale 0: no NTP gradient
                elif not tr.identity:
                    tr.chain_(g, yl)
                del yl
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
            g = g.to(cdt)
            if need_z:
                gz = _mm_into(g, wc, grad_z[s:e])
                if scale is not None:
                    gz.mul_(scale)
            if need_w:
                _acc_mm(grad_w, g.t(), zc if scale is None else zc * scale)
    return ntp_sum, mix_sum, grad_z, grad_w, grad_b


class _JointLinearCrossEntropy(torch.autograd.Function):
    """Returns (total, ntp_sum, mix_sum); gradients (of total) are computed in forward, like the class above."""

    @staticmethod
    def forward(ctx, z, weight, bias, y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk, tr):
        need_z, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        ntp_sum, mix_sum, gz, gw, gb = _joint_forward(
            z, weight, bias, y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk, need_z, need_w, need_b, tr
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
        return (*out, None, None, None, None, None, None, None, None)


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
    transform: Any = None,
    one_pass: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """NTP over the whole batch plus Mixup over row pairs, with one LM-head pass: ``(total, ntp, mix)``.

    ``ntp = ntp_scale * ntp_loss(hidden, labels, lm_head, num_items=num_items)``, ``mix = mix_scale *
    mixup_loss(hidden[pair_a], hidden[pair_b], labels[pair_a], labels[pair_b], lm_head, lam)`` and ``total =
    ntp_weight * ntp + mu * mix``; ``ntp`` and ``mix`` are returned detached (``ntp`` is 0 when ``ntp_weight``
    is 0: the unpaired positions are then skipped). ``transform``: the model's logit transform (or config).
    A linear head makes the mixed raw logits ``λ L_a + (1-λ) L_b`` (the transform comes after), so with
    ``lean`` the Mixup term reuses the NTP logits (rows of ``pair_a`` and ``pair_b`` must all differ).
    ``one_pass=False`` (or a head we cannot bypass) computes the two losses separately.
    """
    tr = logit_transform(transform)
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

    def joint(zz, w, b):
        if chunk_size:
            chunk = max(1, int(chunk_size))
        else:
            chunk = chunk_rows(w.shape[0], _compute_dtype(zz), acc, zz.device, 3 if tr.softcap is None else 4)
        chunk += chunk % 2  # both rows of a slot land in the same chunk
        args = (zz, w, b, y, n_slots, slot_lam, slot_w, w_ntp, w_mix, chunk)
        if torch.is_grad_enabled():
            return _JointLinearCrossEntropy.apply(*args, tr)
        ntp_sum, mix_sum = _joint_forward(*args, False, False, False, tr)[:2]
        return w_mix * mix_sum + (0.0 if w_ntp is None else w_ntp * ntp_sum), ntp_sum, mix_sum

    ok, res = _lean_or_fallback(lm_head, z, joint, lean, passes=2)
    if not ok:
        return separate()
    total, ntp_sum, mix_sum = res
    ntp = (ntp_sum * (ntp_scale / divisor)).detach() if ntp_weight else zero.detach()
    return total, ntp, (mix_sum * mix_scale).detach()

"""Where the LM head's real weight is, and the fallback to full logits when it cannot be reached.

A plain ``nn.Linear`` is read directly; a head with hooks (DeepSpeed ZeRO-3, FSDP, accelerate offload) is entered
once through its own ``__call__`` so the hooks gather/unshard its weight; a peft LoRA head is folded into one wider
linear head. Anything else is computed from full logits, after a warning (once per reason) that says what it costs.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transform import LogitTransform
from .warn import warn_once


class _NoLean(Exception):
    """The head cannot be bypassed; the message says why."""


def _warn_fallback(reason: str, n_rows: int, vocab: Optional[int], passes: int = 1) -> None:
    """Warn once per reason: the lean path is off, and what the full logits cost."""
    cost = ""
    if vocab:
        # fp32 logits, their log-softmax and their gradient: ~3 x [N, V] x 4 bytes per pass.
        mb = 3 * 4 * n_rows * vocab * passes / 2**20
        cost = f"; full [{n_rows}, {vocab}] logits cost ~{mb:,.0f} MB for this batch"
    warn_once(reason, "sftmix loss: lean path unavailable (%s): computing full logits%s", reason, cost)


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

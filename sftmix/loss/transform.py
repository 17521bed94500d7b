"""The model's post-head logit transform (soft-capping, scaling), read off its config.

Every loss here applies it after the LM head and before the softmax, exactly as the model's own forward does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from core.errors import UserError


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


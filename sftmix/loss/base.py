"""The loss objects' shared types: what a micro-step tells a loss, what a loss returns, and the family registry.

In torchtune's style a loss is an object that owns its configuration (weights, α, pairing, chunking, the model's
logit transform) and is called on the LM-head input with the head passed explicitly::

    loss_fn = loss_for(get_variant("sftmix")).set_model_output(model)
    out = loss_fn(hidden, labels, model.get_output_embeddings())
    out.loss.backward()            # out.ntp, out.mixup: detached tensors for the logs

Every value in a :class:`LossOutput` stays a tensor, so a training step never waits for the device to report a
number; whoever logs turns them into floats when it logs (:class:`sftmix.trainer.SFTMixTrainer` every
``logging_steps``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from core.errors import UserError
from core.registry import Registry
from .ntp import KERNELS
from .transform import IDENTITY, LogitTransform, logit_transform

LAMBDA_PER = ("pair", "batch")


@dataclass(frozen=True)
class GradAccumScale:
    """How one micro-batch's loss terms are scaled so that the accumulated gradient is the whole step's.

    NTP: the token sum divided by ``num_items`` (HF's ``num_items_in_batch``: the step's response tokens over all
    micro-batches, and ranks when tokens are averaged across them) times ``ntp_scale`` (the rank count then: DDP
    averages gradients over ranks); without ``num_items``, the micro-batch token mean times ``ntp_scale = 1/ga``.
    A per-micro-batch mean (Mixup, IR-DRO) is multiplied by ``mean_scale = 1/ga``; logged values by ``ga``.
    """

    ga: int = 1
    num_items: Any = None
    ntp_scale: float = 1.0

    @property
    def mean_scale(self) -> float:
        return 1.0 / self.ga


def grad_accum_scale(ga: int, num_items_in_batch: Any = None, world_size: int = 1,
                     average_tokens_across_devices: bool = False) -> GradAccumScale:
    """The one place for gradient-accumulation scaling (see :class:`GradAccumScale`)."""
    if num_items_in_batch is None:
        return GradAccumScale(ga, None, 1.0 / ga)
    across = average_tokens_across_devices and world_size > 1
    return GradAccumScale(ga, num_items_in_batch, float(world_size) if across else 1.0)


@dataclass
class LossContext:
    """What one micro-step tells a loss besides hidden states, labels and head; the defaults suit a plain loop.

    ``scale``: gradient accumulation (:class:`GradAccumScale`; default: none). ``training``: False evaluates
    (a Mixup loss then gives its NTP term alone). ``confident``: ``[B]`` bool per row, for the confidence pairings
    (None: every pair mixes). ``rng``: called once per Mixup step for the generator of its λ draws (None: the
    global RNG). ``record_nll``: also return each row's mean response NLL (online training dynamics).
    """

    scale: GradAccumScale = field(default_factory=GradAccumScale)
    training: bool = True
    confident: Optional[Tensor] = None
    rng: Optional[Callable[[], torch.Generator]] = None
    record_nll: bool = False


@dataclass
class LossOutput:
    """A loss's result. ``loss`` is what backward runs on (scaled for gradient accumulation); the rest is detached.

    ``ntp`` / ``mixup``: the NTP and Mixup terms as the logs report them (per micro-batch, before the loss weights,
    undoing the accumulation scale); None where the loss has no such term. ``example_nll``: ``[B]`` mean response
    NLL per row (0 for a row without response tokens), when :attr:`LossContext.record_nll` asked for it.
    """

    loss: Tensor
    ntp: Optional[Tensor] = None
    mixup: Optional[Tensor] = None
    example_nll: Optional[Tensor] = None

    def log_parts(self) -> dict[str, Tensor]:
        """The logged terms by their log names (``ntp_loss``, ``mixup_loss``), as tensors."""
        parts = {"ntp_loss": self.ntp, "mixup_loss": self.mixup}
        return {k: v for k, v in parts.items() if v is not None}


@dataclass(frozen=True)
class LossOptions:
    """How a loss is computed, whatever the variant: the run's ``train`` options that concern the loss.

    ``lean``: the chunked linear cross-entropy (False: the naive full-logits reference); ``chunk_size``: rows per
    kernel chunk (None: from the memory budget); ``kernel``: the NTP kernel (``sftmix``; on CUDA ``auto`` /
    ``liger`` / ``cce``); ``lambda_per``: one λ per ``pair`` or per micro-``batch``; ``one_pass``: NTP and Mixup
    share one LM-head pass (False: two lean passes).
    """

    lean: bool = True
    chunk_size: Optional[int] = None
    kernel: str = "sftmix"
    lambda_per: str = "pair"
    one_pass: bool = True

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise UserError(f"unknown ntp_kernel {self.kernel!r}; choose from {', '.join(KERNELS)}")
        if self.lambda_per not in LAMBDA_PER:
            raise UserError(f"unknown lambda_per {self.lambda_per!r}; choose from {', '.join(LAMBDA_PER)}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise UserError(f"chunk_size must be >= 1, got {self.chunk_size}")


class SFTLoss(ABC):
    """A training loss on the LM-head input: ``loss_fn(hidden, labels, head, ctx) -> LossOutput``.

    ``hidden`` ``[B, T, D]`` (the last hidden states), ``labels`` ``[B, T]`` aligned with ``input_ids`` (-100 =
    ignored; shifted inside), ``head`` the LM head (an ``nn.Linear``, a peft-wrapped or hooked one, or any callable:
    see :mod:`sftmix.loss.head`). A family registers with :data:`LOSSES` and says which variants it handles.
    """

    #: the family's name in :data:`LOSSES`
    name: str = ""

    def __init__(self, options: LossOptions = LossOptions(), transform: Any = None):
        self.options = options
        self.transform: LogitTransform = logit_transform(transform) if transform is not None else IDENTITY

    @classmethod
    @abstractmethod
    def handles(cls, variant) -> bool:
        """Whether this family computes ``variant``'s loss (read off the variant's data)."""

    @classmethod
    @abstractmethod
    def from_variant(cls, variant, options: LossOptions = LossOptions()) -> "SFTLoss":
        """The loss for ``variant`` (its weights, α, pairing...) with ``options``."""

    def set_model_output(self, model: nn.Module) -> "SFTLoss":
        """Adopt the logit transform the model's forward applies after its head (Gemma's soft-cap, Cohere's and
        Granite's scale), read off its config; returns ``self``. The head itself is passed at each call."""
        self.transform = logit_transform(getattr(model, "config", None))
        return self

    @abstractmethod
    def forward(self, hidden: Tensor, labels: Tensor, head: Union[nn.Module, Callable[[Tensor], Tensor]],
                ctx: LossContext) -> LossOutput:
        """One micro-batch's loss (see the class docstring)."""

    def __call__(self, hidden: Tensor, labels: Tensor, head: Union[nn.Module, Callable[[Tensor], Tensor]],
                 ctx: Optional[LossContext] = None) -> LossOutput:
        return self.forward(hidden, labels, head, ctx if ctx is not None else LossContext())

    def __repr__(self) -> str:
        own = {k: v for k, v in vars(self).items() if k not in ("options", "transform")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in own.items())}, options={self.options})"


LOSSES: Registry[type[SFTLoss]] = Registry("loss family")


def register_loss(cls: type[SFTLoss]) -> type[SFTLoss]:
    """Class decorator: add a loss family to :data:`LOSSES` under its ``name`` (its docstring's first line)."""
    LOSSES.add(cls.name, cls, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
    return cls


def loss_for(variant, options: LossOptions = LossOptions()) -> SFTLoss:
    """The loss object for ``variant``: the most recently registered family that handles it (so a family a plugin
    registers later can claim variants), built with ``options``."""
    for name in reversed(list(LOSSES)):
        cls = LOSSES.get(name)
        if cls.handles(variant):
            return cls.from_variant(variant, options)
    raise UserError(f"no loss family handles variant {variant.name!r}; families: {', '.join(LOSSES)}")

"""SFTMix training on top of ``transformers.Trainer``.

Everything generic (accelerate/DDP/FSDP/DeepSpeed, gradient accumulation, mixed precision, checkpoints and resume,
``report_to`` logging, progress bars) is the Trainer's. We change two things:

* ``compute_loss``: one forward pass gives the last hidden states (the LM-head input); the loss is
  ``ntp_weight * NTP(all examples) + mu * Mixup(pairs)`` with λ ~ Beta(α, α) per pair;
* ``get_train_dataloader``: batches come from :class:`sftmix.pairing.PairedBatchSampler`, so every micro-batch
  (and so every rank and accumulation step) holds its pairs: rows ``k`` and ``k + B/2``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer

from .constants import CONFIDENT, IGNORE_INDEX, UNCONFIDENT
from .errors import UserError
from .irdro import irdro_loss
from .loss import KERNELS, logit_transform, ntp_loss, ntp_mixup_loss, sample_lambda
from .pairing import PairedBatchSampler, epoch_callback, mix_pair_mask
from .variants import Variant

log = logging.getLogger("sftmix")


@dataclass(frozen=True)
class GradAccumScale:
    """How one micro-batch's loss terms are scaled so that the accumulated gradient is the whole step's.

    NTP: the token sum divided by ``num_items`` (HF's ``num_items_in_batch``: the step's response tokens over all
    micro-batches, and ranks when tokens are averaged across them) times ``ntp_scale`` (the rank count then: DDP
    averages gradients over ranks); without ``num_items``, the micro-batch token mean times ``ntp_scale = 1/ga``.
    A per-micro-batch mean (Mixup, IR-DRO) is multiplied by ``mean_scale = 1/ga``; logged values by ``ga``.
    """

    ga: int
    num_items: Any
    ntp_scale: float

    @property
    def mean_scale(self) -> float:
        return 1.0 / self.ga


def grad_accum_scale(ga: int, num_items_in_batch: Any = None, world_size: int = 1,
                     average_tokens_across_devices: bool = False) -> GradAccumScale:
    """The trainer's one place for gradient-accumulation scaling (see :class:`GradAccumScale`)."""
    if num_items_in_batch is None:
        return GradAccumScale(ga, None, 1.0 / ga)
    across = average_tokens_across_devices and world_size > 1
    return GradAccumScale(ga, num_items_in_batch, float(world_size) if across else 1.0)


class ExampleDataset(Dataset):
    """Rendered examples (``input_ids``, ``labels``) plus their position, so the trainer can look up the split."""

    def __init__(self, examples: Sequence[dict]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        ex = self.examples[i]
        return {"input_ids": ex["input_ids"], "labels": ex["labels"], "idx": i}


class SFTMixTrainer(Trainer):
    """``transformers.Trainer`` whose loss is NTP + μ·Mixup (see module docstring).

    ``split_labels``: per training example, "confident" / "unconfident" (needed by confidence-based pairings).
    ``one_pass``: NTP and Mixup share one LM-head pass (False: two lean passes, for comparison).
    ``ntp_kernel``: the NTP-only variants' kernel (``sftmix``; on CUDA ``auto``/``liger``/``cce`` use Liger's
    fused linear CE or cut-cross-entropy when installed). ``loss_recorder``: called as
    ``loss_recorder(idx, nll, step)`` with each example's mean response NLL from the training forward pass
    (online training dynamics; NTP-only variants).
    """

    # compute_loss below scales for gradient accumulation itself (grad_accum_scale, as HF's causal-LM loss does).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        variant: Variant,
        split_labels: Sequence[str] | None = None,
        lean_loss: bool = True,
        lambda_per: str = "pair",
        one_pass: bool = True,
        ntp_kernel: str = "sftmix",
        loss_recorder: Any = None,
        **kwargs: Any,
    ):
        if ntp_kernel not in KERNELS:
            raise UserError(f"unknown ntp_kernel {ntp_kernel!r}; choose from {', '.join(KERNELS)}")
        super().__init__(*args, **kwargs)
        self.variant = variant
        self.lean_loss = lean_loss
        self.lambda_per = lambda_per
        self.one_pass, self.ntp_kernel, self.loss_recorder = one_pass, ntp_kernel, loss_recorder
        self._transform = None
        if variant.needs_confidence and split_labels is None:
            raise ValueError(f"variant {variant.name!r} pairs by confidence: pass split_labels")
        n = len(self.train_dataset) if self.train_dataset is not None else 0
        labels = split_labels if split_labels is not None else [CONFIDENT] * n
        self.is_confident = torch.tensor([lab == CONFIDENT for lab in labels], dtype=torch.bool)
        self._loss_parts: dict[str, list[float]] = {}
        self._sampler_callback = None
        self._lam_step = (-1, 0)  # (global_step, micro-step within it): seeds λ so that resume replays it

    # ---- data -------------------------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        if not self.variant.uses_mixup:
            return super().get_train_dataloader()
        sampler = PairedBatchSampler(
            [CONFIDENT if c else UNCONFIDENT for c in self.is_confident.tolist()],
            batch_size=self.args.per_device_train_batch_size,
            mode=self.variant.pairing,
            seed=self.args.seed,
        )
        # On resume with 2+ ranks, accelerate's wrappers hide the sampler from the Trainer's set_epoch.
        if self._sampler_callback is not None:
            self.remove_callback(self._sampler_callback)
        self._sampler_callback = epoch_callback(sampler)
        self.add_callback(self._sampler_callback)
        dl = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(dl)

    # ---- loss -------------------------------------------------------------------------------------------------
    def _lambda_generator(self) -> torch.Generator:
        step, micro = self._lam_step
        micro = micro + 1 if step == self.state.global_step else 0
        self._lam_step = (self.state.global_step, micro)
        seed = (self.args.seed * 1_000_003 + self.state.global_step * 1_009 + micro * 97 + self.args.process_index)
        return torch.Generator().manual_seed(seed % (2**63))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        idx = inputs.get("idx")
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            output_hidden_states=True,
            logits_to_keep=1,  # the loss below uses the hidden states: skip HF's full-vocabulary logits
            use_cache=False,
        )
        hidden = outputs.hidden_states[-1]
        unwrapped = self.accelerator.unwrap_model(model)
        head = unwrapped.get_output_embeddings()
        if self._transform is None:  # the model's own post-head transform (Gemma soft-cap, Cohere/Granite scale)
            self._transform = logit_transform(unwrapped.config)
        tr = self._transform
        v = self.variant
        loss = hidden.new_zeros(())

        sc = grad_accum_scale(self.current_gradient_accumulation_steps, num_items_in_batch,
                              self.accelerator.num_processes, self.args.average_tokens_across_devices)

        if v.uses_mixup and model.training:
            k = hidden.shape[0] // 2
            sel = torch.ones(k, dtype=torch.bool, device=hidden.device)
            if idx is not None and v.pairing in ("conf_conf", "unconf_unconf"):
                sel = mix_pair_mask(self.is_confident[idx.cpu()], v.pairing).to(hidden.device)
            a = torch.nonzero(sel).flatten()
            gen = self._lambda_generator()
            n_lam = 1 if self.lambda_per == "batch" else int(a.numel())
            lam = sample_lambda(n_lam, v.alpha, generator=gen).to(hidden.device, torch.float32)
            lam = lam.expand(a.numel()) if n_lam == 1 else lam
            # One LM-head pass for both terms (the mixed logits are the mix of the NTP logits).
            loss, ntp, mix = ntp_mixup_loss(
                hidden, labels, head, a, a + k, lam, ntp_weight=v.ntp_weight, mu=v.mu, num_items=sc.num_items,
                ntp_scale=sc.ntp_scale, mix_scale=sc.mean_scale, lean=self.lean_loss, transform=tr,
                one_pass=self.one_pass,
            )
            if v.ntp_weight > 0:
                self._record("ntp_loss", ntp * sc.ga)
            self._record("mixup_loss", mix * sc.ga)
        elif v.ntp_weight > 0:
            kw = dict(lean=self.lean_loss, transform=tr, kernel=self.ntp_kernel)
            tok = None
            if self.loss_recorder is not None and idx is not None and model.training:
                tok = torch.zeros(labels.shape[0], labels.shape[1] - 1, dtype=torch.float32, device=hidden.device)
                kw["token_losses"] = tok
            if v.irdro_tau > 0:  # IR-DRO: the batch's per-example NTP losses, reweighted (sftmix.irdro)
                ntp = irdro_loss(hidden, labels, head, v.irdro_tau, lean=self.lean_loss, transform=tr)[0]
                ntp = ntp * sc.mean_scale
            else:
                ntp = ntp_loss(hidden, labels, head, num_items=sc.num_items, **kw) * sc.ntp_scale
            if tok is not None:  # per-example response NLL from this very forward pass: no perplexity pass needed
                count = (labels[:, 1:] != IGNORE_INDEX).sum(1).clamp(min=1)
                nll = (tok.sum(1) / count).tolist()
                self.loss_recorder(idx.tolist(), nll, self.state.global_step)
            loss = loss + v.ntp_weight * ntp
            self._record("ntp_loss", ntp.detach() * sc.ga)

        return (loss, outputs) if return_outputs else loss

    # ---- logging ----------------------------------------------------------------------------------------------
    def _record(self, name: str, value: torch.Tensor) -> None:
        self._loss_parts.setdefault(name, []).append(float(value))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        # Add the mean NTP and Mixup terms since the last log line, so loss curves can show both.
        if "loss" in logs:
            for name, vals in self._loss_parts.items():
                if vals:
                    logs[name] = round(sum(vals) / len(vals), 6)
            self._loss_parts = {}
        super().log(logs, *args, **kwargs)


def gradient_accumulation(global_batch: int, per_device: int, world_size: int) -> int:
    """Accumulation steps so that per_device × world × steps == global batch (which must divide evenly)."""
    per_step = per_device * world_size
    steps = max(1, math.ceil(global_batch / per_step))
    if steps * per_step != global_batch:
        log.warning(
            "global batch %d is not a multiple of per-device batch %d x %d ranks: using %d",
            global_batch, per_device, world_size, steps * per_step,
        )
    return steps

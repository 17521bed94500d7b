"""SFTMix training on top of ``transformers.Trainer``.

Everything generic (accelerate/DDP/FSDP/DeepSpeed, gradient accumulation, mixed precision, checkpoints and resume,
``report_to`` logging, progress bars) is the Trainer's. We change three things:

* ``compute_loss``: one forward pass gives the last hidden states (the LM-head input), and the variant's loss object
  (:mod:`sftmix.loss`: NTP, ``ntp_weight * NTP + mu * Mixup`` with λ ~ Beta(α, α) per pair, IR-DRO) takes them with
  the head;
* ``get_train_dataloader``: batches come from :class:`sftmix.pairing.PairedBatchSampler`, so every micro-batch
  (and so every rank and accumulation step) holds its pairs: rows ``k`` and ``k + B/2``;
* ``log``: the loss's parts (``ntp_loss``, ``mixup_loss``) join each log line. They are summed as tensors every
  micro-step and read (one host sync) only when a line is logged; likewise the online dynamics' per-example losses.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer

from .constants import CONFIDENT, UNCONFIDENT
from .loss import GradAccumScale, LossContext, LossOptions, LossOutput, SFTLoss, grad_accum_scale, loss_for
from .pairing import PairedBatchSampler, epoch_callback
from .variants import Variant

log = logging.getLogger("sftmix")

__all__ = ["SFTMixTrainer", "ExampleDataset", "GradAccumScale", "grad_accum_scale", "gradient_accumulation"]


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
    """``transformers.Trainer`` whose loss is the variant's loss object (see module docstring).

    ``loss``: the :class:`sftmix.loss.SFTLoss` to train with (default: :func:`sftmix.loss.loss_for` the variant,
    with ``lean_loss``, ``lambda_per``, ``one_pass`` and ``ntp_kernel`` as its :class:`~sftmix.loss.LossOptions`).
    ``split_labels``: per training example, "confident" / "unconfident" (needed by confidence-based pairings).
    ``loss_recorder``: called as ``loss_recorder(idx, nll, step)`` with each example's mean response NLL from the
    training forward pass (online training dynamics), delivered in batches when the Trainer logs.
    """

    # compute_loss below scales for gradient accumulation itself (grad_accum_scale, as HF's causal-LM loss does).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        variant: Variant,
        split_labels: Sequence[str] | None = None,
        loss: SFTLoss | None = None,
        lean_loss: bool = True,
        lambda_per: str = "pair",
        one_pass: bool = True,
        ntp_kernel: str = "sftmix",
        loss_recorder: Any = None,
        **kwargs: Any,
    ):
        if loss is None:  # before the Trainer's set-up, so that a bad option is refused at once
            loss = loss_for(variant, LossOptions(lean=lean_loss, kernel=ntp_kernel, lambda_per=lambda_per,
                                                 one_pass=one_pass))
        super().__init__(*args, **kwargs)
        self.variant, self.loss_fn, self.loss_recorder = variant, loss, loss_recorder
        self._loss_bound = False  # the loss reads the model's logit transform on the first step
        if variant.needs_confidence and split_labels is None:
            raise ValueError(f"variant {variant.name!r} pairs by confidence: pass split_labels")
        n = len(self.train_dataset) if self.train_dataset is not None else 0
        labels = split_labels if split_labels is not None else [CONFIDENT] * n
        self.is_confident = torch.tensor([lab == CONFIDENT for lab in labels], dtype=torch.bool)
        self._confident_on: dict[torch.device, torch.Tensor] = {}  # is_confident copied to each batch device once
        self._loss_sums: dict[str, list] = {}  # log name -> [tensor sum, count] since the last log line
        self._pending_nll: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (idx, nll, step) for loss_recorder
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
        idx = inputs.get("idx")
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            output_hidden_states=True,
            logits_to_keep=1,  # the loss below uses the hidden states: skip HF's full-vocabulary logits
            use_cache=False,
        )
        unwrapped = self.accelerator.unwrap_model(model)
        if not self._loss_bound:  # the model's own post-head transform (Gemma soft-cap, Cohere/Granite scale)
            self.loss_fn.set_model_output(unwrapped)
            self._loss_bound = True
        ctx = LossContext(
            scale=grad_accum_scale(self.current_gradient_accumulation_steps, num_items_in_batch,
                                   self.accelerator.num_processes, self.args.average_tokens_across_devices),
            training=model.training, confident=None if idx is None else self._confident(idx),
            rng=self._lambda_generator, record_nll=self.loss_recorder is not None and idx is not None,
        )
        out = self.loss_fn(outputs.hidden_states[-1], inputs["labels"], unwrapped.get_output_embeddings(), ctx)
        self._gather(out, idx)
        return (out.loss, outputs) if return_outputs else out.loss

    # ---- logging: tensors every micro-step, floats only when a line is logged ------------------------------------
    def _confident(self, idx: torch.Tensor) -> torch.Tensor:
        flags = self._confident_on.get(idx.device)
        if flags is None:
            flags = self._confident_on[idx.device] = self.is_confident.to(idx.device)
        return flags[idx]

    def _gather(self, out: LossOutput, idx: torch.Tensor | None) -> None:
        for name, value in out.log_parts().items():
            acc = self._loss_sums.get(name)
            if acc is None:  # fp64 (where the device has it), so the sum equals Python's sum of the floats
                dt = torch.float32 if value.device.type == "mps" else torch.float64
                acc = self._loss_sums[name] = [torch.zeros((), dtype=dt, device=value.device), 0]
            acc[0] += value.detach()
            acc[1] += 1
        if out.example_nll is not None and self.loss_recorder is not None:
            self._pending_nll.append((idx, out.example_nll.detach(), self.state.global_step))

    def _flush_nll(self) -> None:
        for idx, nll, step in self._pending_nll:
            self.loss_recorder(idx.tolist(), nll.tolist(), step)
        self._pending_nll = []

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        # Add the mean NTP and Mixup terms since the last log line, so loss curves can show both.
        if "loss" in logs:
            for name, (total, count) in self._loss_sums.items():
                if count:
                    logs[name] = round(float(total) / count, 6)
            self._loss_sums = {}
        self._flush_nll()  # before on_train_end, which the Trainer calls after its last log
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

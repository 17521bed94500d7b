"""The trainers a step is measured through: ours (SFTMixTrainer), a plain transformers.Trainer (the model's own
loss), and TRL's SFTTrainer, all on the same rows with the same TrainingArguments."""
from __future__ import annotations

from dataclasses import fields

from sftmix.constants import CONFIDENT, UNCONFIDENT
from sftmix.presets import train_tiny_tokenizer
from sftmix.variants import get_variant

from .fabricate import collate


def training_args(cls, shape: dict, device: str, out: str, optim: str = "adamw_torch", **extra):
    """``cls`` (TrainingArguments or TRL's SFTConfig) for one measured step: same batch, optimizer, precision."""
    # No activation checkpointing for anyone (TRL's SFTConfig turns it on by default); the field was renamed
    # from gradient_checkpointing in transformers 5.
    names = {f.name for f in fields(cls)}
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    extra[ckpt] = False
    return cls(
        output_dir=out, per_device_train_batch_size=shape["batch"], learning_rate=1e-5, optim=optim,
        bf16=shape["dtype"] == "bfloat16" and device == "cuda", use_cpu=device == "cpu", report_to=[],
        logging_steps=10**9, save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, seed=0, **extra,
    )


def our_trainer(config: str, model, rows: list[dict], shape: dict, device: str, out: str, optim: str = "adamw_torch"):
    """SFTMixTrainer set up as ``config`` (ntp, sftmix, sftmix-2pass, sftmix-naive, ntp-liger, ntp-cce; a suffix
    -eager / -compile / -fast only changes the loss body, set by the worker), and the batch it steps on."""
    import torch  # heavy optional dependency
    from transformers import TrainingArguments  # heavy optional dependency

    from sftmix.trainer import ExampleDataset, SFTMixTrainer  # heavy: imports accelerate, datasets

    variant = get_variant("sftmix" if config.startswith("sftmix") else "ntp")
    n = len(rows)
    kernel = {"ntp-liger": "liger", "ntp-cce": "cce"}.get(config, "sftmix")
    trainer = SFTMixTrainer(
        model=model, args=training_args(TrainingArguments, shape, device, out, optim),
        train_dataset=ExampleDataset(rows), data_collator=collate, variant=variant,
        split_labels=[CONFIDENT if i < n // 2 else UNCONFIDENT for i in range(n)],
        lean_loss=config != "sftmix-naive", one_pass=config != "sftmix-2pass", ntp_kernel=kernel,
    )
    batch = collate(rows)
    batch["idx"] = torch.arange(n)  # rows k and k + B/2 are the pairs, as PairedBatchSampler makes them
    return trainer, batch


def hf_trainer(model, rows: list[dict], shape: dict, device: str, out: str):
    """A plain ``transformers.Trainer``: its loss is the model's own ``model(input_ids, labels=...)`` (full logits)."""
    from transformers import Trainer, TrainingArguments  # heavy optional dependency

    from sftmix.trainer import ExampleDataset  # heavy: imports accelerate, datasets

    trainer = Trainer(model=model, args=training_args(TrainingArguments, shape, device, out),
                      train_dataset=ExampleDataset(rows), data_collator=collate)
    return trainer, collate(rows)


def trl_trainer(model, rows: list[dict], shape: dict, device: str, out: str):
    """TRL's SFTTrainer on the same token rows (completion-only loss), and the batch its own collator makes."""
    from datasets import Dataset  # heavy optional dependency
    from trl import SFTConfig, SFTTrainer  # heavy optional dependency

    # Same token ids and loss positions as ours, given pre-tokenized with a completion mask.
    data = Dataset.from_dict({
        "input_ids": [r["input_ids"] for r in rows],
        "completion_mask": [[0] * r["prompt_len"] + [1] * (len(r["input_ids"]) - r["prompt_len"]) for r in rows],
    })
    args = training_args(
        SFTConfig, shape, device, out, completion_only_loss=True, max_length=shape["seq"], packing=False,
        padding_free=False,
    )
    # The tokenizer is never used on these pre-tokenized rows; SFTTrainer just insists on one.
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=train_tiny_tokenizer())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    return trainer, batch

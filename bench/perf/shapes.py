"""What `bench perf` measures and at which shapes: sections, configurations, model/batch shapes, GPU peaks."""
from __future__ import annotations

from typing import Any

from ..provenance import REPO

SECTIONS = ("step", "trl", "scaling", "dynamics", "scoring", "generation", "rerun", "view", "contamination",
            "contention")
# ntp / sftmix: the loss's default chunk body (CPU: the fused C++ body); -eager: the op-by-op body, for reference.
STEP_CONFIGS = ("ntp", "sftmix", "ntp-eager", "sftmix-eager", "sftmix-2pass", "sftmix-naive", "hf-loss")
# On CUDA (gpu_check.sh has < 8 min): no naive Mixup (the CPU table has it), plus Liger / cut-cross-entropy NTP,
# the fused chunk body through torch.compile (-compile), and that plus compiled decoder layers and fused AdamW (-fast).
CUDA_STEP_CONFIGS = ("ntp", "sftmix", "sftmix-2pass", "hf-loss", "ntp-liger", "ntp-cce", "ntp-compile",
                     "sftmix-compile", "ntp-fast", "sftmix-fast")
SCALING_CONFIGS = ("ntp", "sftmix", "hf-loss")
# SFTMIX_LCE_BACKEND of a configuration's worker, by its suffix (sftmix.loss.fused); none: the default (auto).
LOSS_BODY = {"-eager": "eager", "-compile": "compile", "-fast": "compile"}


def loss_body(config: str) -> str | None:
    """The loss chunk body a step configuration asks for (None: the default)."""
    return next((b for suffix, b in LOSS_BODY.items() if config.endswith(suffix)), None)
DEFAULT_VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

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
                gen_model="smol", gen_prompts=8, gen_tokens=64,
                contam_rows=52000, contam_items=8600, contam_words=150, contention_busy=3, contention_rounds=1),
    "cuda": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256, tie=True,
                 batch=8, seq=2048, warmup=2, steps=5, dtype="bfloat16", threads=None, rounds=1,
                 scaling=[], scaling_steps=3, score_vocabs=[128256],
                 score_examples=256, score_batch=16, score_repeats=3,
                 dyn_examples=512, dyn_checkpoints=5,
                 gen_model="smol", gen_prompts=32, gen_tokens=128,
                 contam_rows=52000, contam_items=8600, contam_words=150, contention_busy=0),
    "quick": dict(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64, vocab=256, tie=False,
                  batch=4, seq=32, warmup=1, steps=2, dtype="float32", threads=1, rounds=1,
                  scaling=[(256, 32, 4), (512, 64, 2)], scaling_steps=1, score_vocabs=[256, 512],
                  score_examples=8, score_batch=4, score_repeats=1,
                  dyn_examples=32, dyn_checkpoints=2,
                  gen_model="tiny-llama", gen_prompts=2, gen_tokens=4,
                  contam_rows=2000, contam_items=300, contam_words=150, contention_busy=1,
                  rerun_overrides={"run.limit": 2, "train.max_steps": 2,
                                   "dynamics.num_checkpoints": 1, "generation.max_new_tokens": 4},
                  view_items=40, view_variants=3, view_loads=1),
}
# Dense bf16 peak FLOP/s by GPU name, for MFU.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def model_flops_per_step(shape: dict) -> float:
    """Model FLOPs of one training step (PaLM's MFU convention: 6 x parameters x tokens, head on every token,
    plus attention's 12 x layers x hidden x seq per token), whatever positions a loss actually evaluates."""
    h, L, inter, v = shape["hidden"], shape["layers"], shape["intermediate"], shape["vocab"]
    kv = h * shape["kv_heads"] // shape["heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter
    params = L * per_layer + v * h  # the head (tied or not, it is one matmul per token); embeddings are lookups
    tokens = shape["batch"] * shape["seq"]
    return 6.0 * params * tokens + 12.0 * L * h * shape["seq"] * tokens


def vocab_label(vocab: int) -> str:
    """32000 -> "32k" (section labels)."""
    return f"{vocab // 1000}k" if vocab >= 1000 and vocab % 1000 == 0 else str(vocab)

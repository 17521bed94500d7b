"""Made-up models and data for the measurements: a seeded random-init Llama of a shape, random token rows whose
response part varies per row, and the training collator to batch them."""
from __future__ import annotations

from sftmix.constants import IGNORE_INDEX as IGNORE

PAD_ID = 0  # build_model's pad_token_id


def dtype_of(name: str):
    import torch  # heavy optional dependency

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def build_model(shape: dict, device: str):
    """Random-init Llama of the given shape (seeded), on ``device`` in the shape's dtype."""
    import torch  # heavy optional dependency
    from transformers import LlamaConfig, LlamaForCausalLM  # heavy optional dependency

    cfg = LlamaConfig(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
        intermediate_size=shape["intermediate"], max_position_embeddings=max(shape["seq"], 128),
        tie_word_embeddings=shape["tie"], bos_token_id=1, eos_token_id=2, pad_token_id=0, use_cache=False,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 1B model's random init on CPU alone takes ~30 s
        model = LlamaForCausalLM(cfg)
    return model.to(dtype=dtype_of(shape["dtype"]))


def random_examples(shape: dict, n: int, seed: int = 0) -> list[dict]:
    """``n`` rows of random token ids whose last 50-70% (varying per row) are the response (labels != -100)."""
    import torch  # heavy optional dependency

    g = torch.Generator().manual_seed(seed)
    seq, vocab = shape["seq"], shape["vocab"]
    ids = torch.randint(3, vocab, (n, seq), generator=g)
    frac = 0.5 + 0.2 * torch.rand(n, generator=g)
    rows = []
    for i in range(n):
        prompt_len = seq - max(2, int(round(float(frac[i]) * seq)))
        labels = ids[i].clone()
        labels[:prompt_len] = IGNORE
        rows.append({"input_ids": ids[i].tolist(), "labels": labels.tolist(), "prompt_len": prompt_len})
    return rows


def collate(rows: list[dict]) -> dict:
    """Right-padded ``input_ids`` / ``labels`` / ``attention_mask`` tensors: the trainer's own collator (pad id 0,
    label -100)."""
    from sftmix.data import PaddedCollator  # heavy: imports torch

    return PaddedCollator(PAD_ID)(rows)

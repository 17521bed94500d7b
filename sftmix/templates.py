"""Named chat templates (Jinja, Hugging Face ``chat_template`` format) for base models that ship none.

``alpaca`` is the Stanford Alpaca prompt; a system message replaces its preamble, and further turns repeat the
Instruction/Response blocks. Each response ends with ``eos_token`` so the model learns to stop. ``chatml`` is the
``<|im_start|>role\\n...<|im_end|>\\n`` format. Both honour ``add_generation_prompt``.
"""
from __future__ import annotations

from core.errors import UserError
from core.io import hash_obj
from core.registry import Registry

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)

ALPACA = (
    "{%- if bos_token %}{{ bos_token }}{% endif -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{ messages[0]['content'] }}{% set rest = messages[1:] %}"
    "{%- else -%}"
    "{{ '" + ALPACA_PREAMBLE + "' }}{% set rest = messages %}"
    "{%- endif -%}"
    "{{ '\\n\\n' }}"
    "{%- for m in rest -%}"
    "{%- if m['role'] == 'user' -%}"
    "{{ '### Instruction:\\n' + m['content'] + '\\n\\n' }}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{ '### Response:\\n' + m['content'] + (eos_token or '') + '\\n\\n' }}"
    "{%- else -%}"
    "{{ raise_exception('alpaca template: unsupported role ' + m['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '### Response:\\n' }}{% endif -%}"
)

CHATML = (
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif -%}"
)

TEMPLATES: Registry[str] = Registry("chat template")
TEMPLATES.add("alpaca", ALPACA, "Stanford Alpaca '### Instruction: / ### Response:' prompt, eos after each response")
TEMPLATES.add("chatml", CHATML, "ChatML: <|im_start|>role\\n...<|im_end|>")


def apply_template(tokenizer, name: str | None):
    """Give ``tokenizer`` the named chat template, or keep its own when ``name`` is None; returns the tokenizer.

    Raises UserError when no name is given and the tokenizer has no template (a base model).
    """
    if name:
        tokenizer.chat_template = TEMPLATES.get(name)
    elif not getattr(tokenizer, "chat_template", None):
        known = "|".join(TEMPLATES)
        raise UserError(
            f"tokenizer of {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; pass template={known}"
        )
    return tokenizer


def template_hash(tokenizer) -> str:
    """Short hash of what determines the rendered text: the template and the special tokens it may print."""
    return hash_obj({
        "chat_template": getattr(tokenizer, "chat_template", None),
        "bos_token": getattr(tokenizer, "bos_token", None),
        "eos_token": getattr(tokenizer, "eos_token", None),
    })

"""Training configuration, split by concern into small dataclasses (model, data, training, dynamics).

Overrides are flat ``key=value`` strings (nanoGPT style): each key must name exactly one field of one of the
dataclasses, or a variant option (alpha, mu, pairing, ...); an unknown key fails loudly with the nearest match.
Defaults are the paper's (AdamW, lr 2e-6, wd 0.1, cosine, warm-up 0.1, global batch 32, 3 epochs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from .errors import UserError
from .registry import nearest


@dataclass
class ModelArgs:
    model: str = "tiny-llama"  # preset name, HF hub id or local folder
    template: str | None = None  # named chat template for base models (alpaca, chatml); None = tokenizer's own
    dtype: str = "auto"  # auto = bf16 on a GPU that supports it, else float32
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


@dataclass
class DataArgs:
    data: str = "toy"  # "toy" = bundled toy set; hub id or local json/jsonl/parquet
    split: str = "train"
    max_length: int = 2048
    max_examples: int | None = None  # first N rows only (smoke runs)


@dataclass
class TrainArgs:
    learning_rate: float = 2e-6
    weight_decay: float = 0.1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    num_train_epochs: float = 3.0
    global_batch_size: int = 32
    per_device_batch_size: int = 8
    max_steps: int = -1
    seed: int = 42
    bf16: str = "auto"  # auto | true | false
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 0  # 0 = save a checkpoint at each epoch end only
    save_total_limit: int = 2
    report_to: str = "none"  # any HF Trainer integration: wandb, tensorboard, ...
    lean_loss: bool = True  # chunked linear cross-entropy (never materialises full logits)
    ntp_kernel: str = "sftmix"  # NTP-only variants: sftmix (ours) | auto | liger | cce (the last three on CUDA)
    mixup_reduction: str = "pair"  # pair: token mean per pair, then mean over pairs [INF]; token: global token mean
    lambda_per: str = "pair"  # pair: one λ per pair [INF]; batch: one λ per micro-batch


@dataclass
class DynamicsArgs:
    num_checkpoints: int = 5  # C, evenly spaced over the one-epoch reference run [INF]
    reference_epochs: float = 1.0
    score_batch_size: int = 16
    save_checkpoints: bool = False  # also keep the C reference checkpoints on disk
    online: bool = False  # confidence from the reference run's own training losses, no scoring passes [INF]


@dataclass
class TrainConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    dynamics: DynamicsArgs = field(default_factory=DynamicsArgs)

    def to_dict(self) -> dict:
        return asdict(self)

    def sections(self):
        return {"model": self.model, "data": self.data, "train": self.train, "dynamics": self.dynamics}


# Variant options (see sftmix.variants.Variant); reference_model names the dynamics model (weak-to-strong).
VARIANT_KEYS = ("alpha", "mu", "pairing", "reference_model", "ntp_weight")


def parse_value(text: str) -> Any:
    """YAML scalar parsing: 1e-5 -> float, true -> bool, null -> None, else the string."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str) and _looks_float(v):
        return float(v)
    return v


def _looks_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def split_overrides(items: list[str]) -> dict[str, Any]:
    """['lr=1', 'mu=0.5'] -> {'lr': 1, 'mu': 0.5}; a malformed item is a UserError."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item or item.startswith("="):
            raise UserError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_value(v)
    return out


def _coerce(f, value: Any) -> Any:
    """``value`` converted to field ``f``'s declared type, or a UserError naming the field."""
    target = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if value is None:
            if "None" not in target:
                raise ValueError("may not be null")
            return None
        if target.startswith("bool"):
            if isinstance(value, bool):
                return value
            raise ValueError("must be true or false")
        if target.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError("must be an integer")
            return int(float(value))
        if target.startswith("float"):
            return float(value)
        if target.startswith("list"):
            value = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
            if not isinstance(value, list):
                raise ValueError("expected a list or a comma-separated string")
            return value
        if target.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return value
        return value if not isinstance(value, (int, float)) or "str" not in target else str(value)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad value for {f.name}: {value!r} ({e})") from None


def apply_overrides(cfg, overrides: dict[str, Any], extra_keys: tuple[str, ...] = VARIANT_KEYS) -> dict[str, Any]:
    """Set ``overrides`` (``field`` or ``section.field``) on any config with ``sections()``, in place.

    Keys in ``extra_keys`` (the variant options) are not fields: they are returned for the caller. An unknown key
    is a UserError with the nearest match; a field name several sections share must be written ``section.field``.
    """
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for sname, sec in cfg.sections().items():
        for f in fields(sec):
            by_name.setdefault(f.name, []).append((sname, f))
    rest: dict[str, Any] = {}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if name in extra_keys and section in ("", "variant"):
            rest[name] = value
            continue
        cands = [(s, f) for s, f in by_name.get(name, []) if not section or s == section]
        if not cands:
            known = list(by_name) + list(extra_keys) + [f"{s}.{n}" for n, lst in by_name.items() for s, _ in lst]
            raise UserError(f"unknown option {key!r}{nearest(key, known)}")
        if len(cands) > 1:
            raise UserError(f"option {key!r} is ambiguous: write one of {', '.join(f'{s}.{name}' for s, _ in cands)}")
        sname, f = cands[0]
        setattr(cfg.sections()[sname], name, _coerce(f, value))
    return rest


def load_config_file(path: str) -> dict[str, Any]:
    """Flatten a YAML file of sections ({train: {learning_rate: ...}}) into override keys."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections")
    flat: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return flat

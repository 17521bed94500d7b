"""Training configuration, split by concern into small dataclasses (model, data, training, dynamics).

The sections are pydantic dataclasses: their annotations are the schema (types, bounds, choices; unknown keys are
errors), validated together on the whole resolved config, and a validation error becomes one line
(:func:`core.schema.one_line`). What of a config enters a hash is :mod:`sftmix.keyschema`'s business.

Overrides are flat ``key=value`` strings (nanoGPT style): each key must name exactly one field of one of the
dataclasses, or a variant option (alpha, mu, pairing, ...); an unknown key fails loudly with the nearest match.
Defaults are the paper's (AdamW, lr 2e-6, wd 0.1, cosine, warm-up 0.1, global batch 32, 3 epochs).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import asdict, field, fields
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from core.errors import UserError, first_line, os_error
from core.registry import nearest
from core.schema import SCHEMA, describe_type, field_types, one_line  # noqa: F401 (describe_type: API)
from .keyschema import comparable, hashed_section, removed_option, without_removed  # noqa: F401 (API)

log = logging.getLogger("sftmix")

# Field types are checked by pydantic (lax mode: "5" -> 5, 5 -> 5.0) on the whole resolved config; these aliases
# carry the constraints, so the schema is the annotations below.
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
# A random seed: what numpy, torch and `random` all accept (numpy's legacy seeding stops at 2**32 - 1).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Ratio = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def _bool_word(v: Any) -> Any:
    return str(v).lower() if isinstance(v, bool) else v


def comma_list(v: Any) -> Any:
    """``"a, b"`` -> ``["a", "b"]`` (lists on the command line); anything else unchanged for the schema to check."""
    return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v


BoolOrAuto = Annotated[Literal["auto", "true", "false"], BeforeValidator(_bool_word)]
Names = Annotated[list[str], BeforeValidator(comma_list)]
# A config section: a dataclass (asdict, replace, fields work as ever) whose annotations pydantic validates.
config_section = functools.partial(pydantic_dataclass, config=SCHEMA)


@config_section
class ModelArgs:
    model: str = "tiny-llama"  # preset name, HF hub id or local folder
    template: str | None = None  # named chat template for base models (alpaca, chatml); None = tokenizer's own
    # auto = bf16 on a GPU that supports it, else float32
    dtype: Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"] = "auto"
    lora: bool = False
    lora_r: PosInt = 16
    lora_alpha: PosInt = 32
    lora_dropout: Ratio = 0.05
    # partial fine-tuning: train only the top k decoder layers + the final norm (None = every weight, or LoRA's)
    trainable_layers: PosInt | None = None


@config_section
class DataArgs:
    data: str = "toy"  # "toy" = bundled toy set; hub id or local json/jsonl/parquet
    split: str = "train"
    max_length: PosInt = 2048
    max_examples: PosInt | None = None  # first N rows only (smoke runs)


@config_section
class TrainArgs:
    learning_rate: NonNegFloat = 2e-6  # 0 is allowed: the weights stay put (e.g. online vs offline dynamics checks)
    weight_decay: NonNegFloat = 0.1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: NonNegFloat = 0.1
    num_train_epochs: PosFloat = 3.0
    global_batch_size: PosInt = 32
    per_device_batch_size: PosInt = 8
    max_steps: int = -1
    seed: Seed = 42
    bf16: BoolOrAuto = "auto"  # auto | true | false
    gradient_checkpointing: bool = False
    logging_steps: PosInt = 10
    save_steps: NonNegInt = 0  # 0 = save a checkpoint at each epoch end only
    save_total_limit: PosInt | None = 2
    report_to: str = "none"  # any HF Trainer integration: wandb, tensorboard, ...
    lean_loss: bool = True  # chunked linear cross-entropy (never materialises full logits)
    ntp_kernel: Literal["sftmix", "auto", "liger", "cce"] = "sftmix"  # NTP-only variants; the last three on CUDA
    lambda_per: Literal["pair", "batch"] = "pair"  # pair: one λ per pair [INF]; batch: one λ per micro-batch


@config_section
class DynamicsArgs:
    num_checkpoints: PosInt = 5  # C, evenly spaced over the one-epoch reference run [INF]
    reference_epochs: PosFloat = 1.0
    score_batch_size: PosInt = 16  # batch size of the perplexity passes (name kept: it is in configs and hashes)
    save_checkpoints: bool = False  # also keep the C reference checkpoints on disk
    online: bool = False  # confidence from the reference run's own training losses, no perplexity passes [INF]
    # the median cut: over all examples (the paper), or within each example's source task / data set (an ablation)
    split: Literal["global", "per_source"] = "global"


@config_section
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
VARIANT_KEYS = ("alpha", "mu", "pairing", "reference_model", "ntp_weight", "irdro_tau", "confidence_split")


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


@functools.lru_cache(maxsize=None)
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def validated(cls, values: dict[str, Any]):
    """A config of class ``cls`` (sections with ``sections()``) from nested ``{section: {field: value}}``, validated
    as a whole; the first error is a one-line UserError (``bad value for train.seed: expected ...``)."""
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as e:
        sections = {name: type(sec) for name, sec in cls().sections().items()}

        def fields_at(loc: tuple) -> dict[str, Any] | None:
            if not loc:
                return dict.fromkeys(sections)
            return field_types(sections[loc[0]]) if len(loc) == 1 and loc[0] in sections else None

        raise one_line(e, values, unknown="unknown option", fields_at=fields_at, depth=2) from None


def validate_config(cfg) -> None:
    """Check every field of a config with ``sections()`` against its schema (the whole resolved config)."""
    validated(type(cfg), asdict(cfg))


def apply_overrides(cfg, overrides: dict[str, Any], extra_keys: tuple[str, ...] = VARIANT_KEYS) -> dict[str, Any]:
    """Set ``overrides`` (``field`` or ``section.field``) on any config with ``sections()``, in place.

    Keys in ``extra_keys`` (the variant options) are not fields: they are returned for the caller. An unknown key
    is a UserError with the nearest match; a field name several sections share must be written ``section.field``.
    """
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for sname, sec in cfg.sections().items():
        for f in fields(sec):
            by_name.setdefault(f.name, []).append((sname, f))
    values = asdict(cfg)
    rest: dict[str, Any] = {}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if name in extra_keys and section in ("", "variant"):
            rest[name] = value
            continue
        gone = removed_option(cfg.sections(), section, name)
        if gone:
            log.warning("option %r is deprecated and ignored (%s); remove it from the config", key, gone)
            continue
        cands = [(s, f) for s, f in by_name.get(name, []) if not section or s == section]
        if not cands:
            known = list(by_name) + list(extra_keys) + [f"{s}.{n}" for n, lst in by_name.items() for s, _ in lst]
            raise UserError(f"unknown option {key!r}{nearest(key, known)}")
        if len(cands) > 1:
            raise UserError(f"option {key!r} is ambiguous: write one of {', '.join(f'{s}.{name}' for s, _ in cands)}")
        sname, f = cands[0]
        values[sname][name] = value
    new = validated(type(cfg), values)
    for sname, sec in cfg.sections().items():  # in place: whoever holds a section sees the new values
        for f in fields(sec):
            setattr(sec, f.name, getattr(getattr(new, sname), f.name))
    return rest


def load_config_file(path: str) -> dict[str, Any]:
    """Flatten a YAML file of sections ({train: {learning_rate: ...}}) into override keys."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"config {path} is a directory: name a YAML file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"config {path} is not a text file (byte {e.start} is not UTF-8): name a YAML file") from None
    except OSError as e:
        raise os_error(e, "read config", path) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or first_line(e)
        raise UserError(f"{path}{line}: not valid YAML ({what}"
                        f"{f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections")
    flat: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return flat

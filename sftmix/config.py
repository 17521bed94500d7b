"""Training configuration, split by concern into small dataclasses (model, data, training, dynamics).

Overrides are flat ``key=value`` strings (nanoGPT style): each key must name exactly one field of one of the
dataclasses, or a variant option (alpha, mu, pairing, ...); an unknown key fails loudly with the nearest match.
Defaults are the paper's (AdamW, lr 2e-6, wd 0.1, cosine, warm-up 0.1, global batch 32, 3 epochs).
"""
from __future__ import annotations

import functools
import logging
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import UserError, first_line, os_error
from .keyschema import comparable, hashed_section, removed_option, without_removed  # noqa: F401 (API)
from .registry import nearest

log = logging.getLogger("sftmix")

# Field types are checked by pydantic (lax mode: "5" -> 5, 5 -> 5.0) when a value is set and again on the whole
# resolved config; these aliases carry the constraints, so the schema is the annotations below.
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
# Values from YAML or the command line may be numbers where a name is meant (seed-like names, "2024"): accept them.
_SCHEMA = ConfigDict(coerce_numbers_to_str=True)


@dataclass
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


@dataclass
class DataArgs:
    data: str = "toy"  # "toy" = bundled toy set; hub id or local json/jsonl/parquet
    split: str = "train"
    max_length: PosInt = 2048
    max_examples: PosInt | None = None  # first N rows only (smoke runs)


@dataclass
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


@dataclass
class DynamicsArgs:
    num_checkpoints: PosInt = 5  # C, evenly spaced over the one-epoch reference run [INF]
    reference_epochs: PosFloat = 1.0
    score_batch_size: PosInt = 16  # batch size of the perplexity passes (name kept: it is in configs and hashes)
    save_checkpoints: bool = False  # also keep the C reference checkpoints on disk
    online: bool = False  # confidence from the reference run's own training losses, no perplexity passes [INF]
    # the median cut: over all examples (the paper), or within each example's source task / data set (an ablation)
    split: Literal["global", "per_source"] = "global"


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
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp, config=_SCHEMA)


def _hints(cls) -> dict[str, Any]:
    import sys

    return typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]), include_extras=True)


def describe_type(tp: Any) -> str:
    """A reader's name for a schema type: ``integer >= 1 or null``, ``one of 'auto', 'true', 'false'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:  # Field(ge=1) keeps its bounds as annotated_types constraints in .metadata
        bounds = [f"{op} {getattr(c, attr)}" for m in args[1:] for c in getattr(m, "metadata", [])
                  for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(c, attr)]
        return " ".join([describe_type(args[0]), " and ".join(bounds)]).strip()
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {describe_type(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return {int: "integer", float: "number", str: "string", bool: "true/false", type(None): "null",
            list: "a list", dict: "a mapping", Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_error(path: str, tp: Any, value: Any, err: ValidationError) -> UserError:
    """One line: the field path, what the schema expects, what pydantic objected to, the value given."""
    first = err.errors()[0]
    where = ".".join(str(x) for x in (path, *first["loc"]) if x != "")
    return UserError(f"bad value for {where}: expected {describe_type(tp)} ({first['msg'][0].lower()}"
                     f"{first['msg'][1:]}), got {_short(value)}")


def check_field(section_cls, section: str, name: str, value: Any) -> Any:
    """``value`` validated (and converted) against field ``section.name``'s schema type, or a UserError."""
    tp = _hints(section_cls)[name]
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as e:
        raise schema_error(f"{section}.{name}", tp, value, e) from None


def validate_config(cfg) -> None:
    """Check every field of a config with ``sections()`` against its schema (the whole resolved config)."""
    for sname, sec in cfg.sections().items():
        for f in fields(sec):
            check_field(type(sec), sname, f.name, getattr(sec, f.name))


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
        sec = cfg.sections()[sname]
        setattr(sec, name, check_field(type(sec), sname, name, value))
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

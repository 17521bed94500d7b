"""Arguments shared by `bench train` and `bench dynamics`."""
from __future__ import annotations

import argparse
import logging

from bench.validate import check_model, check_out
from sftmix.config import TrainConfig, apply_overrides, load_config_file, split_overrides


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="preset (tiny-llama, smol), HF hub id or local folder")
    parser.add_argument("--data", help="training data: 'toy', a hub id, or a local json/jsonl/parquet file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--config", help="YAML file of sections (model/data/train/dynamics) with defaults")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. learning_rate=1e-5 mu=0.5")


def build_config(args) -> tuple[TrainConfig, dict]:
    """Config from defaults < --config file < --model/--data < key=value; returns it and the variant options."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig()
    merged = load_config_file(args.config) if args.config else {}
    if args.model:
        merged["model.model"] = args.model
    if args.data:
        merged["data.data"] = args.data
    merged.update(split_overrides(list(args.overrides or []) + list(getattr(args, "extra", None) or [])))
    variant_opts = apply_overrides(cfg, merged)
    check_out(args.out)  # a file, an empty or non-UTF-8 name: before anything is loaded
    check_model(cfg.model.model, "--model")  # a missing local folder or malformed hub id, before any loading
    return cfg, variant_opts

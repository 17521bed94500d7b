"""Stage keys: a hash of everything that determines a stage's output. A finished stage whose key is unchanged is
skipped; one whose key changed is redone. Any change here re-runs finished runs, so tests pin the keys.

Each key takes its parent's key as an argument (computed once, by :func:`bench.pipeline.graph.build_stages`), so a
stage's key covers everything upstream of it without recomputing the chain."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from sftmix.sources import data_identity
from core.io import hash_obj
from sftmix.keyschema import (GENERATE_ADDED, hashed_section, score_extras, task_key, variant_stage_key,
                              without_added)
from sftmix.variants import Variant

from ..contamination import Settings, item_fields
from .context import RunContext

if TYPE_CHECKING:
    from ..tasks import Task

def _base(ctx: RunContext, seed: int | None = None) -> dict:
    c = ctx.cfg
    return {"model": hashed_section("model", c.model), "data": hashed_section("data", c.data),
            "train_data": ctx.train_data,
            "train": hashed_section("train", ctx.train_config(seed).train)}


def dyn_key(ctx: RunContext, ref: str | None, seed: int | None = None) -> str:
    """Key of the training-dynamics (reference) run for reference model ``ref`` at ``seed``."""
    return hash_obj({"stage": "dynamics", **_base(ctx, seed), "dynamics": hashed_section("dynamics", ctx.cfg.dynamics),
                     "reference": ref})


def train_key(ctx: RunContext, v: Variant, dyn: str | None) -> str:
    """Key of training ``v``; ``dyn`` is the key of the dynamics run it takes confidences from (None: it needs none)."""
    return hash_obj({"stage": "train", **_base(ctx, ctx.seed_arg(v)), "variant": variant_stage_key(v.to_dict()),
                     "dynamics": dyn})


def gen_key(ctx: RunContext, train: str, task: Task) -> str:
    """Key of a variant's generations for ``task``; ``train`` is the key of the variant's training."""
    cfg = ctx.cfg
    return hash_obj({"stage": "generate", "train": train, "task": task.name,
                     "task_def": task_key(asdict(task)),
                     "generation": hashed_section("generation", cfg.generation), "limit": cfg.run.limit,
                     **without_added({"limit_mode": cfg.run.limit_mode}, GENERATE_ADDED),
                     "local_data": cfg.run.data_paths.get(task.name), "referenced_only": ctx.referenced_only(task)})


def score_key(ctx: RunContext, generate: str, task: Task, versus: str | None = None) -> str:
    """Key of scoring a variant's generations (``generate``: their key) on ``task``: the scorer's version, and for
    judged tasks the judge. Pairwise scorers (``judge.mode: pairwise``) also read the generations of the NTP variant
    compared with: ``versus`` is their key (None for NTP's own row)."""
    scorer = ctx.scorer(task)
    judged = scorer.judged
    return hash_obj({"stage": "score", "generate": generate, "scorer": [scorer.name, scorer.version],
                     "judge": ctx.judge_identity() if judged else None,
                     "judge_prompts": ctx.judge_fingerprint(task) if judged else None,
                     "repeats": ctx.cfg.judge.repeats if judged else 1, **score_extras(scorer.pairwise, versus=versus)})


def contamination_key(ctx: RunContext) -> str:
    """Key of the contamination check: the training data's identity (file hash or hub id; split, row limit), each
    task's data identity (its definition, the hash of a local data file, what selects its items) and the fields it
    compares, and the check's settings. Loads no data (the graph is built without it)."""
    cfg = ctx.cfg
    tasks = {}
    for t in ctx.tasks:
        local = cfg.run.data_paths.get(t.name) or t.data.get("local")
        tasks[t.name] = {"task_def": task_key(asdict(t)),
                         "local_data": data_identity(str(local)) if local else None,
                         "referenced_only": ctx.referenced_only(t), "fields": list(item_fields(t))}
    return hash_obj({"stage": "contamination", "train_data": ctx.train_data, "split": cfg.data.split,
                     "max_examples": cfg.data.max_examples, "limit": cfg.run.limit, "limit_mode": cfg.run.limit_mode,
                     "tasks": tasks, "settings": Settings.of(cfg.contamination).key()})

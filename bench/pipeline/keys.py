"""Stage keys: a hash of everything that determines a stage's output. A finished stage whose key is unchanged is
skipped; one whose key changed is redone. Any change here re-runs finished runs, so tests pin the keys.

Each key takes its parent's key as an argument (computed once, by :func:`bench.pipeline.graph.build_stages`), so a
stage's key covers everything upstream of it without recomputing the chain."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from sftmix.config import hashed_section
from sftmix.io import hash_obj
from sftmix.variants import Variant

from ..config import model_key
from .context import RunContext

if TYPE_CHECKING:
    from ..tasks import Task

# Task fields the generation key leaves out, as it always has: data_hash/source/path/layout (the data's hash and
# whereabouts); parametric/param: the name says it all (bigbench:navigate), so tasks from before them keep their keys.
_TASK_FIELDS_NOT_KEYED = ("data_hash", "source", "path", "layout", "parametric", "param")


def _base(ctx: RunContext, seed: int | None = None) -> dict:
    c = ctx.cfg
    return {"model": model_key(c.model), "data": c.data.__dict__, "train_data": ctx.train_data,
            "train": hashed_section("train", ctx.train_config(seed).train)}


def dyn_key(ctx: RunContext, ref: str | None, seed: int | None = None) -> str:
    """Key of the training-dynamics (reference) run for reference model ``ref`` at ``seed``."""
    return hash_obj({"stage": "dynamics", **_base(ctx, seed), "dynamics": ctx.cfg.dynamics.__dict__, "reference": ref})


def train_key(ctx: RunContext, v: Variant, dyn: str | None) -> str:
    """Key of training ``v``; ``dyn`` is the key of the dynamics run it takes confidences from (None: it needs none)."""
    return hash_obj({"stage": "train", **_base(ctx, ctx.seed_arg(v)), "variant": {**v.to_dict(), "description": None},
                     "dynamics": dyn})


def gen_key(ctx: RunContext, train: str, task: Task) -> str:
    """Key of a variant's generations for ``task``; ``train`` is the key of the variant's training."""
    cfg = ctx.cfg
    return hash_obj({"stage": "generate", "train": train, "task": task.name,
                     "task_def": {k: val for k, val in asdict(task).items() if k not in _TASK_FIELDS_NOT_KEYED},
                     "generation": cfg.generation.__dict__, "limit": cfg.run.limit,
                     # only when not the default, so runs from before limit_mode keep their keys
                     **({"limit_mode": cfg.run.limit_mode} if cfg.run.limit_mode != "first" else {}),
                     "local_data": cfg.run.data_paths.get(task.name), "referenced_only": ctx.referenced_only(task)})


def score_key(ctx: RunContext, generate: str, task: Task) -> str:
    """Key of scoring a variant's generations (``generate``: their key) on ``task``: the scorer's version, and for
    judged tasks the judge."""
    scorer = ctx.scorer(task)
    judged = scorer.judged
    return hash_obj({"stage": "score", "generate": generate, "scorer": [scorer.name, scorer.version],
                     "judge": ctx.judge_identity() if judged else None,
                     "judge_prompts": ctx.judge_fingerprint(task) if judged else None,
                     "repeats": ctx.cfg.judge.repeats if judged else 1})

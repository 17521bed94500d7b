"""Which variants (at which seeds) and tasks a run has, from its config."""
from __future__ import annotations

from dataclasses import replace

from core.errors import UserError
from sftmix.variants import Variant, get_variant

from ..config import RunConfig
from ..rundir import SEED_SEP  # run.seeds: variant "sftmix" at seed 1 is "sftmix@s1"
from ..tasks import load_task


def run_variants(cfg: RunConfig) -> list[tuple[Variant, str]]:
    """The run's variants with their registry base: names, or ``{name, base, **overrides}`` for sweeps."""
    out, seen = [], set()
    for spec in cfg.run.variants:
        if isinstance(spec, str):
            v, base = get_variant(spec), spec
        elif isinstance(spec, dict) and "name" in spec:
            base = spec.get("base", spec["name"])
            opts = {k: val for k, val in spec.items() if k not in ("name", "base")}
            v = replace(get_variant(base, **opts), name=spec["name"])
        else:
            raise UserError(f"bad variant entry {spec!r}: a name or a mapping with 'name' (and 'base', options)")
        if v.name in seen:
            raise UserError(f"variant {v.name!r} listed twice")
        seen.add(v.name)
        out.append((v, base))
    if not out:
        raise UserError("no variants to run")
    return out


def per_seed(pairs: list[tuple[Variant, str]], seeds: list[int]) -> tuple[list[tuple[Variant, str]], dict[str, int]]:
    """Every variant once per seed, named ``<variant>@s<seed>`` (its folders and stages), seed by seed; with the
    map from those names to their training seed."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"run.seeds must list distinct seeds, got {seeds}")
    out, seed_of = [], {}
    for seed in seeds:
        for v, base in pairs:
            name = f"{v.name}{SEED_SEP}{seed}"
            seed_of[name] = seed
            out.append((replace(v, name=name), base))
    return out, seed_of


def run_tasks(cfg: RunConfig) -> list:
    """The run's tasks, loaded (definitions only: items load on demand)."""
    if not cfg.run.tasks:
        raise UserError("no tasks to run: run.tasks is empty")
    twice = next((t for i, t in enumerate(cfg.run.tasks) if t in cfg.run.tasks[:i]), None)
    if twice is not None:
        raise UserError(f"task {twice!r} listed twice")
    return [load_task(name) for name in cfg.run.tasks]

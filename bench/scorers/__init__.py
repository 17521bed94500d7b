"""Scorers: one per benchmark protocol, found by the name a task YAML gives in ``scorer:``.

- ``mt_bench`` — FastChat llm_judge single-answer grading (:mod:`.mt_bench`);
- ``reference`` — the same forms for open-ended tasks whose every item has a reference answer (toy tasks);
- ``alpaca_eval`` — AlpacaEval 2.0's weighted win rate (:mod:`.alpaca_eval`);
- ``mcq`` — lm-evaluation-harness multiple choice: acc, acc_norm, acc_bytes (:mod:`.mcq`);
- ``exact`` — exact match of a generated short answer (:mod:`.exact`).

Add one: a module in this package that subclasses :class:`~bench.scorers.base.Scorer` and calls
``SCORERS.add(name, instance)`` (every module here is imported on first lookup), or your own code before the run.
"""
from __future__ import annotations

import importlib
import pkgutil

from core.registry import Registry

from .base import Metric, Scorer, ScoreResult

# Other packages add scorers through the entry-point group sftmix_bench.scorers (a Scorer class or instance, or a
# module that registers its own; README "Plugins"); they load after the built-in ones, on the first lookup.
SCORERS: Registry[Scorer] = Registry("scorer", plugins="sftmix_bench.scorers",
                                     plugin_item=lambda obj: obj() if isinstance(obj, type) else obj)


def get_scorer(name: str) -> Scorer:
    """The registered scorer called ``name`` (a UserError naming the known ones otherwise)."""
    _load_builtin()
    return SCORERS.get(name)


def _load_builtin() -> None:
    """Import every module of this package once: each registers its scorer(s) on import."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")


__all__ = ["Metric", "SCORERS", "ScoreResult", "Scorer", "get_scorer"]

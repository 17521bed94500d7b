"""Differences from the baseline: each row's Δ against the NTP row of the same training set × model, with a
paired-bootstrap 95 % interval over example ids (:mod:`bench.bootstrap`), two-level over seeds for ``run.seeds``.

Row order comes from the runs themselves: the baseline first, then the variants in the order the run's config
lists them; runs that recorded no order put SFTMix next and the rest in file order. It never depends on today's
variant registry, so an old run's table does not change when the registry does.
"""
from __future__ import annotations

import warnings
from typing import Sequence

from ..bootstrap import paired_bootstrap, paired_bootstrap_macro, two_level_bootstrap
from .model import Cell
from .results import TaskResult, item_repeats, item_values, metric_value, resolve

BASELINE = "ntp"
METHOD_NAMES = {"ntp": "NTP", "sftmix": "SFTMix"}  # also the fallback row order (after the baseline)


class Comparison:
    """Shared state of one table build: the results, the bootstrap settings, and the notes collected."""

    def __init__(self, results: list[TaskResult], n_resamples: int, seed: int):
        self.loaded = results  # with what the runs lack (bench.tables.results.Results), for the notes
        self.results = sorted(results, key=lambda s: s.task_rank)  # stable: otherwise file order
        self.n_resamples, self.seed = n_resamples, seed
        self.by_system: dict[tuple, dict[str, TaskResult]] = {}
        self.variant_rank: dict[str, int] = {}
        for s in results:
            self.by_system.setdefault(s.system, {})[s.task] = s
            self.variant_rank[s.variant] = min(self.variant_rank.get(s.variant, 1 << 30), s.variant_rank)
        self.partial: list[str] = []
        self.no_ci: set[str] = set()
        self.n_seeds: set[int] = set()  # seed counts behind two-level intervals
        self.repeats_resampled: set[str] = set()  # "task (combine)" whose CIs resampled judge repeats too

    def systems(self) -> list[tuple]:
        """Systems grouped by (train_data, model) in order of appearance, the baseline first in each group, then
        the run configs' variant order (see the module docstring)."""
        groups: dict[tuple, list[tuple]] = {}
        for sys in self.by_system:
            groups.setdefault((sys[1], sys[2]), []).append(sys)
        fallback = list(METHOD_NAMES)

        def key(sys):
            name = sys[3]
            return (name != BASELINE, self.variant_rank.get(name, 1 << 30),
                    fallback.index(name) if name in fallback else len(fallback))

        return [s for g in groups.values() for s in sorted(g, key=key)]

    def baseline(self, sys: tuple) -> tuple | None:
        if sys[3] == BASELINE:
            return None
        same_run = (sys[0], sys[1], sys[2], BASELINE)
        if same_run in self.by_system:
            return same_run
        return next((o for o in self.by_system if o[1:] == (sys[1], sys[2], BASELINE)), None)

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(s.task for s in self.results))

    def cell(self, sys: tuple, task: str, metric: str, label: str) -> Cell | None:
        s = self.by_system[sys].get(task)
        if s is None:
            return None
        key = resolve(s, metric)
        cell = Cell(value=metric_value(s, key))
        base_sys = self.baseline(sys)
        b = self.by_system.get(base_sys, {}).get(task) if base_sys else None
        if b is None or cell.value is None or b.judge != s.judge:  # another judge's numbers: no difference
            return cell
        if s.seeds and b.seeds:
            return self._seeded_cell(cell, s, b, key, metric, label, sys)
        a_items, b_items = item_values(b, resolve(b, metric)), item_values(s, key)
        if a_items and b_items:
            combine = s.repeat_combine or b.repeat_combine or "median"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # partial overlap becomes a note below the table
                r = paired_bootstrap(a_items, b_items, self.n_resamples, self.seed,
                                     a_repeats=item_repeats(b, resolve(b, metric)), b_repeats=item_repeats(s, key),
                                     combine=combine)
            if r["repeats_resampled"]:
                self.repeats_resampled.add(f"{task}: {combine} of each item's repeats")
            if not r["complete"]:
                self.partial.append(f"{sys[3]} vs {BASELINE} on {task} ({label}): Δ and CI over the {r['n']} items "
                                    f"both have ({r['n_a']} {BASELINE}, {r['n_b']} {sys[3]})")
            cell.delta, cell.lo, cell.hi, cell.n = r["delta"], r["lo"], r["hi"], r["n"]
        else:
            base_value = metric_value(b, resolve(b, metric))
            if base_value is not None:
                cell.delta = cell.value - base_value
                self.no_ci.add(label)
        return cell

    def _seeded_cell(self, cell: Cell, s: TaskResult, b: TaskResult, key: str, metric: str, label: str,
                     sys: tuple) -> Cell:
        """Mean over the seeds both have; Δ with a two-level paired bootstrap CI (seeds, then items) and per seed."""
        shared = [k for k in s.seeds if k in b.seeds]
        pairs = {k: (item_values(b.seeds[k], resolve(b.seeds[k], metric)), item_values(s.seeds[k], key))
                 for k in shared}
        if shared and all(a and v for a, v in pairs.values()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = two_level_bootstrap(pairs, self.n_resamples, self.seed)
            if not r["complete"] or len(shared) != len(s.seeds) or len(shared) != len(b.seeds):
                self.partial.append(f"{sys[3]} vs {BASELINE} on {s.task} ({label}): seeds {shared} and the "
                                    "items both have")
            cell.delta, cell.lo, cell.hi, cell.n, cell.per_seed = r["delta"], r["lo"], r["hi"], r["n"], r["per_seed"]
            self.n_seeds.add(len(shared))
        else:
            per_seed = {k: metric_value(s.seeds[k], key) - metric_value(b.seeds[k], resolve(b.seeds[k], metric))
                        for k in shared}
            if per_seed:
                cell.delta, cell.per_seed = sum(per_seed.values()) / len(per_seed), per_seed
                self.no_ci.add(label)
        return cell

    def macro_cell(self, sys: tuple, tasks: Sequence[str], label: str) -> Cell | None:
        """Unweighted mean over ``tasks`` of the shown metric; its delta bootstraps each task independently."""
        results = [self.by_system[sys].get(t) for t in tasks]
        if any(s is None for s in results):
            return None
        values = [metric_value(s, resolve(s, "@shown")) for s in results]
        if any(v is None for v in values):
            return None
        cell = Cell(value=sum(values) / len(values))
        base_sys = self.baseline(sys)
        base = [self.by_system.get(base_sys, {}).get(t) for t in tasks] if base_sys else [None]
        if any(b is None or b.judge != s.judge for b, s in zip(base, results)):
            return cell
        pairs = [(item_values(b, resolve(b, "@shown")), item_values(s, resolve(s, "@shown")))
                 for b, s in zip(base, results)]
        if all(a and b for a, b in pairs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = paired_bootstrap_macro(pairs, self.n_resamples, self.seed)
            cell.delta, cell.lo, cell.hi, cell.n = r["delta"], r["lo"], r["hi"], r["n"]
        else:
            cell.delta = cell.value - sum(metric_value(b, resolve(b, "@shown")) for b in base) / len(base)
            self.no_ci.add(label)
        return cell

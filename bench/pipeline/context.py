"""What every stage of one run shares: the config, its variants and tasks, where things go, and the things loaded
once per run (items, judge configs, the cache, the judge, counters)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.io import hash_obj
from sftmix.sources import data_identity
from sftmix.variants import Variant, reference_stands_in

from ..cache import Cache
from ..config import RunConfig
from ..evaluate import judge_config, task_scorer
from ..judge.reference import NAME
from ..provenance import git_commit
from ..rundir import RunDir, split_seed
from ..tasks import limit_rows
from .selection import SEED_SEP, per_seed, run_tasks, run_variants

PAIRWISE_BASELINE = "ntp"  # judge.mode: pairwise compares every other variant with this one

if TYPE_CHECKING:
    from ..judge import JudgeConfig
    from ..scorers.base import Scorer
    from ..tasks import Task


class RunContext:
    """One run's config resolved into variants (per seed) and tasks, plus what its stages load once and share."""

    def __init__(self, cfg: RunConfig, out: str | Path, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.rd = RunDir(self.out)  # every path of the results directory (bench.rundir)
        pairs = run_variants(cfg)
        self.seed_of: dict[str, int] = {}  # variant-at-seed name -> its training seed (run.seeds only)
        if cfg.run.seeds is not None:
            pairs, self.seed_of = per_seed(pairs, cfg.run.seeds)
        self.variants: list[Variant] = [v for v, _ in pairs]
        self.bases: dict[str, str] = {v.name: base for v, base in pairs}
        self.tasks = run_tasks(cfg)
        self.train_data = data_identity(cfg.data.data)
        self.counters: dict[str, int] = {"model_requests": 0, "judge_requests": 0}
        # Loaded on first use and kept for the run (the stage bodies set the last three).
        self._cache = None
        self._items: dict[str, list[dict]] = {}
        self._judge_configs: dict[str, Any] = {}
        self._git: dict | None = None
        self.backend_of: tuple[str, Any] | None = None  # (variant, backend): one model in memory at a time
        self.judge_obj = None
        self.ledger = None
        # A stage run by a worker of a cluster executor writes its own cache and judge log (bench.pipeline.worker):
        # the run's cache.sqlite and judge_log.jsonl have one writer, the coordinator, which merges them in.
        self.cache_path: Path = self.rd.cache
        self.judge_log: Path = self.rd.judge_log

    # -- lookups by name (a stage names its variant and task) ----------------------------------------------------
    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)

    # -- seeds --------------------------------------------------------------------------------------------------
    def train_config(self, seed: int | None = None):
        """The sftmix TrainConfig of one seed (``None``: the config's own ``train.seed``)."""
        tc = self.cfg.train_config()
        return tc if seed is None else replace(tc, train=replace(tc.train, seed=seed))

    def seed(self, v: Variant) -> int:
        """The training seed of ``v`` (its run.seeds seed, else ``train.seed``)."""
        return self.seed_of.get(v.name, self.cfg.train.seed)

    def seed_arg(self, v: Variant) -> int | None:
        """``v``'s run.seeds seed, ``None`` without run.seeds (keys and paths then carry no seed)."""
        return self.seed_of.get(v.name)

    def reference_stands_in(self, v: Variant) -> bool:
        """Whether the run's own reference run (target model, ``v``'s seed) trains exactly ``v``
        (:func:`sftmix.variants.reference_stands_in`): then it keeps its model and ``v`` adopts it, one training
        fewer per seed. Single-process runs only."""
        seed = self.seed_arg(v)
        has_reference = any(w.needs_confidence and w.reference_model in (None, self.cfg.model.model)
                            and self.seed_arg(w) == seed for w in self.variants)
        return (has_reference and self.cfg.run.num_gpus <= 1
                and reference_stands_in(v, self.train_config(seed)))

    # -- paths --------------------------------------------------------------------------------------------------
    def dyn_dir(self, ref: str | None, seed: int | None = None) -> Path:
        return self.rd.dynamics_dir(None if ref in (None, self.cfg.model.model) else hash_obj(ref, 8), seed)

    def variant_dir(self, v: Variant) -> Path:
        return self.rd.variant_dir(v.name)

    def model_dir(self, v: Variant) -> Path:
        return self.rd.model_dir(v.name)

    def gen_path(self, v: Variant, task: Task) -> Path:
        return self.rd.generations(v.name, task.name)

    def score_path(self, v: Variant, task: Task) -> Path:
        return self.rd.summary(v.name, task.name)

    def judge_log_path(self) -> Path:
        return self.judge_log

    # -- scorers and judges -------------------------------------------------------------------------------------
    def scorer(self, task: Task) -> Scorer:
        """The task's scorer in this run (its pairwise form under ``judge.mode: pairwise``)."""
        return task_scorer(task, self.cfg.judge)

    def pairwise_baseline(self, v: Variant) -> Variant | None:
        """``judge.mode: pairwise``: the NTP variant (same seed) that ``v`` is compared with; None for NTP itself."""
        name, seed = split_seed(v.name)
        if name == PAIRWISE_BASELINE:
            return None
        want = PAIRWISE_BASELINE if seed is None else f"{PAIRWISE_BASELINE}{SEED_SEP}{seed}"
        for other in self.variants:
            if other.name == want:
                return other
        raise UserError(f"judge.mode: pairwise compares every variant with {PAIRWISE_BASELINE}: add "
                        f"{PAIRWISE_BASELINE} to run.variants")

    def judge_identity(self) -> dict:
        """The judge this run uses: ``{"kind": "llm" | "local" | "reference", "model": ..., ...}``."""
        j = self.cfg.judge
        if j.model:
            return {"kind": "llm", "model": j.model, "base_url": j.base_url}
        if j.local:
            return {"kind": "local", "model": j.local}
        return {"kind": "reference", "model": NAME}

    def judge_config(self, task: Task) -> JudgeConfig | None:
        """The judge config the task's scorer uses in this run (None if unjudged), loaded once per run."""
        if task.name not in self._judge_configs:
            self._judge_configs[task.name] = judge_config(task, self.cfg.judge)
        return self._judge_configs[task.name]

    def judge_fingerprint(self, task: Task) -> str | None:
        """Content hash of the judge config (prompt texts, parser, settings) the task's scorer uses in this run."""
        config = self.judge_config(task)
        return config.fingerprint() if config is not None else None

    def protocols(self) -> dict[str, str]:
        """Task -> the peer protocol its numbers follow in this run (judged ones: with their prompt sources)."""
        return {t.name: self.scorer(t).protocol(self.judge_config(t)) for t in self.tasks}

    def referenced_only(self, task: Task) -> bool:
        """MT-Bench-style tasks under the reference rubric keep only the items it can rate (those with references)."""
        return self.scorer(task).judged and self.judge_identity()["kind"] == "reference"

    # -- items --------------------------------------------------------------------------------------------------
    def items(self, task: Task) -> list[dict]:
        """The task's items in this run (limit, local data and the judge's selection applied), loaded once."""
        if task.name not in self._items:
            local = self.cfg.run.data_paths.get(task.name)
            limit = self.cfg.run.limit
            scorer = self.scorer(task)
            if scorer.judged:
                # The scorer keeps what this kind of judge can rate (the reference rubric: referenced items only).
                items = scorer.select_items(task, task.load_records(local=local), self.judge_identity()["kind"])
                items = limit_rows(items, limit or None, self.cfg.run.limit_mode)
            else:
                items = task.load_records(limit=limit, local=local, limit_mode=self.cfg.run.limit_mode)
            self._items[task.name] = items
        return self._items[task.name]

    def loaded_items(self, task: Task) -> tuple[list[dict] | None, int]:
        """(items, count); offline hub tasks without data give (None, the task's declared n_items)."""
        try:
            items = self.items(task)
            return items, len(items)
        except UserError:
            n = task.n_items or 0
            return None, min(n, self.cfg.run.limit) if self.cfg.run.limit else n

    # -- shared resources ---------------------------------------------------------------------------------------
    @property
    def cache(self):
        """The run's content-addressed cache of generations and judgments (``cache.sqlite``)."""
        if self._cache is None:
            self._cache = Cache(self.cache_path, wal=self.cache_path == self.rd.cache)
        return self._cache

    def git(self) -> dict:
        """This checkout's commit, looked up once per run."""
        if self._git is None:
            self._git = git_commit()
        return self._git

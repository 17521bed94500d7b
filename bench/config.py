"""`bench run` configuration: the training sections of :mod:`sftmix.config` plus run, generation and judge.

A config file is YAML with one mapping per section; ``key=value`` overrides on the command line name a field
(``limit=5``) or ``section.field`` (``judge.repeats=3``) and fail loudly on unknown keys, suggesting the nearest.
The hash of the resolved config keys the results directory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BeforeValidator

from sftmix.config import (DataArgs, DynamicsArgs, ModelArgs, Names, NonNegFloat, NonNegInt, PosFloat,
                           PosInt, TrainArgs, apply_overrides, comma_list, hashed_section, load_config_file,
                           validate_config)
from sftmix.errors import UserError
from sftmix.io import hash_obj
from sftmix.registry import nearest


def _seed_list(v: Any) -> Any:
    """``seeds=3`` (one seed) or ``seeds=0,1,2`` on the command line; lists from YAML unchanged."""
    return [v] if isinstance(v, int) and not isinstance(v, bool) else comma_list(v)


@dataclass
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
    seeds: Annotated[list[NonNegInt], BeforeValidator(_seed_list)] | None = None
    threads: PosInt | None = None  # torch's CPU threads; None: from the free cores (bench.threads), `--threads`


@dataclass
class GenerationArgs:
    backend: Literal["hf", "vllm"] = "hf"  # hf | vllm
    max_new_tokens: PosInt | None = None  # None: each task's own setting (MT-Bench 1024, AlpacaEval 2048, ...)
    temperature: NonNegFloat | None = None  # None: each task's own (greedy unless the task says otherwise)
    batch_size: PosInt = 16
    mt_bench_category_temperatures: bool = False  # FastChat's per-category temperatures instead of greedy
    tensor_parallel_size: PosInt = 1


@dataclass
class JudgeArgs:
    model: str | None = None  # None: the reference-based rubric (offline); else an LLM judge model name
    base_url: str | None = None  # OpenAI-compatible endpoint (None = OpenAI)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    local: str | None = None  # a local transformers model as in-process judge
    repeats: PosInt = 1
    prompts: str | None = None  # FastChat's judge_prompts.jsonl (MT-Bench); else downloaded at a pinned commit
    text_verdicts: bool = False  # judges without log-probabilities: AlpacaEval from the reply text (flagged)
    concurrency: PosInt = 8
    timeout: PosFloat = 120.0
    max_retries: NonNegInt = 6
    prices: dict[str, dict[str, float]] = field(default_factory=lambda: {
        # $ per 1M tokens; used for the cost ledger and --dry-run estimates
        "gpt-4o-2024-08-06": {"input": 2.5, "output": 10.0}, "gpt-4o": {"input": 2.5, "output": 10.0},
        "gpt-4-0613": {"input": 30.0, "output": 60.0}, "gpt-4-1106-preview": {"input": 10.0, "output": 30.0},
        "gpt-4o-mini": {"input": 0.15, "output": 0.6},
    })


@dataclass
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


@dataclass
class RunConfig:
    run: RunArgs = field(default_factory=RunArgs)
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    dynamics: DynamicsArgs = field(default_factory=DynamicsArgs)
    generation: GenerationArgs = field(default_factory=GenerationArgs)
    judge: JudgeArgs = field(default_factory=JudgeArgs)
    executor: ExecutorArgs = field(default_factory=ExecutorArgs)

    def sections(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that determines the results (the output folder name and the thread count are not
        part of it)."""
        d = self.to_dict()
        del d["executor"]  # where stages run never changes what they make
        # seeds: None is left out, so that configs from before the seed axis keep their hash (and run dirs)
        d["run"] = {k: v for k, v in d["run"].items()
                    if k not in ("out", "layout", "threads") and not (k == "seeds" and v is None)
                    and not (k == "num_nodes" and v == 1)}
        d["judge"] = {k: v for k, v in d["judge"].items() if k not in ("concurrency", "timeout", "max_retries")}
        d["model"] = model_key(self.model)
        d["train"] = hashed_section("train", self.train)  # removed options at their old value: old hashes stay
        return hash_obj(d)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def train_config(self):
        """The sftmix TrainConfig view of this run's training sections."""
        from sftmix.config import TrainConfig

        return TrainConfig(model=self.model, data=self.data, train=self.train, dynamics=self.dynamics)


def model_key(model) -> dict:
    """The model section as hashed: options added later are left out while unset, so older runs keep their keys."""
    return {k: v for k, v in asdict(model).items() if not (k == "trainable_layers" and v is None)}


def load_run_config(path: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults < YAML file < overrides (already parsed ``key -> value``); unknown keys fail loudly."""
    cfg = RunConfig()
    merged: dict[str, Any] = load_config_file(path) if path else {}
    merged.update(overrides)
    if "executor" in merged:  # `executor: slurm` in YAML, like --executor on the command line
        merged["executor.kind"] = merged.pop("executor")
    apply_overrides(cfg, merged, extra_keys=())
    validate_config(cfg)  # defaults and file values alike: the whole resolved config against the schema
    return cfg


EXPERIMENTS = Path(__file__).parent / "experiments"


def experiment_path(name_or_path: str) -> str:
    """A config path, or the name of a bundled experiment in ``bench/experiments/``."""
    p = Path(name_or_path)
    if p.exists():
        return str(p)
    for cand in (EXPERIMENTS / name_or_path, EXPERIMENTS / f"{name_or_path}.yaml"):
        if cand.exists():
            return str(cand)
    names = sorted(q.stem for q in EXPERIMENTS.glob("*.yaml"))
    raise UserError(f"config not found: {name_or_path}{nearest(name_or_path, names)}; bundled: {', '.join(names)}")

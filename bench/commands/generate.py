"""`bench generate`: answers for tasks with a model, into DIR/<task>.generations.jsonl, and for tasks that need no
judge (mcq, exact, perplexity, ...) their metrics in DIR/<task>.scores.json (paths: :class:`bench.rundir.RunDir`).

Extra ``key=value`` arguments are backend options (e.g. ``tensor_parallel_size=2`` for vllm).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from bench.backends import get_backend
from bench.cache import Cache
from bench.generate import generate_task, record_metrics
from bench.rundir import RunConfigRecord, RunDir
from bench.tasks import load_task
from bench.validate import check_backend, check_model, check_out
from core.errors import UserError
from core.io import write_json
from sftmix.presets import resolve_model

ACCEPTS_OVERRIDES = True
DEFAULT_TASKS = "toy_open,toy_mcq,toy_exact"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder, hub id or preset name")
    parser.add_argument("--tasks", default=None, help=f"comma-separated task names (default {DEFAULT_TASKS}; for a "
                        "trained variant RUN/variants/V/model, the run's tasks)")
    parser.add_argument("--backend", default=None, choices=("hf", "vllm"),
                        help="hf (default) or vllm; for a trained variant, the run's backend")
    parser.add_argument("--limit", type=int, default=None, help="first N items of each task")
    parser.add_argument("--out", default=None,
                        help="output folder (default runs/generate/<name>: a trained variant's folder is named "
                             "<run>-<variant>; a folder holding another model's generations is refused)")
    parser.add_argument("--force", action="store_true", help="replace another model's generations in --out")
    parser.add_argument("--data-path", action="append", default=[], metavar="TASK=PATH",
                        help="local data file/folder for a task (repeatable); no hub access needed")
    parser.add_argument("--cache", default=None, help="cache file (default <out>/cache.sqlite)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (a trained variant: the run's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="auto, float32, bfloat16, float16")
    parser.add_argument("--template", default=None, help="named chat template for base models (sftmix.templates)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--category-temperatures", action="store_true",
                        help="MT-Bench: FastChat's per-category temperatures instead of greedy")
    parser.add_argument("--mcq-mode", choices=("loglik", "generate"), default=None,
                        help="mcq tasks: option log-likelihood (default) or generate-then-parse the letter")
    parser.add_argument("--repeat", type=int, default=0, help="sample index (part of the cache key)")


def _parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise UserError(f"{what} must look like key=value, got {pair!r}")
        out[key] = value
    return out


def default_out(model: str) -> Path:
    """``runs/generate/<name>``: a trained variant (``<run>/variants/<variant>/model``) is ``<run>-<variant>`` and
    ``bench train --out DIR``'s ``DIR/model`` is ``DIR``'s name, so two variants' generations never share a folder;
    any other model is named by its last path part."""
    p = Path(model.rstrip("/"))
    trained = RunDir.of_model_dir(p)
    if trained is not None:
        name = f"{trained[0].root.name}-{trained[1]}"
    elif p.name == "model" and p.parent.name:  # `bench train --out DIR` saves DIR/model
        name = p.parent.name
    else:
        name = p.name
    return Path("runs") / "generate" / name


def _claim(out: Path, model: str, model_path: str, force: bool, data_paths: dict | None = None) -> None:
    """Refuse to mix two models' generations (and scores) in one folder; record whose they are, and the local
    data each task was read from (``bench judge`` reads the same)."""
    marker = RunDir(out).generate_marker
    ident = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
    if marker.is_file() and not force:
        try:
            old = json.loads(marker.read_text(encoding="utf-8")).get("model_path")
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise UserError(f"{marker} is damaged (not a JSON object): delete it, or use --force to replace the "
                            "folder's generations") from None
        if old != ident:
            raise UserError(f"{out} holds generations of another model ({old}); use another --out, or --force "
                            "to replace them")
    record = {"model": model, "model_path": ident}
    if data_paths:
        record["data_paths"] = {t: str(Path(p).expanduser().resolve()) for t, p in data_paths.items()}
    write_json(marker, record)


def _resolve_model(name: str) -> str:
    return str(resolve_model(name))


def run_defaults(args: argparse.Namespace) -> None:
    """A trained variant (``RUN/variants/<v>/model``) is generated with its run's settings unless a flag says
    otherwise: tasks, limit, local data, backend, batch size, max_new_tokens, temperature, MT-Bench temperatures and
    chat template, from ``RUN/config.yaml``. Says which it took."""
    trained = RunDir.of_model_dir(Path(args.model.rstrip("/")))
    if trained is None or not trained[0].config.is_file():
        return
    cfg = RunConfigRecord.read(trained[0])
    run, gen, model = cfg.run, cfg.generation, cfg.model
    taken = []

    def take(attr: str, value, label: str) -> None:
        if getattr(args, attr) in (None, False, []) and value not in (None, "", [], {}, False):
            setattr(args, attr, value)
            taken.append(f"{label}={value}")

    take("tasks", ",".join(cfg.tasks()) or None, "tasks")
    take("limit", run.get("limit"), "limit")
    if args.limit is not None and run.get("limit_mode") == "spread" and taken and taken[-1].startswith("limit"):
        args.limit_mode = "spread"
        taken.append("limit_mode=spread")
    take("backend", gen.get("backend"), "backend")
    take("batch_size", gen.get("batch_size") if gen.get("backend", "hf") == "hf" else None, "batch_size")
    take("max_new_tokens", gen.get("max_new_tokens"), "max_new_tokens")
    take("temperature", gen.get("temperature"), "temperature")
    take("category_temperatures", gen.get("mt_bench_category_temperatures"), "mt_bench_category_temperatures")
    take("template", model.get("template"), "template")
    paths = run.get("data_paths") or {}
    given = {p.split("=", 1)[0] for p in args.data_path}
    for task, path in paths.items() if isinstance(paths, dict) else ():
        if task not in given and task in (args.tasks or "").split(","):
            args.data_path.append(f"{task}={path}")
            taken.append(f"data_path {task}={path}")
    if taken:
        print(f"bench generate: a variant of run {trained[0].root}: its settings from {trained[0].config.name} "
              f"({', '.join(taken)}); flags override them")


def run(args: argparse.Namespace) -> int:
    run_defaults(args)
    args.tasks = DEFAULT_TASKS if args.tasks is None else args.tasks
    args.backend = args.backend or "hf"
    args.batch_size = 8 if args.batch_size is None else args.batch_size
    for flag, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.temperature is not None and not args.temperature >= 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.repeat < 0:
        raise UserError(f"--repeat must be >= 0, got {args.repeat}")
    tasks = [load_task(n.strip()) for n in args.tasks.split(",") if n.strip()]
    if not tasks:
        raise UserError("--tasks names no task")
    data_paths = _parse_pairs(args.data_path, "--data-path")
    for name in data_paths:
        if name not in {t.name for t in tasks}:
            raise UserError(f"--data-path names task {name!r}, which is not in --tasks")
    pairs = getattr(args, "extra", None) or getattr(args, "overrides", None) or []
    backend_opts = {k: yaml.safe_load(v) for k, v in _parse_pairs(pairs, "backend option").items()}
    override = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("temperature", args.temperature),
                                  ("seed", args.seed), ("mcq_mode", args.mcq_mode)) if v is not None}
    if args.category_temperatures:
        override["greedy"] = False

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    check_model(args.model, "--model")
    check_backend(args.backend)
    # Every task's data is read and checked before the model loads: bad data fails in seconds.
    items = {t.name: t.load_records(limit=args.limit, local=data_paths.get(t.name),
                                    limit_mode=getattr(args, "limit_mode", "first")) for t in tasks}
    model_path = _resolve_model(args.model)
    out = Path(args.out) if args.out else default_out(args.model)
    check_out(out)
    if args.backend == "hf":
        backend_opts = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
                        "template": args.template, **backend_opts}
    elif args.template:
        backend_opts.setdefault("template", args.template)
    backend = get_backend(args.backend, model_path, **backend_opts)
    _claim(out, args.model, model_path, args.force, data_paths)  # only once the model loaded: bad input writes nothing
    rd = RunDir(out)
    cache = Cache(args.cache or rd.cache)

    for task in tasks:
        t0 = time.perf_counter()
        records = generate_task(task, items[task.name], backend, model_id=args.model, out=rd.generate_output(task.name),
                                cache=cache, settings=override, repeat=args.repeat)
        line = f"{task.name}: {len(records)} records in {time.perf_counter() - t0:.1f}s"
        metrics = record_metrics(task, records)
        if metrics is not None:
            write_json(rd.generate_metrics(task.name), metrics)
            line += f"; {metrics['primary']}={metrics.get(metrics['primary'], float('nan')):.4f}"
        print(line + f" -> {rd.generate_output(task.name)}")
    return 0

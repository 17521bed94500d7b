"""The measurements, each run in a worker (by default a fresh process, see :mod:`.protocol`): ``spec`` in, a
result dict out."""
from __future__ import annotations

import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench.backends import get_backend
from bench.backends.base import GenRequest, GenSettings
from bench.config import experiment_path, load_run_config
from bench.pipeline import run_pipeline
from bench.rundir import Provenance, RunDir
from sftmix.config import TrainConfig, apply_overrides, split_overrides
from sftmix.constants import IGNORE_INDEX as IGNORE
from sftmix.variants import get_variant

from ..provenance import REPO
from .contamination import contamination_worker
from .fabricate import build_model, collate, random_examples
from .meter import Memory, sync
from .shapes import PEAK_FLOPS, loss_body, model_flops_per_step
from .trainers import hf_trainer, our_trainer, trl_trainer
from .view import view_worker


def step_worker(spec: dict) -> dict:
    """Time and meter ``steps`` optimizer steps of one configuration (see STEP_CONFIGS, CUDA_STEP_CONFIGS, trl)."""
    shape, device, config = spec["shape"], spec["device"], spec["config"]
    need = {"ntp-liger": "liger_kernel", "ntp-cce": "cut_cross_entropy"}.get(config)
    if need and (device != "cuda" or importlib.util.find_spec(need) is None):
        raise RuntimeError(f"{need} not installed" if device == "cuda" else f"{need} needs CUDA")
    if loss_body(config):
        os.environ["SFTMIX_LCE_BACKEND"] = loss_body(config)
    # Every library any configuration uses is imported before the baseline, so all share the same baseline.
    import datasets  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import sftmix.trainer  # noqa: F401
    from sftmix.loss import fused  # heavy: imports torch

    fused.prepare(device)  # a fused loss body's one-time build (C++ on CPU), outside the memory and the clock
    mem = Memory(device)
    model = build_model(shape, device)
    fast = config.endswith("-fast")
    if fast:  # the MFU attempt: every decoder layer compiled (one graph serves all), fused AdamW, SDPA attention
        for layer in model.model.layers:
            layer.compile()
    rows = random_examples(shape, shape["batch"])
    with tempfile.TemporaryDirectory() as out:
        if config == "trl":
            trainer, batch = trl_trainer(model, rows, shape, device, out)
        elif config == "hf-loss":
            trainer, batch = hf_trainer(model, rows, shape, device, out)
        else:
            trainer, batch = our_trainer(config, model, rows, shape, device, out,
                                         optim="adamw_torch_fused" if fast else "adamw_torch")
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop
        model = trainer.model
        n_loss_tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
        # Exactly the training loop's per-step calls: count items, training_step (fwd + loss + bwd), optimizer.
        def step():
            samples, num_items = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
            loss = trainer.training_step(model, dict(samples[0]), num_items)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            sync(device)
            return float(loss)

        losses = [step() for _ in range(shape["warmup"])]
        static = mem.reset_peak()
        times, cpu_times = [], []
        for _ in range(shape["steps"]):
            t0, c0 = time.perf_counter(), time.process_time()
            losses.append(step())
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        peak = mem.peak()
    # The fastest step is the code's own cost; slower ones carry other processes' load on a shared machine.
    step_s = min(times)
    tokens = shape["batch"] * shape["seq"]
    res = {
        "config": config, "step_s": step_s, "step_median_s": statistics.median(times), "step_times_s": times,
        "step_cpu_s": min(cpu_times) if device == "cpu" else None,  # process CPU time (all threads)
        "tokens_per_s": tokens / step_s,
        "peak_mb": peak - mem.base, "step_peak_mb": peak - static, "static_mb": static - mem.base,
        "loss_tokens": n_loss_tokens, "last_loss": losses[-1],
        # what actually ran: the loss's chunk body, the attention implementation, the optimizer
        "loss_body": fused.status()["last"], "attn": getattr(model.config, "_attn_implementation", None),
        "optim": str(trainer.args.optim), "compiled_layers": fast,
    }
    if device == "cuda":
        import torch  # heavy optional dependency

        name = torch.cuda.get_device_name(0)
        peak_flops = next((f for k, f in PEAK_FLOPS.items() if k in name), None)
        res["mfu"] = model_flops_per_step(shape) / step_s / peak_flops if peak_flops else None
    return res


def scoring_worker(spec: dict) -> dict:
    """``response_nll`` vs a bare no-grad forward over the same batches: tokens/s and step-peak memory of each."""
    import torch  # heavy optional dependency

    from sftmix.dynamics import response_nll  # heavy: imports accelerate, torch

    shape, device = spec["shape"], spec["device"]
    mem = Memory(device)
    model = build_model(shape, device).eval()
    rows = random_examples(shape, shape["score_examples"], seed=1)
    bs = shape["score_batch"]
    batches = [collate(rows[i : i + bs]) for i in range(0, len(rows), bs)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def score():
        response_nll(model, rows, collate, batch_size=bs)

    @torch.no_grad()
    def forward_logits():
        for b in batches:
            model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits

    @torch.no_grad()
    def forward_backbone():
        for b in batches:
            model.model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device))

    fns = {"response_nll": score, "forward_logits": forward_logits, "forward_backbone": forward_backbone}
    with torch.no_grad():  # warm-up: one batch each
        model(input_ids=batches[0]["input_ids"][:1].to(device))
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(shape["score_repeats"]):  # interleaved, so load changes on a shared machine hit all alike
        for name, fn in fns.items():
            static = mem.reset_peak()
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            peaks[name].append(mem.peak() - static)
    return {name: {"seconds": min(ts), "tokens": tokens, "tokens_per_s": tokens / min(ts),
                   "step_peak_mb": min(peaks[name]), "vocab": shape["vocab"]} for name, ts in times.items()}


def dynamics_worker(spec: dict) -> dict:
    """One of: ``ntp`` (a one-epoch NTP reference run alone), ``offline`` (the run + C scoring passes, the paper)
    or ``online`` (the run recording its own losses) on the tiny preset; wall/CPU seconds and the split. Every
    mode includes writing the confidence table and its histogram."""
    from sftmix.recipe import _collator, load_model, prepare, run_dynamics, training_arguments  # heavy: imports torch
    from sftmix.trainer import ExampleDataset, SFTMixTrainer  # heavy: imports accelerate, datasets

    shape, mode = spec["shape"], spec["mode"]
    cfg = TrainConfig()
    apply_overrides(cfg, split_overrides([
        "model=tiny-llama", "data=toy", f"max_examples={shape['dyn_examples']}", "max_length=192",
        "learning_rate=3e-3", "global_batch_size=8", "per_device_batch_size=8", "logging_steps=1000",
        f"num_checkpoints={shape['dyn_checkpoints']}", "score_batch_size=16", "seed=3",
        *(["bf16=true"] if spec["device"] == "cuda" else ["bf16=false"]),
    ]))
    cfg.dynamics.online = mode == "online"
    prep = prepare(cfg)  # data and tokenizer, outside the timed part
    import matplotlib.pyplot  # noqa: F401  (imported before the clock starts, for every mode alike)

    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "ntp":
            # heavy: imports accelerate, torch
            from sftmix.dynamics import confidence_table, plot_histogram, write_table

            model = load_model(prep.model_path, cfg)
            trainer = SFTMixTrainer(
                model=model, args=training_arguments(cfg, Path(out) / "reference", epochs=1.0, save=False),
                train_dataset=ExampleDataset(prep.examples), data_collator=_collator(prep.tokenizer),
                variant=get_variant("ntp"),
            )
            trainer.train()
            # The same table and histogram writes as the other modes, so only scoring/recording differs.
            n = len(prep.examples)
            df = confidence_table([e["id"] for e in prep.examples], [e["hash"] for e in prep.examples],
                                  {1: np.arange(n, dtype=float)})
            write_table(df, Path(out) / "confidence.parquet")
            plot_histogram(df, Path(out) / "confidence.png")
            split = None
        else:
            split = run_dynamics(cfg, out, prepared=prep)["split"].tolist()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"mode": mode, "seconds": wall, "cpu_s": cpu, "examples": len(prep.examples), "split": split,
            "num_checkpoints": cfg.dynamics.num_checkpoints}


def generation_worker(spec: dict) -> dict:
    """Completion tokens/s of one backend on ``gen_prompts`` fixed prompts (greedy), after load and a warm-up."""
    shape = spec["shape"]
    t0 = time.perf_counter()
    backend = get_backend(spec["backend"], spec["model_path"], **spec.get("backend_opts", {}))
    load_s = time.perf_counter() - t0
    settings = GenSettings(max_new_tokens=shape["gen_tokens"], temperature=0.0)
    topics = ["rivers", "bread", "the moon", "chess", "volcanoes", "bees", "trains", "music"]
    reqs = [GenRequest("perf", f"p{i}", 0, [{"role": "user", "content": f"Write a short note about {topics[i % 8]} "
                                             f"(number {i})."}], settings) for i in range(shape["gen_prompts"])]
    backend.generate([GenRequest("perf", "warm", 0, reqs[0].messages, GenSettings(max_new_tokens=2))])
    t0 = time.perf_counter()
    gens = backend.generate(reqs)
    secs = time.perf_counter() - t0
    completion = sum(g.completion_tokens for g in gens)
    return {"backend": spec["backend"], "load_s": load_s, "seconds": secs, "requests": len(reqs),
            "completion_tokens": completion, "tokens_per_s": completion / secs if secs > 0 else float("nan"),
            "texts": [g.text for g in gens]}


def rerun_worker(spec: dict) -> dict:
    """Run the embedded default ``bench run`` once, then re-run the finished run twice: in-process
    (``run_pipeline``) and as the user would, a fresh ``python -m bench.cli run`` (wall time incl. start-up)."""
    overrides = dict(spec["shape"].get("rerun_overrides", {}))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        cfg = load_run_config(experiment_path("default"), {**overrides, "run.out": out})
        t0 = time.perf_counter()
        run_pipeline(cfg, progress=False)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = run_pipeline(cfg, progress=False)
        in_process_s = time.perf_counter() - t0
        # What a fresh `bench run` pays before its first stage check: interpreter start-up and imports.
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import bench.pipeline, bench.tables, bench.plots, sftmix.recipe, "
                        "transformers"], cwd=REPO, capture_output=True)
        imports_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "bench.cli", "run", "--out", out, *[f"{k}={v}" for k, v in overrides.items()]]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
    # "judge requests: N (...)" for an LLM judge; "judge verdicts: N (reference rubric, no requests)" otherwise
    m = re.search(r"model requests: (\d+), judge (requests|verdicts): (\d+)", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"bench run re-run failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
    return {"first_run_s": first_s, "in_process_s": in_process_s, "seconds": cli_s, "imports_s": imports_s,
            "in_process_requests": summary["model_requests"] + summary["judge_requests"],
            "requests_model": int(m.group(1)), "requests_judge": int(m.group(3)) if m.group(2) == "requests" else 0,
            "skipped": len(summary["skipped"])}


def contention_worker(spec: dict) -> dict:
    """The embedded default ``bench run`` as a user starts it (a fresh ``python -m bench.cli run``, its own thread
    choice) beside ``busy`` processes that spin on a core each: wall seconds, and the threads the run chose."""
    busy = int(spec["busy"])
    overrides = spec["shape"].get("rerun_overrides", {})
    # The run decides its threads itself, as a user's would: none of the perf workers' thread settings.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let them reach their loops
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "run")
            cmd = [sys.executable, "-m", "bench.cli", "run", "--out", out, *[f"{k}={v}" for k, v in overrides.items()]]
            t0, c0 = time.perf_counter(), _children_cpu_s()
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            seconds, cpu_s = time.perf_counter() - t0, _children_cpu_s() - c0
            if p.returncode != 0:
                raise RuntimeError(f"bench run failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
            prov = Provenance.read(RunDir(out))
            threads = ((prov.hardware or {}).get("threads") if prov else None) or {}
    finally:
        for q in spinners:
            q.kill()
            q.wait()
    return {"busy": busy, "seconds": seconds, "cpu_s": cpu_s, "threads": threads.get("threads"),
            "threads_source": threads.get("source"), "omp_wait_policy": (threads.get("omp_wait_policy") or {}).get(
                "value"), "load_seen": [threads.get("load_avg_1m"), threads.get("runnable_others")]}


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children (the spinners are reaped after)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


WORKERS: dict[str, Callable[[dict], dict]] = {
    "step": step_worker, "dynamics": dynamics_worker, "scoring": scoring_worker, "generation": generation_worker,
    "rerun": rerun_worker, "view": view_worker, "contamination": contamination_worker,
    "contention": contention_worker,
}

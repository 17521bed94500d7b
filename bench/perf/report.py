"""The perf report: the machine it ran on, and its Markdown rendering (targets first, then the absolute figures of
each section)."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from ..provenance import cpu_name, git_commit, versions
from .contamination import contamination_lines
from .view import render_view


def machine_info(device: str) -> dict:
    """CPU model, cores, torch threads, library versions, GPU name; git commit and date (provenance)."""
    import torch  # heavy optional dependency

    git = git_commit()
    return {
        "cpu": cpu_name(), "cores": os.cpu_count(), "affinity_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "versions": versions(("torch", "transformers", "trl", "accelerate")),
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None,
        "device": device, "git_commit": None if git["commit"] == "unknown" else git["commit"],
        "git_dirty": bool(git["dirty"]), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class PerfReport:
    """One `bench perf` run: machine, shape, per-section results and the evaluated targets."""

    machine: dict
    shape: dict
    sections: dict[str, Any] = field(default_factory=dict)  # section -> {name: result dict}
    targets: list[dict] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return {"machine": self.machine, "shape": self.shape, "sections": self.sections, "targets": self.targets,
                "wall_s": self.wall_s}


# ---- cells and rows -------------------------------------------------------------------------------------------
def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _margin(t: dict) -> str:
    """How far a ratio is from its bound, e.g. "12.0% over the bound" or "3.1% inside"."""
    m = t.get("margin")
    if m is None:
        return ""
    le = t["bound"].startswith("<=")
    missed = m > 0 if le else m < 0
    return f"{abs(m) * 100:.1f}% {'over' if le else 'under'} the bound" if missed else f"{abs(m) * 100:.1f}% inside"


def _load(r: dict) -> str:
    la = r.get("load_avg")
    return f"{la[0]:.1f}–{la[1]:.1f}" if la else "–"


@dataclass(frozen=True)
class Col:
    """A figure column: its header, how a result dict fills it, and whether it is right-aligned (numbers)."""

    header: str
    cell: Callable[[dict], str]
    numeric: bool = True


def _num(header: str, key: str, nd: int) -> Col:
    return Col(header, lambda r: _fmt(r.get(key), nd))


LOAD = Col("load avg", _load, numeric=False)


def _grid(lead: list[str], cols: list[Col], rows: Iterable[tuple[list[str], dict]]) -> list[str]:
    """A Markdown table: ``lead`` label columns, then ``cols``; a result with an ``error`` is an n/a row."""
    width = len(lead) + len(cols)
    out = ["| " + " | ".join(lead + [c.header for c in cols]) + " |",
           "|" + "|".join(["---"] * len(lead) + ["---:" if c.numeric else "---" for c in cols]) + "|"]
    for labels, r in rows:
        if "error" in r:
            out.append("| " + " | ".join(labels + [f"n/a: {r['error']}"]) + " |" + " |" * (width - len(labels) - 1))
        else:
            out.append("| " + " | ".join(labels + [c.cell(r) for c in cols]) + " |")
    return out


def _mfu(r: dict) -> str:
    return f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else "–"


STEP_COLS = [_num("step s (min)", "step_s", 3), _num("step s (median)", "step_median_s", 3),
             _num("CPU s (min)", "step_cpu_s", 3), _num("tokens/s", "tokens_per_s", 0), _num("peak MB", "peak_mb", 0),
             _num("step peak MB", "step_peak_mb", 0), _num("loss", "last_loss", 3), Col("MFU", _mfu),
             Col("loss body", lambda r: _fmt(r.get("loss_body")), numeric=False), LOAD]
SCALING_COLS = [_num("step s (min)", "step_s", 3), _num("CPU s (min)", "step_cpu_s", 3),
                _num("step peak MB", "step_peak_mb", 0), _num("peak MB", "peak_mb", 0), _num("loss", "last_loss", 3),
                LOAD]
SCORING_COLS = [_num("seconds", "seconds", 3), _num("tokens", "tokens", 0), _num("tokens/s", "tokens_per_s", 0),
                _num("step peak MB", "step_peak_mb", 0), LOAD]
GENERATION_COLS = [_num("load s", "load_s", 1), _num("seconds", "seconds", 2),
                   _num("completion tokens", "completion_tokens", 0), _num("tokens/s", "tokens_per_s", 1)]


def _results(res: dict) -> list[tuple[str, dict]]:
    """A section's result rows (names starting with ``_`` and non-dict entries are bookkeeping)."""
    return [(name, r) for name, r in res.items() if not name.startswith("_") and isinstance(r, dict)]


# ---- the document ---------------------------------------------------------------------------------------------
def render_markdown(rep: PerfReport) -> str:
    """The report as Markdown: machine, targets (ratios with PASS/MISS), then the absolute figures."""
    lines = _header(rep) + _targets(rep)
    for section in (_step, _scaling, _dynamics, _scoring, _generation, _rerun, contamination_lines, _contention):
        lines += section(rep)
    lines += render_view(rep.sections.get("view", {}))
    return "\n".join(lines) + "\n"


def _header(rep: PerfReport) -> list[str]:
    m, s = rep.machine, rep.shape
    lines = [f"# bench perf ({m['device']})", ""]
    threads = s.get("threads") or m["torch_threads"]
    lines.append(f"- machine: {m['cpu']}, {m['cores']} cores ({m['affinity_cores']} usable)"
                 + (f", GPU {m['gpu']}" if m.get("gpu") else "")
                 + (f"; workers ran with {threads} torch thread(s), OMP_WAIT_POLICY=PASSIVE" if m["device"] == "cpu"
                    else ""))
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    lines.append(f"- provenance: git {str(m['git_commit'])[:12]}{' (dirty tree)' if m['git_dirty'] else ''}, "
                 f"{m['date']}; benchmark wall time {rep.wall_s:.0f} s; 1-min load average at start "
                 f"{m.get('load_avg', ['?'])[0]} (each row: before–after its worker)")
    lines.append(f"- model: random-init Llama, hidden {s['hidden']}, {s['layers']} layers, vocab {s['vocab']}, "
                 f"{s['dtype']}; batch {s['batch']} x {s['seq']} tokens, loss on the last 50-70% of each row; "
                 f"{s['warmup']} warm-up + {s['steps']} timed steps per worker, {s['rounds']} interleaved round(s) "
                 "(every configuration once per round, each in a fresh process); step time = fastest timed step "
                 "of the fastest round (median beside it); memory = median over rounds")
    lines.append("- method: every step = the Trainer loop's calls (get_batch_samples, training_step = forward + loss + "
                 "backward, AdamW step, zero_grad); ours through SFTMixTrainer.compute_loss, hf-loss through a plain "
                 "transformers.Trainer (the model's own model(labels=...) loss over full logits), TRL through "
                 "SFTTrainer (completion_only_loss on the same rows, activation checkpointing off everywhere, same "
                 "precision); peak = above the memory before the model existed, step peak = above the memory held "
                 "just before the timed steps (activations, logits, gradients of one step)")
    return lines


def _targets(rep: PerfReport) -> list[str]:
    s = rep.shape
    lines = ["", "## Targets", "", "| target | ratio / value | bound | status | margin |", "|---|---:|---|---|---|"]
    for t in rep.targets:
        val = _fmt(t["ratio"], 3) if t.get("ratio") is not None else _fmt(t.get("value"))
        extra = f" ({t['value']})" if t.get("ratio") is not None and t.get("value") else ""
        lines.append(f"| {t['target']} | {val}{extra} | {t['bound']} | {t['status']} | {_margin(t)} |")
    missed = [t for t in rep.targets if t["status"] == "MISS"]
    if any("sftmix" in t["target"] and "ntp" in t["target"] and "step time" in t["target"] for t in missed):
        body = rep.sections.get("step", {}).get("sftmix", {}).get("loss_body")
        work = ("one more exponential per mixed logit, inside the same three sweeps per row as NTP's own softmax "
                "(fused body)" if body in ("cpp", "compile") else
                "elementwise passes over the mixed rows' [N/2, V] logits (interpolation, log-softmax, exp, two scaled "
                "adds into the gradient; eager body)")
        lines += ["", f"Why sftmix/ntp step time misses here: both share the head's matmuls (one pass), which cost "
                  f"6 x hidden = {6 * s['hidden']:,} FLOPs per logit; the Mixup term adds {work}, about the same "
                  "absolute time at any hidden size. At this model's hidden size "
                  f"({s['hidden']}) that is a visible fraction of the step; its share falls in proportion as the "
                  "hidden size grows (README, Performance)."]
    return lines


def _step(rep: PerfReport) -> list[str]:
    steps = {**rep.sections.get("step", {}), **rep.sections.get("trl", {})}
    if not steps:
        return []
    lines = ["", "## Train step (training_step + AdamW step)", ""]
    lines += _grid(["config"], STEP_COLS, [([name], r) for name, r in _results(steps)])
    if "trl" in steps:
        lines += ["", "About the TRL row: on CPU, TRL's SFTTrainer takes its generic path, the model's full-logits "
                  "loss plus its own per-step metrics (entropy and token accuracy over the full logits, which "
                  "count every non-padding position, not only the completion): it does more work than a loss "
                  "needs. On GPU, TRL would normally run with `use_liger_kernel=True` (Liger's fused linear "
                  "cross-entropy); that comparison is the `ntp-liger` row of the GPU table. The fair CPU "
                  "baseline for our kernel is the `hf-loss` row (same positions, same model, full logits)."]
    return lines


def _scaling(rep: PerfReport) -> list[str]:
    sc = rep.sections.get("scaling", {})
    if not sc:
        return []
    rows = [([label, name], r) for label, res in sc.items() for name, r in _results(res)]
    return (["", "## Scaling: vocabulary x sequence length", ""]
            + _grid(["V x T (batch)", "config"], SCALING_COLS, rows)
            + ["\nBatch 2 at T = 1024 (8 at T = 256): 2,048 tokens per step, so a 1-thread CPU step at V = 128k "
               "stays within seconds."])


def _dynamics(rep: PerfReport) -> list[str]:
    dyn = rep.sections.get("dynamics", {})
    if not dyn:
        return []
    ntp = dyn.get("ntp", {})
    cols = [_num("wall s", "seconds", 1), _num("CPU s", "cpu_s", 1),
            Col("x one NTP epoch (wall)", lambda r: _fmt(r["seconds"] / ntp["seconds"] if "seconds" in ntp else None,
                                                         2)), LOAD]
    rows = [([mode], dyn.get(mode, {"error": "not run"})) for mode in ("ntp", "offline", "online")]
    lines = ["", "## Training dynamics: cost and agreement (tiny preset)", ""] + _grid(["mode"], cols, rows)
    if dyn.get("agreement") is not None:
        c = dyn.get("offline", {}).get("num_checkpoints")
        lines.append(f"\n{dyn['ntp'].get('examples')} examples, C = {c}. Split agreement online vs offline "
                     f"(fraction of examples in the same half): {dyn['agreement']:.3f}. By FLOPs for a real model "
                     f"offline costs ≈ 1 + C/3 = {1 + (c or 0) / 3:.2f} NTP epochs (each scoring pass is a "
                     "no-grad forward, ~1/3 of a training step); online ≈ 1.")
    return lines


def _scoring(rep: PerfReport) -> list[str]:
    scoring = rep.sections.get("scoring", {})
    if not scoring:
        return []
    # One worker measured all passes of a vocabulary: its load average goes on each of them.
    rows = [([label, name], {**r, "load_avg": res.get("_worker", {}).get("load_avg")})
            for label, res in scoring.items() for name, r in _results(res)]
    return ["", "## Confidence scoring (no grad)", ""] + _grid(["V", "pass"], SCORING_COLS, rows)


def _generation(rep: PerfReport) -> list[str]:
    gen, s = rep.sections.get("generation", {}), rep.shape
    if not gen:
        return []
    lines = ["", f"## Generation ({s['gen_model']}, {s['gen_prompts']} prompts, {s['gen_tokens']} new tokens, greedy)",
             ""] + _grid(["backend"], GENERATION_COLS, [([name], r) for name, r in _results(gen)])
    ok = {k: r for k, r in gen.items() if isinstance(r, dict) and "error" not in r}
    if "hf" in ok and "vllm" in ok and ok["hf"]["tokens_per_s"]:
        lines.append(f"\nvllm / hf throughput: {ok['vllm']['tokens_per_s'] / ok['hf']['tokens_per_s']:.2f}x; "
                     f"identical greedy completions: {gen.get('parity', 0):.3f}")
    return lines


def _rerun(rep: PerfReport) -> list[str]:
    rr = rep.sections.get("rerun", {})
    if not rr:
        return []
    r = rr.get("rerun", {})
    lines = ["", "## Finished `bench run` re-run", ""]
    if "error" in r:
        lines.append(f"n/a: {r['error']}")
    else:
        lines.append(f"`bench run` re-run of a finished run (fresh process, wall time incl. start-up): "
                     f"{r['seconds']:.2f} s, {r['requests_model']} model requests, {r['requests_judge']} judge "
                     f"requests. In-process `run_pipeline` re-run: {r['in_process_s']:.2f} s, "
                     f"{r['in_process_requests']} requests, {r['skipped']} stages skipped. Python start-up + "
                     f"imports alone: {r['imports_s']:.2f} s. "
                     f"(First run: {r['first_run_s']:.0f} s.)")
    return lines


def _contention(rep: PerfReport) -> list[str]:
    ct = rep.sections.get("contention", {})
    if not ct:
        return []
    cols = [_num("busy processes", "busy", 0), _num("wall s", "seconds", 1), _num("CPU s", "cpu_s", 1),
            _num("threads chosen", "threads", 0),
            Col("chosen from (1-min load, runnable others)", lambda r: _fmt(r.get("load_seen")), numeric=False),
            Col("OMP_WAIT_POLICY", lambda r: _fmt(r.get("omp_wait_policy")), numeric=False), LOAD]
    rows = [([name], ct[name]) for name in ("idle", "busy") if isinstance(ct.get(name), dict)]
    lines = ["", "## The embedded default beside busy processes", ""] + _grid(["run"], cols, rows)
    idle, busy = ct.get("idle", {}), ct.get("busy", {})
    if "seconds" in idle and "seconds" in busy:
        lines.append(f"\n`bench run` (embedded default, a fresh process choosing its own threads) alone and beside "
                     f"{busy['busy']} processes spinning on a core each: {busy['seconds'] / idle['seconds']:.2f}x the "
                     f"idle time; its fair share of the cores is {ct.get('fair_share', 0):.2f}x (n + 1 processes on "
                     f"{rep.machine.get('affinity_cores')} cores). \"idle\" means no spinners of ours: other "
                     "processes on a shared machine still count in the load column. CPU s: the run's own CPU time "
                     "(threads that spin while they wait would inflate it under contention).")
    return lines

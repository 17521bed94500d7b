"""A finished run directory for `bench view` tests, made cheaply with the real writers and no training.

The answers come from a scripted backend through :func:`bench.generate.generate_task`, the verdicts from a scripted
judge through :func:`bench.evaluate.evaluate_task` (so generations, judgments, task summaries and item values are
exactly what the score stage writes), the training logs and plots through :mod:`bench.rundir` and :mod:`bench.plots`.
Tasks: MT-Bench (2 turns, categories, references, 2 judge repeats, on :mod:`fixtures`' question file), toy_mcq
(log-likelihood MCQ) and toy_exact. Some answers and judge replies are hostile HTML (``HOSTILE``), one verdict is
unparsable (a judge failure), and variants differ on some items and agree on others.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.backends.base import Generation
from bench.evaluate import evaluate_task
from bench.generate import generate_task
from bench.judge.client import BaseJudge
from bench.plots import plot_categories, plot_loss_curves
from bench.rundir import Provenance, RunDir, TrainRecord
from bench.tasks import load_task
from fixtures import write_fixtures

# Hostile text: an answer (and a judge reply) that would run script or render markup if put into the page as HTML.
HOSTILE = ('</pre></div><script>window.__pwned = "answer";</script><img src=x onerror="window.__pwned=\'img\'">'
           '<b>bold?</b> &amp; &lt;tag&gt;')
HOSTILE_JUDGE = '<script>window.__pwned = "judge"</script><a href="javascript:alert(1)">click</a> Rating: [[3]]'
UNPARSABLE = '<img src=x onerror="window.__pwned=\'failed\'"> I will not rate this.'
TASKS = ("mt_bench", "toy_mcq", "toy_exact")
LIMIT = {"toy_mcq": 6, "toy_exact": 6}


def _h(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class ScriptedBackend:
    """Deterministic answers per variant: NTP and SFTMix agree on some items and differ on others."""

    name = "scripted"

    def __init__(self, variant: str):
        self.variant = variant

    def generate(self, requests):
        out = []
        for r in requests:
            if r.task == "mt_bench" and r.example_id == "82" and r.turn == 0 and self.variant == "sftmix":
                text = HOSTILE
            elif r.task == "toy_exact":
                # sftmix answers the first items right (their text is the gold answer), ntp only the first
                text = "RIGHT" if _h(r.example_id) % 2 == 0 or self.variant == "sftmix" else "wrong answer"
            else:
                same = _h(r.task, r.example_id) % 3 == 0
                who = "both" if same else self.variant
                text = f"Answer of {who} to {r.example_id} turn {r.turn + 1}:\n  line two with  two spaces"
            out.append(Generation(text, 10, 5))
        return out

    @staticmethod
    def chat_prompt(messages) -> str:  # ChatML, as SmolLM2's template renders it (markup-like text on purpose)
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
            "<|im_start|>assistant\n"

    def loglikelihood(self, requests):
        out = []
        for r in requests:
            shift = 0 if self.variant == "ntp" else _h(r.example_id) % 2
            out.append([-float((_h(r.example_id, k) % 7) + (k == shift) * -9) for k in range(len(r.continuations))])
        return out


class ScriptedJudge(BaseJudge):
    """An 'LLM' judge whose replies are scripted: a rating from the answer's hash, hostile markup in some replies,
    one unparsable reply (item 83, turn 2, repeat 1)."""

    name = "scripted-judge"
    kind = "llm"

    def _call(self, req, repeat):
        if req.example_id == "83" and req.turn == 2 and repeat == 1:
            return UNPARSABLE, {"prompt_tokens": 1, "completion_tokens": 1}, None, 1
        if req.example_id == "82" and req.turn == 1:
            return HOSTILE_JUDGE, {"prompt_tokens": 1, "completion_tokens": 1}, None, 1
        answer = req.fields.get("answer") or ""
        rating = 1 + _h(answer, repeat) % 10
        return (f"The answer is fine.\nIt has {len(answer)} characters.\nRating: [[{rating}]]",
                {"prompt_tokens": 1, "completion_tokens": 1}, None, 1)


def _fix_exact_answers(items: list[dict]) -> list[dict]:
    return [{**it, "answer": "RIGHT" if k % 2 == 0 else it["answer"]} for k, it in enumerate(items)]


def make_view_run(root: Path, variants=("ntp", "sftmix"), hostile: bool = True) -> Path:
    """Write a finished run under ``root/run`` (and its task data under ``root/data``); returns the run path."""
    run = root / "run"
    rd = RunDir(run)
    data = write_fixtures(root / "data")
    tasks = {name: load_task(name) for name in TASKS}
    items = {"mt_bench": tasks["mt_bench"].load_records(local=data["mt_bench"]),
             **{n: tasks[n].load_records(limit=LIMIT[n]) for n in ("toy_mcq", "toy_exact")}}
    items["toy_exact"] = _fix_exact_answers(items["toy_exact"])
    rd.mark_version()
    rd.config.parent.mkdir(parents=True, exist_ok=True)
    rd.config.write_text("run:\n  name: viewtest\n  model_name: tiny-llama\n  train_data_name: toy\n"
                         f"  variants: [{', '.join(variants)}]\n  tasks: [{', '.join(TASKS)}]\n", encoding="utf-8")
    for v in variants:
        backend = ScriptedBackend(v if hostile else "plain")
        TrainRecord(variant={"name": v, "mu": 0.0 if v == "ntp" else 0.2},
                    log_history=[{"step": s, "loss": 3.0 / s, **({} if v == "ntp" else {"ntp_loss": 2.8 / s,
                                                                                     "mixup_loss": 0.5 / s})}
                                 for s in range(1, 6)]).write(rd, v)
        for name, task in tasks.items():
            gens = generate_task(task, items[name], backend, model_id=f"viewtest/{v}", out=rd.generations(v, name))
            judged = name == "mt_bench"
            meta = {"model": "tiny-llama", "train_data": "toy", "run": "viewtest", "config_hash": "cafe0123",
                    "seed": 0, "git_commit": "0" * 40, "stage_key": f"key-{v}-{name}"}
            evaluate_task(task, items[name], gens, ScriptedJudge() if judged else None, run_dir=run, variant=v,
                          meta=meta, repeats=2 if judged else 1, progress=False)
    Provenance("cafe0123", "done", {
        "seed": 0, "git": {"commit": "0" * 40, "dirty": False}, "model": {"id": "tiny-llama"},
        "train_data": {"name": "toy", "sha256_16": "feedfacefeedface"},
        "judge": {"kind": "llm", "model": "scripted-judge"}, "backend": {"name": "scripted"},
        "task_data": {n: {"data_hash": t.data_hash, "prompt_hash": t.prompt_hash} for n, t in tasks.items()},
        "variants": {v: {"name": v} for v in variants}}).write(rd)

    plot_loss_curves(run)
    plot_categories(run)
    return run


def write_contamination(run: Path, dirty: dict[str, list[str]]) -> None:
    """A contamination report in the shape of issue 22's ``--json`` output."""
    rd = RunDir(run)
    rd.contamination.write_text(json.dumps({t: {"n_items": 6, "dirty": {i: [0] for i in ids}}
                                            for t, ids in dirty.items()}), encoding="utf-8")

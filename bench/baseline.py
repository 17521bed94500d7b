"""The CI regression's reporting half: a finished run's headline metrics and their comparison with the committed
baseline (``results/ci/baseline.json``). Reads the run directory through :mod:`bench.rundir` only; running the `ci`
experiment is :mod:`bench.regression`'s part."""
from __future__ import annotations

from pathlib import Path

from .rundir import RunDir, TaskSummary, TrainRecord
from .rundir.generations import read_generations

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "ci" / "baseline.json"
# Absolute tolerances per metric (rates in [0, 1], judge scores on 1-10, losses in nats).
TOLERANCES = {"acc": 0.05, "acc_norm": 0.05, "exact_match": 0.05, "overall": 0.25, "turn1": 0.25, "turn2": 0.25,
              "final_loss": 0.05, "answer_loglik": 0.05}


def collect(run_dir: str | Path) -> dict:
    """Headline metrics of a finished run: {variant: {task/metric: value, "final_loss": value}}, plus the
    multiple-choice tasks' mean log-likelihood of the correct option."""
    rd = RunDir(run_dir).check()
    out: dict[str, dict] = {}
    for path in rd.summaries():
        s = TaskSummary.read(path)
        for k, v in s.metrics.items():
            if k in TOLERANCES and v is not None:
                out.setdefault(s.variant, {})[f"{s.task}/{k}"] = v
    # A continuous metric that moves with any change to the model, even when accuracies sit at chance:
    # the mean log-likelihood of the correct option over the multiple-choice items.
    for path in rd.generation_files():
        lls = [r.logliks[r.answer] for r in read_generations(path) if r.logliks is not None]
        if lls:
            out.setdefault(path.parent.name, {})[f"{path.stem}/answer_loglik"] = sum(lls) / len(lls)
    for train in rd.train_records():
        losses = TrainRecord.read(train).losses()
        if losses:
            out.setdefault(train.parent.name, {})["final_loss"] = losses[-1]
    return out


def compare(current: dict, baseline: dict, tolerances: dict = TOLERANCES) -> list[str]:
    """Each metric outside its tolerance (or missing) as one line; empty when the run matches the baseline."""
    problems = []
    for variant, metrics in baseline.items():
        for key, want in metrics.items():
            got = current.get(variant, {}).get(key)
            tol = tolerances[key.split("/")[-1]]
            if got is None:
                problems.append(f"{variant} {key}: missing (baseline {want})")
            elif abs(got - want) > tol:
                problems.append(f"{variant} {key}: {got:.4f} vs baseline {want:.4f} (tolerance ±{tol})")
    return problems

"""CI regression on small models: re-run the `ci` experiment and compare its scores with a committed baseline.

``results/ci/baseline.json`` holds, per (variant, task), the headline metrics of a `bench run --config ci` (read from
its run directory by :mod:`bench.baseline`, the reporting half, which imports no training code), plus each
variant's final training loss, with the tolerances they are checked against. CPU training with fixed seeds is
deterministic on a given torch build, so the tolerances only absorb floating-point drift across machines and
library patch releases; a real change in the recipe or the harness moves the numbers well beyond them.

The baseline also records the ``untrained`` scores: the same model before training, scored on the same items with the
same settings (:func:`score_untrained`). ``tests/test_regression.py`` checks that every variant's baseline beats them
by a stated margin, larger than the tolerance, so a run that learns nothing fails the comparison.

Refresh the baseline deliberately, after a change that is meant to move the numbers, with
``python -m bench.regression refresh --note "why"`` and commit the new file.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from core.io import write_json
from sftmix.presets import resolve_model

from .backends import get_backend
from .baseline import BASELINE, TOLERANCES, collect, compare
from .config import experiment_path, load_run_config
from .generate import generate_task, record_metrics
from .pipeline import run_pipeline
from .scorers import get_scorer
from .tasks import load_task


def run_ci(out_dir: str | Path) -> dict:
    """Run the `ci` experiment into ``out_dir`` and return :func:`collect` of it."""
    cfg = load_run_config(experiment_path("ci"), {"run.out": str(out_dir)})
    run_pipeline(cfg, progress=False)
    return collect(out_dir)


def score_untrained(overrides: dict | None = None) -> dict:
    """The `ci` experiment's model before any training, scored as the run scores its variants (same tasks, items,
    backend and generation settings), on the tasks that need no judge: ``{task/metric: value}``."""
    cfg = load_run_config(experiment_path("ci"), dict(overrides or {}))
    g = cfg.generation
    opts = {"template": cfg.model.template, "batch_size": g.batch_size, "progress": False} if g.backend == "hf" else {}
    backend = get_backend(g.backend, resolve_model(cfg.model.model), **opts)
    override = {k: v for k, v in (("max_new_tokens", g.max_new_tokens), ("temperature", g.temperature))
                if v is not None}
    override["greedy"] = not g.mt_bench_category_temperatures
    out = {}
    for name in cfg.run.tasks:
        task = load_task(name)
        if get_scorer(task.scorer).judged:
            continue
        records = generate_task(task, task.load_records(limit=cfg.run.limit), backend, model_id="untrained",
                                settings=override)
        scores = record_metrics(task, records)
        out.update({f"{name}/{k}": v for k, v in scores.items() if k in TOLERANCES and v is not None})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regression", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check", "refresh"])
    parser.add_argument("--out", help="run directory (default: a temporary one)")
    parser.add_argument("--note", help="refresh: why the numbers changed (kept in the file)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        current = run_ci(args.out or tmp)
    if args.action == "refresh":
        note = "scores of `bench run --config ci`; refresh with `python -m bench.regression refresh --note WHY`"
        write_json(BASELINE, {"tolerances": TOLERANCES, "metrics": current, "untrained": score_untrained(),
                              "note": note + (f". {args.note}" if args.note else "")})
        print(f"baseline written to {BASELINE}")
        return 0
    problems = compare(current, json.loads(BASELINE.read_text())["metrics"])
    print("\n".join(problems) if problems else "CI regression: all metrics within tolerance")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

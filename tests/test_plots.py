"""Plots from a hand-made run directory: non-empty PNG files where the data allows, nothing where it doesn't."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.plots import make_plots, plot_categories, plot_loss_curves
from bench.rundir import RunDir, TaskSummary, TrainRecord
from core.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def make_run(run: Path) -> None:
    rng = np.random.default_rng(0)
    n = 40
    conf = -rng.uniform(1.5, 8.0, n)
    order = np.argsort(-conf, kind="stable")
    split = np.array(["unconfident"] * n, dtype=object)
    split[order[: n // 2]] = "confident"
    rd = RunDir(run)
    rd.dynamics_dir().mkdir(parents=True)
    pd.DataFrame({"id": [str(i) for i in range(n)], "hash": ["h"] * n, "ppl_step_10": -conf, "confidence": conf,
                  "split": split}).to_parquet(rd.confidence(), index=False)
    for variant, mixup in (("ntp", False), ("sftmix", True)):
        hist = []
        for step in range(1, 21):
            h = {"step": step, "loss": 3.0 / step ** 0.3}
            if mixup:
                h.update(ntp_loss=2.8 / step ** 0.3, mixup_loss=1.0 / step ** 0.2)
            hist.append(h)
        hist.append({"step": 20, "train_runtime": 1.0})  # summary entry without a loss: ignored
        TrainRecord(variant={"name": variant}, log_history=hist).write(rd, variant)
        cats = {f"category/{c}": float(rng.uniform(1, 10)) for c in
                ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")}
        TaskSummary(task="mt_bench", kind="chat", variant=variant, metrics={"overall": 5.0, **cats}).write(rd)
        TaskSummary(task="toy_mcq", kind="mcq", variant=variant, metrics={"acc": 0.5}).write(rd)


def test_make_plots_writes_pngs(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    paths = make_plots(run)
    assert sorted(p.name for p in paths) == ["confidence.png", "mt_bench_categories.png", "training_loss.png"]
    for p in paths:
        assert p.parent == run / "plots" and p.stat().st_size > 5_000
        w, h = png_size(p)
        assert w >= 400 and h >= 300
    assert png_size(run / "plots" / "training_loss.png") == (700, 400)
    assert not list((run / "plots").glob(".*tmp"))  # atomic writes leave no temporaries


def test_nothing_to_plot(tmp_path):
    run = tmp_path / "bare"
    TaskSummary(task="toy_mcq", variant="ntp", metrics={"acc": 1.0}).write(RunDir(run))
    assert make_plots(run) == []
    assert plot_loss_curves(run) is None and plot_categories(run) == []
    with pytest.raises(UserError, match="no such run directory"):
        make_plots(tmp_path / "missing")

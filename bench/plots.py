"""PNG plots of a `bench run` directory: confidence histogram, training-loss curves, per-category chat scores.

Figures are drawn with matplotlib's object API on the Agg canvas (no display, no global pyplot state) and written
atomically under ``RUN/plots/``; the run directory is read through :mod:`bench.rundir`. Every function returns the
path it wrote, or None when the run has nothing to plot.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from core.io import atomic_path

from .rundir import RunDir, TaskSummary, TrainRecord, fail

# Loss components logged by the SFTMix trainer beside the total loss, with their line styles.
LOSS_KEYS = {"loss": "-", "ntp_loss": "--", "mixup_loss": ":"}


def _figure(figsize):
    from matplotlib.figure import Figure  # matplotlib costs ~0.3 s to import: only when a figure is drawn

    return Figure(figsize=figsize)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def confidence_figure(run_dir: str | Path):
    """The histogram of the training-dynamics confidences with the median split, from the run's confidence table
    (``dynamics/confidence.parquet``: ``confidence`` and ``split`` per example), or None without one."""
    src = RunDir(run_dir).confidence()
    if not src.exists():
        return None
    try:
        df = pd.read_parquet(src, columns=["confidence", "split"])
    except Exception as e:  # pyarrow raises several types for a damaged file or a missing column
        fail(f"{src}: not a readable confidence table ({type(e).__name__})")
    conf, split = df["confidence"].to_numpy(), df["split"].astype(str).to_numpy()
    fig = _figure((6, 3.5))
    ax = fig.add_subplot()
    for i, label in enumerate(sorted(set(split))):  # confident, unconfident
        ax.hist(conf[split == label], bins=30, alpha=0.7, color=f"C{i}", label=label)
    ax.axvline(float(np.median(conf)), color="k", linestyle="--", label="median")
    ax.set_xlabel("confidence = -mean perplexity over checkpoints")
    ax.set_ylabel("examples")
    ax.set_title(f"Training dynamics ({len(conf)} examples)")
    ax.legend()
    return fig


def plot_confidence(run_dir: str | Path) -> Path | None:
    """``plots/confidence.png``: the confidence histogram with the median split (as ``bench dynamics`` draws it)."""
    fig = confidence_figure(run_dir)
    return None if fig is None else _save(fig, RunDir(run_dir).plot("confidence"))


def _train_logs(run_dir: Path) -> dict[str, list[dict]]:
    logs = {}
    for path in RunDir(run_dir).train_records():
        history = TrainRecord.read(path).log_history
        rows = [h for h in history if "step" in h and any(k in h for k in LOSS_KEYS)]
        if rows:
            logs[path.parent.name] = rows
    return logs


def png_bytes(fig) -> bytes:
    """A figure as PNG bytes, drawn as the saved plots are (for `bench view`, which writes nothing into a run)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def loss_figure(run_dir: str | Path):
    """The training-loss figure of :func:`plot_loss_curves` (not saved), or None without training logs."""
    logs = _train_logs(Path(run_dir))
    if not logs:
        return None
    fig = _figure((7, 4))
    ax = fig.add_subplot()
    for i, (variant, rows) in enumerate(logs.items()):
        color = f"C{i % 10}"
        for key, style in LOSS_KEYS.items():
            pts = [(h["step"], h[key]) for h in rows if h.get(key) is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, linestyle=style, color=color, label=f"{variant} {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss per variant (solid: total; dashed: NTP term; dotted: Mixup term)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_loss_curves(run_dir: str | Path) -> Path | None:
    """``plots/training_loss.png``: loss per logging step for each variant; NTP and Mixup terms dashed/dotted."""
    fig = loss_figure(run_dir)
    return None if fig is None else _save(fig, RunDir(run_dir).plot("training_loss"))


def _category_values(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """task -> variant -> category -> value, from the ``category/<name>`` metrics of every task summary."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for path in RunDir(run_dir).summaries():
        s = TaskSummary.read(path)
        cats = {k.split("/", 1)[1]: float(v) for k, v in s.metrics.items()
                if k.startswith("category/") and v is not None}
        if cats:
            out.setdefault(s.task, {})[s.variant] = cats
    return out


def category_figures(run_dir: str | Path) -> dict:
    """{task: the per-category figure of :func:`plot_categories`} (not saved) for tasks with categories."""
    figs = {}
    for task, by_variant in _category_values(Path(run_dir)).items():
        cats = sorted({c for v in by_variant.values() for c in v})
        variants = list(by_variant)
        width = 0.8 / len(variants)
        x = np.arange(len(cats))
        fig = _figure((max(6, 0.9 * len(cats) + 2), 4))
        ax = fig.add_subplot()
        for i, variant in enumerate(variants):
            ys = [by_variant[variant].get(c, np.nan) for c in cats]
            ax.bar(x + (i - (len(variants) - 1) / 2) * width, ys, width, label=variant, color=f"C{i % 10}")
        ax.set_xticks(x, cats, rotation=30, ha="right")
        ax.set_ylabel("score")
        ax.set_title(f"{task}: score per category")
        ax.legend(fontsize=8)
        figs[task] = fig
    return figs


def category_plot_name(task: str) -> str:
    return f"{task}_categories"


def plot_categories(run_dir: str | Path) -> list[Path]:
    """``plots/<task>_categories.png`` per task with per-category scores (MT-Bench's 8): grouped bars per variant."""
    return [_save(fig, RunDir(run_dir).plot(category_plot_name(task)))
            for task, fig in category_figures(run_dir).items()]


def make_plots(run_dir: str | Path) -> list[Path]:
    """Every plot the run's files allow, written under ``RUN/plots/``; returns the paths written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        fail(f"{run_dir}: no such run directory")
    RunDir(run_dir).check()
    paths = [plot_confidence(run_dir), plot_loss_curves(run_dir), *plot_categories(run_dir)]
    return [p for p in paths if p is not None]

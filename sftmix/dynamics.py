"""Training dynamics: per-example confidence from a reference NTP run, and the median split.

At each of C checkpoints of a one-epoch reference run, every example's response perplexity given its
instruction is computed, Perp_c = exp(mean NLL over response tokens); Conf = -(1/C) Σ_c Perp_c.
The upper half by confidence is "confident" (D^c), the lower half "unconfident" (D^u): over all examples (the
paper; ``dynamics.split: global``), or within each example's source task / data set (``per_source``, an ablation
beyond the paper: on a multi-task set the global median mostly sorts task formats, so "confident/unconfident pairs"
are then mostly pairs of different tasks; per source, each task contributes its own easier and harder half).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

from core.errors import UserError
from core.io import atomic_path
from .constants import CONFIDENT, UNCONFIDENT
from .loss import logit_transform, response_token_nll

log = logging.getLogger("sftmix")


@torch.no_grad()
def response_nll(model, examples: Sequence[dict], collate: Callable, batch_size: int = 16, indices=None) -> np.ndarray:
    """Mean NLL over each example's response tokens (label != -100), no-grad, in length-sorted batches.

    Only response positions go through the LM head, with the model's logit transform, in chunks (no
    ``[tokens, V]`` logits: memory flat in the vocabulary). Returns an array aligned with ``indices``
    (default: all examples).
    """
    indices = list(range(len(examples))) if indices is None else list(indices)
    order = sorted(range(len(indices)), key=lambda j: len(examples[indices[j]]["input_ids"]))
    out = np.full(len(indices), np.nan, dtype=np.float64)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    tr = logit_transform(getattr(model, "config", None))
    try:
        for start in range(0, len(order), batch_size):
            js = order[start : start + batch_size]
            batch = collate([{"input_ids": examples[indices[j]]["input_ids"], "labels": examples[indices[j]]["labels"]} for j in js])
            ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            hidden = model(
                input_ids=ids, attention_mask=batch["attention_mask"].to(device),
                output_hidden_states=True, logits_to_keep=1, use_cache=False,
            ).hidden_states[-1]
            out[js] = response_token_nll(hidden, labels, head, transform=tr).double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def checkpoint_steps(total_steps: int, num_checkpoints: int) -> list[int]:
    """C steps evenly spaced over the run, the last one at its end (fewer if the run is shorter than C)."""
    if total_steps <= 0 or num_checkpoints <= 0:
        raise UserError("the reference run has no training steps: is the data set smaller than one batch?")
    return sorted({max(1, round(total_steps * k / num_checkpoints)) for k in range(1, num_checkpoints + 1)})


class PerplexityCallback(TrainerCallback):
    """Computes every example's response perplexity at the chosen steps of the reference run.

    Under data parallelism each rank computes its share and the shares are gathered, so all ranks end with the same
    table.
    """

    def __init__(self, examples: Sequence[dict], collate: Callable, num_checkpoints: int, batch_size: int, save: bool = False):
        self.examples, self.collate = examples, collate
        self.num_checkpoints, self.batch_size, self.save = num_checkpoints, batch_size, save
        self.steps: list[int] = []
        self.perplexities: dict[int, np.ndarray] = {}

    def on_train_begin(self, args, state, control, **kw):
        self.steps = checkpoint_steps(state.max_steps, self.num_checkpoints)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step in self.steps and state.global_step not in self.perplexities:
            n = len(self.examples)
            rank, world = args.process_index, args.world_size
            mine = list(range(rank, n, world))
            nll = response_nll(model, self.examples, self.collate, self.batch_size, indices=mine)
            if world > 1:
                pairs = gather_object(list(zip(mine, nll.tolist())))
            else:
                pairs = list(zip(mine, nll.tolist()))
            full = np.empty(n)
            for i, v in pairs:
                full[i] = v
            self.perplexities[state.global_step] = np.exp(full)
            control.should_save = control.should_save or self.save
        return control


class OnlineLossRecorder(TrainerCallback):
    """Online dynamics (an option; the paper computes perplexities offline): each example's mean response NLL as
    recorded by the reference run's own training forward pass (``SFTMixTrainer(loss_recorder=...)``), so no
    perplexity passes.

    Each record is tagged with the segment of the epoch it fell in: the C checkpoint steps cut the run into C
    segments. Under data parallelism the records are gathered at the end, so all ranks hold the same table.
    """

    def __init__(self, n_examples: int, num_checkpoints: int):
        self.n, self.num_checkpoints = n_examples, num_checkpoints
        self.steps: list[int] = []
        self.records: list[tuple[int, float, int]] = []  # (example, nll, global step before the update)

    def __call__(self, idx: Sequence[int], nll: Sequence[float], step: int) -> None:
        self.records.extend((int(i), float(v), int(step)) for i, v in zip(idx, nll))

    def on_train_begin(self, args, state, control, **kw):
        self.steps = checkpoint_steps(state.max_steps, self.num_checkpoints)

    def on_train_end(self, args, state, control, **kw):
        if args.world_size > 1:
            self.records = list(gather_object(self.records))
        return control

    def segments(self) -> np.ndarray:
        """Per record, the index of its segment (the first checkpoint step at or after its update)."""
        upd = np.array([r[2] + 1 for r in self.records])
        return np.searchsorted(np.array(self.steps), upd, side="left").clip(max=max(len(self.steps) - 1, 0))


def online_confidence_table(ids: Sequence[str], hashes: Sequence[str], rec: OnlineLossRecorder,
                            sources: Sequence[str | None] | None = None, how: str = "global") -> pd.DataFrame:
    """The confidence table from online records: id, hash, ppl_online, confidence, split (median cut).

    An example seen early in the epoch meets a less trained model than one seen late, so each perplexity is
    divided by the median perplexity of its segment before averaging (over epochs, if the reference run has
    several): Conf = -mean relative perplexity. [INF]: the paper only describes offline perplexities.
    """
    if not rec.records:
        raise ValueError("no training loss was recorded")
    ex = np.array([r[0] for r in rec.records])
    ppl = np.exp(np.array([r[1] for r in rec.records]))
    seg = rec.segments()
    rel = np.empty_like(ppl)
    for k in np.unique(seg):
        sel = seg == k
        rel[sel] = ppl[sel] / np.median(ppl[sel])
    n = len(ids)
    sums, counts, raw = np.zeros(n), np.zeros(n), np.zeros(n)
    np.add.at(sums, ex, rel)
    np.add.at(raw, ex, ppl)
    np.add.at(counts, ex, 1)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} example(s) were never trained on in the reference run")
    df = pd.DataFrame({"id": list(ids), "hash": list(hashes), "ppl_online": raw / counts})
    df["confidence"] = -(sums / counts)
    return _with_splits(df, sources, how)


def split_agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Fraction of examples that land in the same half under two splits."""
    a, b = np.asarray(a), np.asarray(b)
    return float((a == b).mean()) if len(a) else float("nan")


def confidence_table(ids: Sequence[str], hashes: Sequence[str], perplexities: dict[int, np.ndarray],
                     sources: Sequence[str | None] | None = None, how: str = "global") -> pd.DataFrame:
    """The confidence table: id, hash, ppl_step_<s> per checkpoint, confidence, source, split (the median cut
    ``how``: global or per_source), split_global, split_per_source."""
    if not perplexities:
        raise ValueError("no checkpoint's perplexities were computed")
    df = pd.DataFrame({"id": list(ids), "hash": list(hashes)})
    for step in sorted(perplexities):
        df[f"ppl_step_{step}"] = perplexities[step]
    ppl = np.stack([perplexities[s] for s in sorted(perplexities)], axis=1)
    df["confidence"] = -ppl.mean(axis=1)
    return _with_splits(df, sources, how)


SPLIT_MODES = ("global", "per_source")


def _with_splits(df: pd.DataFrame, sources, how: str) -> pd.DataFrame:
    if how not in SPLIT_MODES:
        raise UserError(f"dynamics.split must be one of {', '.join(SPLIT_MODES)}, got {how!r}")
    df["source"] = [None if s is None else str(s) for s in (sources if sources is not None else [None] * len(df))]
    conf = df["confidence"].to_numpy()
    df["split_global"] = median_split(conf)
    df["split_per_source"] = median_split_by(conf, df["source"].tolist())
    df["split"] = df[f"split_{how}"]
    return df


def median_split_by(confidence: np.ndarray, sources: Sequence[str | None]) -> list[str]:
    """:func:`median_split` within each source (examples without one form one group)."""
    out = [UNCONFIDENT] * len(confidence)
    groups: dict[str | None, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    for idx in groups.values():
        for i, label in zip(idx, median_split(np.asarray(confidence)[idx])):
            out[i] = label
    return out


def median_split(confidence: np.ndarray) -> list[str]:
    """Upper half by confidence -> confident, lower half -> unconfident.

    Ranked rather than thresholded so the halves are equal even with ties; with an odd count the middle example
    goes to the unconfident half. Ties are broken by position (stable sort), so the split is deterministic.
    """
    n = len(confidence)
    order = np.argsort(-np.asarray(confidence), kind="stable")
    labels = np.array([UNCONFIDENT] * n, dtype=object)
    labels[order[: n // 2]] = CONFIDENT
    return labels.tolist()


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise UserError(f"confidence file not found: {path}") from None
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise UserError(f"{path}: not a readable parquet confidence table ({type(e).__name__})") from None
    missing = {"id", "hash", "confidence", "split"} - set(df.columns)
    if missing:
        raise UserError(f"{path}: not a confidence table (missing columns {', '.join(sorted(missing))})")
    return df


def labels_for(df: pd.DataFrame, examples: Sequence[dict], path: str | Path = "confidence table",
               how: str | None = None) -> list[str]:
    """Split labels aligned with ``examples``: the table's ``split`` column, or the median cut ``how`` (global /
    per_source, recomputed from the confidences when the table predates that column); refuses a table made from
    different data (hash mismatch)."""
    column = "split" if how is None else f"split_{how}"
    if column not in df.columns:
        if how not in SPLIT_MODES:
            raise UserError(f"confidence split must be one of {', '.join(SPLIT_MODES)}, got {how!r}")
        by_source = {ex["id"]: ex.get("source") for ex in examples}
        sources = [by_source.get(str(i)) for i in df["id"]]
        df = _with_splits(df.copy(), sources, how)
    by_id = dict(zip(df["id"].astype(str), zip(df["hash"], df[column])))
    bad = [ex["id"] for ex in examples if ex["id"] not in by_id or by_id[ex["id"]][0] != ex["hash"]]
    if bad or len(by_id) != len(examples):
        extra = len(by_id) - (len(examples) - len(bad))
        raise UserError(
            f"{path} does not match the training data: {len(bad)} example(s) missing or changed "
            f"(first: {bad[0] if bad else '-'}), {max(extra, 0)} unknown; recompute it with `bench dynamics`"
        )
    return [by_id[ex["id"]][1] for ex in examples]


def plot_histogram(df: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """PNG histogram of confidence with the median split marked."""
    import matplotlib  # ~0.5 s: only the dynamics stage draws, never the training loop that imports this module

    matplotlib.use("Agg")  # before pyplot: no display on a cluster node
    import matplotlib.pyplot as plt  # after the backend is chosen (above)

    conf = df["confidence"].to_numpy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, color in ((CONFIDENT, "tab:blue"), (UNCONFIDENT, "tab:orange")):
        ax.hist(conf[df["split"].to_numpy() == split], bins=30, alpha=0.7, color=color, label=split)
    ax.axvline(float(np.median(conf)), color="k", linestyle="--", label="median")
    ax.set_xlabel("confidence = -mean perplexity over checkpoints")
    ax.set_ylabel("examples")
    ax.set_title(title or f"Training dynamics ({len(conf)} examples)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

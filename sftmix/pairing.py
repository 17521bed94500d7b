"""Paired micro-batches for SFTMix (PAPER.md §1.3).

:class:`PairedBatchSampler` is a *batch* sampler (``DataLoader(ds, batch_sampler=...)``) over dataset
indices. ``batch_size`` is the per-device micro-batch size B (even). Every yielded batch is a list of B
indices laid out so that pair k is ``(batch[k], batch[k + B//2])``; :func:`split_pairs` gives the two halves.

Pairing modes (``mode``):

``conf_unconf`` (SFTMix, default)
    First half confident, second half unconfident. The two pools are shuffled independently every
    epoch, so the pairing is random and re-drawn each epoch. When the pools differ in size (e.g. odd N)
    the smaller one is *recycled*: after a full random pass over it, random extra examples of it (drawn
    without replacement within each round) fill the remaining slots, so every example of both pools is
    seen in an epoch of ``max(|D^c|, |D^u|)`` pairs (up to the ``drop_last`` tail below).
``random``
    B examples from the whole shuffled data set; confidence is ignored, pairs are random.
``conf_conf`` / ``unconf_unconf`` (within-subset ablations)
    The NTP data is kept identical to SFTMix (both pools, every example once per epoch); only *which*
    examples are mixed changes. Each batch comes from one pool (confident-only or unconfident-only
    batches, randomly interleaved every epoch). In ``conf_conf`` the confident-only batches carry the
    Mixup loss (confident-confident pairs) and the unconfident-only batches get NTP alone; in
    ``unconf_unconf`` it is the other way round. The trainer asks :meth:`PairedBatchSampler.batch_mixes`
    (indices) or :func:`mix_pair_mask` (a per-row ``is_confident`` tensor of the collated batch).

``drop_last``: with ``True`` an epoch's trailing incomplete batch is dropped (which examples fall in it is
random each epoch); with ``False`` it is completed by recycling random examples of the pool(s) it draws
from. Either way every batch is full and balanced, which keeps accelerate's ``BatchSamplerShard``
balanced too: it hands whole batches to ranks round-robin (rank r gets batches r, r+n, ...) and, with
``even_batches``, pads the tail with copies of the epoch's first full batches. So every rank's micro-batch
and every gradient-accumulation micro-step is one balanced yielded batch.

Epochs: batches are a pure function of ``(seed, epoch)``; ``set_epoch`` selects the epoch (like
``DistributedSampler``, iterating does not advance it). Same seed + epoch -> same batches, which is what
resuming needs (HF Trainer skips the batches already seen). ``accelerate``'s ``DataLoaderShard.set_epoch``
calls ``batch_sampler.set_epoch`` in one process but, under ``BatchSamplerShard``, only
``batch_sampler.batch_sampler.sampler.set_epoch``; hence ``self.sampler``, a flat index view whose
``set_epoch`` forwards here. One path reaches neither (multi-process resume, where Trainer wraps the shard
in ``SkipBatchSampler`` before calling ``set_epoch``): register :func:`epoch_callback` with the Trainer.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from core.errors import UserError
from .constants import CONFIDENT, PAIRINGS, UNCONFIDENT


def confidence_flags(labels: Sequence) -> np.ndarray:
    """``"confident"``/``"unconfident"`` strings or booleans (is_confident) -> a bool array; else UserError."""
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    values = list(labels)
    if not values:
        raise UserError("confidence labels are empty: nothing to pair")
    out = np.empty(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            out[i] = bool(v)
        elif isinstance(v, str) and v.strip().lower() in (CONFIDENT, UNCONFIDENT):
            out[i] = v.strip().lower() == CONFIDENT
        else:
            raise UserError(f"confidence label #{i}: expected 'confident', 'unconfident' or a bool, got {v!r}")
    return out


def split_pairs(batch_size: int) -> tuple[slice, slice]:
    """Slices selecting the a and b halves of a paired batch: pair k is ``(x[a][k], x[b][k])``."""
    if batch_size < 2 or batch_size % 2:
        raise ValueError(f"a paired batch needs an even size >= 2, got {batch_size}")
    h = batch_size // 2
    return slice(0, h), slice(h, batch_size)


def mix_pair_mask(is_confident: torch.Tensor, pairing: str) -> torch.Tensor:
    """Which pairs of a collated batch carry the Mixup loss, from its per-row ``is_confident`` flags: ``[B//2]`` bool.

    ``conf_unconf``: confident a with unconfident b (every pair of a batch from this sampler);
    ``random``: all pairs; ``conf_conf`` / ``unconf_unconf``: pairs whose two members are both confident / both
    unconfident (so a whole batch of the other pool gets NTP only).
    """
    _check_mode(pairing)
    flags = torch.as_tensor(is_confident, dtype=torch.bool)
    a, b = split_pairs(flags.shape[0])
    ca, cb = flags[a], flags[b]
    if pairing == "random":
        return torch.ones_like(ca)
    if pairing == "conf_unconf":
        return ca & ~cb
    if pairing == "conf_conf":
        return ca & cb
    return ~ca & ~cb


def _check_mode(mode: str) -> None:
    if mode not in PAIRINGS:
        raise UserError(f"unknown pairing {mode!r}; choose from {', '.join(PAIRINGS)}")


def _fill(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """A random permutation of ``pool`` cut or extended to ``n``; extensions are further random rounds (recycling)."""
    parts, total = [], 0
    while total < n:
        parts.append(rng.permutation(pool)[: n - total])
        total += len(parts[-1])
    return np.concatenate(parts) if parts else pool[:0]


class _EpochView(Sampler[int]):
    """Flat index view of a :class:`PairedBatchSampler`; exists so accelerate's ``set_epoch`` reaches it."""

    def __init__(self, parent: "PairedBatchSampler"):
        self.parent = parent

    def set_epoch(self, epoch: int) -> None:
        self.parent.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        for batch in self.parent:
            yield from batch

    def __len__(self) -> int:
        return len(self.parent) * self.parent.batch_size


class PairedBatchSampler(Sampler[list[int]]):
    """Yields balanced, paired micro-batches of dataset indices (see the module docstring for the modes)."""

    def __init__(
        self,
        labels: Sequence,
        batch_size: int,
        mode: str = "conf_unconf",
        seed: int = 0,
        drop_last: bool = True,
    ):
        _check_mode(mode)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 2 or batch_size % 2:
            raise UserError(f"paired batches need an even per-device batch size >= 2, got {batch_size}")
        self.is_confident = confidence_flags(labels)
        self.batch_size = int(batch_size)
        self.mode = mode
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.sampler = _EpochView(self)
        self._conf = np.flatnonzero(self.is_confident)
        self._unconf = np.flatnonzero(~self.is_confident)
        if mode == "conf_unconf" and (len(self._conf) == 0 or len(self._unconf) == 0):
            raise UserError(
                f"pairing 'conf_unconf' needs both confident and unconfident examples, got "
                f"{len(self._conf)} confident and {len(self._unconf)} unconfident"
            )
        if len(self) == 0:
            raise UserError(
                f"{len(self.is_confident)} examples ({len(self._conf)} confident) make no full batch of "
                f"{self.batch_size} in pairing {mode!r} with drop_last; lower the batch size"
            )

    def _n_batches(self, n: int, per_batch: int) -> int:
        return n // per_batch if self.drop_last else math.ceil(n / per_batch)

    def __len__(self) -> int:
        B = self.batch_size
        if self.mode == "conf_unconf":
            return self._n_batches(max(len(self._conf), len(self._unconf)), B // 2)
        if self.mode == "random":
            return self._n_batches(len(self.is_confident), B)
        return self._n_batches(len(self._conf), B) + self._n_batches(len(self._unconf), B)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) batches the next iteration yields."""
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default: the current one), a pure function of ``(seed, epoch)``."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        B, h = self.batch_size, self.batch_size // 2
        if self.mode == "conf_unconf":
            nb = len(self)
            c, u = _fill(rng, self._conf, nb * h), _fill(rng, self._unconf, nb * h)
            return [c[j * h : (j + 1) * h].tolist() + u[j * h : (j + 1) * h].tolist() for j in range(nb)]
        if self.mode == "random":
            nb = self._n_batches(len(self.is_confident), B)
            seq = _fill(rng, np.arange(len(self.is_confident)), nb * B)
            return [seq[j * B : (j + 1) * B].tolist() for j in range(nb)]
        out = []
        for pool in (self._conf, self._unconf):
            nb = self._n_batches(len(pool), B)
            seq = _fill(rng, pool, nb * B)
            out += [seq[j * B : (j + 1) * B].tolist() for j in range(nb)]
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def batch_mixes(self, batch: Sequence[int]) -> bool:
        """Whether a yielded batch (its indices) carries the Mixup loss: False only for the non-mixed pool's
        batches in ``conf_conf`` / ``unconf_unconf``."""
        flags = self.is_confident[np.asarray(batch, dtype=np.int64)]
        if self.mode == "conf_conf":
            return bool(flags.all())
        if self.mode == "unconf_unconf":
            return bool((~flags).all())
        return True


def epoch_callback(sampler: PairedBatchSampler):
    """A ``transformers.TrainerCallback`` that sets the sampler's epoch at each epoch start.

    Needed only where accelerate cannot reach the sampler (multi-process resume); harmless elsewhere.
    """
    # transformers only here: the losses import this module's pair masks and stay free of it
    from transformers import TrainerCallback

    class _PairingEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            # state.epoch is epochs_done + fraction, also when restored from a checkpoint
            sampler.set_epoch(int(state.epoch or 0))

    return _PairingEpoch()

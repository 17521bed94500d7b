"""Near duplicates (optional, ``method: minhash``): an evaluation text is dirty when a training text's word-shingle
set has Jaccard similarity >= ``threshold`` with it. Candidates come from MinHash LSH (``datasketch``: ``pip install
'sftmix-bench[contamination]'``); every candidate's Jaccard is then computed exactly on the two shingle sets, so
nothing below the threshold is reported. LSH can miss a pair just above the threshold (its false negatives are
bounded by its band layout, not zero): the exact n-gram method stays the reference.

Texts are the same fields as the n-gram method's (:mod:`.fields`), normalised by the same lm-eval rules; a text of
fewer than ``n`` words is not compared, in this mode as in the n-gram one.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

from core.errors import UserError

from .fields import train_texts
from .janitor import normaliser
from .ngram import EvalText, Findings


def _shingles(words: list[str], k: int) -> set[str]:
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def _minhash(shingles: set[str], num_perm: int):
    from datasketch import MinHash  # heavy optional dependency

    m = MinHash(num_perm=num_perm, seed=1)
    m.update_batch([s.encode("utf-8") for s in shingles])
    return m


def detect_near(train_rows: Sequence[dict], texts: Sequence[EvalText], n_items: Sequence[int], *, n: int = 13,
                threshold: float = 0.8, shingle: int = 5, num_perm: int = 128,
                progress: Callable[[Iterable], Iterable] = lambda it: it, max_matches: int = 10) -> list[Findings]:
    """Which evaluation items have a near duplicate among the training rows' texts (see the module docstring)."""
    try:
        from datasketch import MinHashLSH  # optional dependency
    except ImportError:
        raise UserError("contamination method minhash needs datasketch: pip install 'sftmix-bench[contamination]' "
                        "(or pip install datasketch)") from None
    if not 0 < threshold <= 1:
        raise UserError(f"contamination threshold must be in (0, 1], got {threshold}")
    norm = normaliser()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    eval_shingles: dict[int, set[str]] = {}
    for t_idx, t in enumerate(texts):
        words = t.norm.split()
        if len(words) < max(n, shingle):
            continue
        eval_shingles[t_idx] = _shingles(words, shingle)
        lsh.insert(t_idx, _minhash(eval_shingles[t_idx], num_perm))
    best: dict[tuple[int, int], dict[int, dict]] = {}  # (set, item) -> row -> its most similar pair of texts
    for r, row in enumerate(progress(train_rows)):
        for name, text in train_texts(row):
            words = norm(text).split()
            if len(words) < max(n, shingle) or not eval_shingles:
                continue
            sh = _shingles(words, shingle)
            for t_idx in lsh.query(_minhash(sh, num_perm)):
                a = eval_shingles[t_idx]
                jaccard = len(a & sh) / len(a | sh)
                if jaccard < threshold:
                    continue
                t = texts[t_idx]
                per_row = best.setdefault((t.set_index, t.item_index), {})
                if jaccard > per_row.get(r, {}).get("similarity", -1.0):
                    per_row[r] = {"row": r, "item_field": t.field, "train_field": name, "similarity": jaccard}
    out = [Findings(k) for k in n_items]
    for (s, i), per_row in sorted(best.items()):
        out[s].dirty[i] = sorted(per_row)
        out[s].matches[i] = [per_row[r] for r in out[s].dirty[i][:max_matches]]
    return out

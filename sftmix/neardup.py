"""Near-duplicate texts: examples that are the same item in all but a few characters.

Two texts are **near-duplicates** when, after :func:`normalise` (Unicode NFKC, case-folded, whitespace collapsed;
punctuation kept, since in dyck_languages or boolean_expressions it is the content), their similarity ratio is at
least ``threshold`` (default :data:`THRESHOLD`, 0.98). The ratio is the normalised Indel similarity over
characters, 2 LCS / (|a| + |b|) (``rapidfuzz.fuzz.ratio`` / 100; difflib's ``SequenceMatcher.ratio`` with an optimal
alignment): a he/she swap in a 160-character sentence scores 0.994, the same 600-character story with another
question 0.99, while two items of one template with other names or numbers score well below 0.98.

Comparing every pair is quadratic, so candidates come from an exact set-similarity join (prefix filtering, Bayardo
et al. 2007) on each text's multiset of character 5-grams: a ratio >= r leaves at most k (1 - r)(|a| + |b|) 5-grams
of either text outside the aligned characters (:func:`max_changed`), so a pair must share one of each text's rarest
5-grams and enough 5-grams in all before rapidfuzz computes its ratio. The result equals the all-pairs comparison,
in near-linear time on real data. Torch-free: the data split (:mod:`sftmix.splits`) and reports both use it.
"""
from __future__ import annotations

import math
import unicodedata
from collections import defaultdict
from typing import Sequence

from rapidfuzz import process
from rapidfuzz.distance import Indel

THRESHOLD = 0.98
K = 5  # characters per shingle
ALL_PAIRS_UP_TO = 4_000_000  # pairs rapidfuzz compares directly (C++, ~0.5 s for 250 x 250 texts of 1,200 chars)


def normalise(text: str) -> str:
    """NFKC, case-folded, runs of whitespace as one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def ratio(a: str, b: str, cutoff: float = 0.0) -> float:
    """The similarity ratio 2 LCS / (|a| + |b|) of two (normalised) texts, 1.0 when identical (0.0 below ``cutoff``)."""
    return float(Indel.normalized_similarity(a, b, score_cutoff=cutoff))


def max_changed(la: int, lb: int, threshold: float, k: int = K) -> float:
    """At most how many k-grams of either text can lie outside difflib's matching blocks when the ratio of texts of
    lengths ``la``, ``lb`` is >= ``threshold``: each of the U = (1 - r)(la + lb) unmatched characters, and each gap
    between blocks (at most U of them), spoils at most k of them."""
    return k * (1 - threshold) * (la + lb)


def _tokens(text: str, k: int = K) -> list[tuple[str, int]]:
    """The text's k-grams as a set of (k-gram, occurrence number): a multiset as a set."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for i in range(max(1, len(text) - k + 1)):
        g = text[i:i + k]
        out.append((g, seen[g]))
        seen[g] += 1
    return out


def _candidates(norm: Sequence[str], threshold: float, others: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Index pairs that can have a ratio >= ``threshold``: pairs i < j within ``norm``, or, with ``others``, pairs
    (i in norm, j in others). Exact filters only: the length ratio, then a shared k-gram among each text's rarest
    ones (prefix filtering: a text of length l keeps all but ~ max_changed(l, l/r) of its k-grams), then the count of
    shared k-grams."""
    texts = list(norm) + (list(others) if others is not None else [])
    docs = [_tokens(s) for s in texts]
    sets = [set(d) for d in docs]
    df: dict[tuple[str, int], int] = defaultdict(int)
    for d in docs:
        for tok in d:
            df[tok] += 1
    n_first = len(norm)
    index: dict[tuple[str, int], list[int]] = defaultdict(list)
    pairs = []
    r = threshold
    for i, d in enumerate(docs):
        d.sort(key=lambda tok: (df[tok], tok))  # rarest first
        longest_partner = len(texts[i]) * (2 - r) / r  # ratio >= r needs min/max length >= r / (2 - r)
        prefix = min(len(d), math.floor(max_changed(len(texts[i]), longest_partner, r)) + 1)
        seen = set()
        for tok in d[:prefix]:
            for j in index[tok]:
                if j in seen:
                    continue
                seen.add(j)
                if others is not None and not (j < n_first <= i):
                    continue
                la, lb = len(texts[i]), len(texts[j])
                if 2 * min(la, lb) < r * (la + lb):
                    continue
                if len(sets[i] & sets[j]) < max(len(sets[i]), len(sets[j])) - max_changed(la, lb, r):
                    continue
                pairs.append((j, i) if others is None else (j, i - n_first))
            index[tok].append(i)
    return pairs


def _scored(qn: Sequence[str], cn: Sequence[str] | None, threshold: float,
            method: str = "auto") -> list[tuple[int, int, float]]:
    """(i, j, ratio) with ratio >= threshold: within ``qn`` (i < j) when ``cn`` is None, else ``qn`` x ``cn``.
    ``method``: ``all`` (rapidfuzz's cdist over every pair), ``prefix`` (the candidate join), ``auto`` (all pairs
    up to :data:`ALL_PAIRS_UP_TO`)."""
    n_pairs = len(qn) * len(qn if cn is None else cn)
    if method == "all" or (method == "auto" and n_pairs <= ALL_PAIRS_UP_TO):
        out = []
        other = qn if cn is None else cn
        for start in range(0, len(qn), 256):  # row blocks: memory stays 256 x len(other)
            block = process.cdist(qn[start:start + 256], other, scorer=Indel.normalized_similarity,
                                  score_cutoff=threshold, dtype="float32", workers=1)
            for bi, j in zip(*(block >= threshold).nonzero()):
                i = start + int(bi)
                if cn is not None or i < j:
                    out.append((i, int(j), ratio(qn[i], other[j])))  # the float64 value, not cdist's float32
        return sorted(out)
    scored = ((i, j, ratio(qn[i], (qn if cn is None else cn)[j], threshold))
              for i, j in _candidates(qn, threshold, cn))
    return sorted((i, j, r) for i, j, r in scored if r >= threshold)


def near_duplicate_pairs(texts: Sequence[str], threshold: float = THRESHOLD,
                         method: str = "auto") -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, ratio)``, i < j, of near-duplicate texts."""
    return _scored([normalise(t) for t in texts], None, threshold, method)


def groups(texts: Sequence[str], threshold: float = THRESHOLD) -> list[int]:
    """A group number per text: near-duplicates (and, transitively, their near-duplicates) share one; the number is
    the index of the group's first text, so it does not depend on anything but the texts and their order."""
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in near_duplicate_pairs(texts, threshold):
        a, b = find(i), find(j)
        parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(texts))]


def matches(queries: Sequence[str], corpus: Sequence[str],
            threshold: float = THRESHOLD) -> dict[int, tuple[int, float]]:
    """For each query with a near-duplicate in ``corpus``: ``query index -> (its most similar corpus index, ratio)``
    (e.g. evaluation items against training rows)."""
    best: dict[int, tuple[int, float]] = {}
    for i, j, r in _scored([normalise(t) for t in queries], [normalise(t) for t in corpus], threshold):
        if i not in best or r > best[i][1]:
            best[i] = (j, r)
    return best

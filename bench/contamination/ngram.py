"""Exact n-gram overlap (lm-eval's rule): an evaluation item is dirty when one of its word n-grams occurs in a
training row. Linear in the data: the evaluation side's n-grams go into a hash index once, then every training
n-gram is looked up in it as the rows stream past; nothing compares items with rows pairwise.

Memory: the index holds one 64-bit hash per distinct evaluation n-gram (Python's ``hash`` of the n-gram string,
a dict of ints to the text holding it), plus the normalised evaluation texts; the training rows are never held as
n-grams. A hash hit is only a candidate: it counts once the n-gram string itself is found in the evaluation text,
so a hash collision can never flag an item: the result is exactly that of comparing the sets of n-gram strings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Sequence

from .fields import train_texts
from .janitor import normaliser

SPAN_CHARS = 600  # a reported span is cut to this many characters (with an ellipsis)
_hash = hash  # the index's hash of an n-gram string (a module global, so tests can force collisions)


@dataclass
class EvalText:
    """One text of one evaluation item: which set (task) and item it belongs to, its field, its words."""

    set_index: int
    item_index: int
    field: str
    text: str  # as given (for spans)
    norm: str  # its normalised words, joined by one space


@dataclass
class Findings:
    """One evaluation set's result: for each dirty item (by position), the training rows that share an n-gram."""

    n_items: int
    dirty: dict[int, list[int]] = field(default_factory=dict)  # item index -> sorted training row indices
    matches: dict[int, list[dict]] = field(default_factory=dict)  # item index -> a few matches with their spans


class NgramIndex:
    """The hashed n-grams of every evaluation text: hash -> the texts holding an n-gram with that hash.

    A hash is only a candidate: :meth:`holders` keeps the texts that hold the n-gram string itself (word-aligned in
    their normalised words), so two strings with one hash can never be confused."""

    def __init__(self, texts: Sequence[EvalText], n: int):
        self.texts, self.n = list(texts), n
        self.index: dict[int, int] = {}  # hash of an n-gram string -> the first text holding such an n-gram
        self.more: dict[int, list[int]] = {}  # hash -> the further texts (repeated n-grams, or another string)
        self._padded = lru_cache(maxsize=4096)(lambda t_idx: f" {self.texts[t_idx].norm} ")
        for t_idx, t in enumerate(self.texts):
            toks = t.norm.split()
            seen: set[int] = set()
            for pos in range(len(toks) - n + 1):
                h = _hash(" ".join(toks[pos:pos + n]))
                first = self.index.setdefault(h, t_idx)
                if first != t_idx and h not in seen:
                    self.more.setdefault(h, []).append(t_idx)
                seen.add(h)

    def __len__(self) -> int:
        """Distinct n-gram hashes held."""
        return len(self.index)

    def holders(self, gram: str) -> list[int]:
        """The evaluation texts that hold the n-gram ``gram`` (normalised words joined by one space)."""
        h = _hash(gram)
        if h not in self.index:
            return []
        return [t for t in (self.index[h], *self.more.get(h, ())) if f" {gram} " in self._padded(t)]

    def scan(self, words: list[str]) -> Iterable[str]:
        """The n-grams of ``words`` (a training text's normalised words) whose hash an evaluation n-gram has:
        candidates, which :meth:`holders` confirms."""
        n, index, h, join = self.n, self.index, _hash, " ".join  # locals: this loop runs once per training word
        for pos in range(len(words) - n + 1):
            gram = join(words[pos:pos + n])
            if h(gram) in index:
                yield gram


def detect(train_rows: Sequence[dict], texts: Sequence[EvalText], n_items: Sequence[int], n: int = 13,
           progress: Callable[[Iterable], Iterable] = lambda it: it, max_matches: int = 10) -> list[Findings]:
    """Which evaluation items share a word ``n``-gram with which training rows.

    ``texts`` are every evaluation set's texts (see :mod:`.fields`), ``n_items`` the item count of each set. Returns
    one :class:`Findings` per set: its dirty items with every training row index (0-based, in ``train_rows``' order)
    and, for the first ``max_matches`` of those rows, the longest matched span on each side."""
    norm = normaliser()
    index = NgramIndex(texts, n)
    rows_of_gram: dict[str, list[int]] = {}  # candidate n-gram -> the training rows holding it
    # no evaluation text has n words: nothing can match, and the rows need not be read
    for r, row in enumerate(progress(train_rows if len(index) else [])):
        for _, text in train_texts(row):
            for gram in index.scan(norm(text).split()):
                rows = rows_of_gram.setdefault(gram, [])
                if not rows or rows[-1] != r:
                    rows.append(r)
    out = [Findings(k) for k in n_items]
    hit_rows: dict[tuple[int, int], set[int]] = {}
    for gram, rows in rows_of_gram.items():
        for t_idx in index.holders(gram):
            t = index.texts[t_idx]
            hit_rows.setdefault((t.set_index, t.item_index), set()).update(rows)
    texts_of: dict[tuple[int, int], list[EvalText]] = {}
    for t in index.texts:
        if (t.set_index, t.item_index) in hit_rows:
            texts_of.setdefault((t.set_index, t.item_index), []).append(t)
    for (s, i), rows in sorted(hit_rows.items()):
        out[s].dirty[i] = sorted(rows)
        out[s].matches[i] = [{"row": r, **longest_match(texts_of[(s, i)], train_rows[r], n, norm)}
                             for r in out[s].dirty[i][:max_matches]]
    return out


# ---------------------------------------------------------------------------------------------------- spans
def _word_spans(text: str, norm: Callable[[str], str]) -> list[tuple[int, int]]:
    """Character span of each normalised word of ``text`` (a whitespace token that normalises to nothing, such as
    a lone dash, is no word: the normalised text has no word there either)."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text) if norm(m.group(0))]


def _cut(text: str) -> str:
    return text if len(text) <= SPAN_CHARS else text[:SPAN_CHARS - 1] + "…"


def _runs(positions: Iterable[int], n: int) -> list[tuple[int, int]]:
    """Merged word ranges [start, end) covered by n-grams starting at ``positions``."""
    runs: list[list[int]] = []
    for p in sorted(set(positions)):
        if runs and p <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], p + n)
        else:
            runs.append([p, p + n])
    return [(a, b) for a, b in runs]


def longest_match(item_texts: Sequence[EvalText], row: dict, n: int, norm: Callable[[str], str]) -> dict:
    """The longest run of shared words between one item's texts and one training row that shares an n-gram with
    it: the field on each side, the run's length in words, and the run as it reads on each side (original case and
    punctuation)."""
    best: dict = {}
    row_texts = list(train_texts(row))
    row_grams = []
    for _, text in row_texts:
        toks = norm(text).split()
        grams: dict[str, list[int]] = {}
        for p in range(len(toks) - n + 1):
            grams.setdefault(" ".join(toks[p:p + n]), []).append(p)
        row_grams.append(grams)
    for t in item_texts:
        toks = t.norm.split()
        for (name, text), grams in zip(row_texts, row_grams):
            hits = {p: grams[g] for p in range(len(toks) - n + 1) if (g := " ".join(toks[p:p + n])) in grams}
            if not hits:
                continue
            a, b = max(_runs(hits, n), key=lambda ab: ab[1] - ab[0])
            if b - a <= best.get("words", 0):
                continue
            # the training side of that run: the longest run of the row positions its n-grams occur at
            ra, rb = max(_runs([q for p in range(a, b - n + 1) for q in hits.get(p, ())], n),
                         key=lambda ab: ab[1] - ab[0])
            ispans, rspans = _word_spans(t.text, norm), _word_spans(text, norm)
            best = {"item_field": t.field, "train_field": name, "words": b - a,
                    "span": _cut(t.text[ispans[a][0]:ispans[b - 1][1]]),
                    "train_span": _cut(text[rspans[ra][0]:rspans[rb - 1][1]])}
    return best

"""Exact n-gram overlap (lm-eval's rule): an evaluation item is dirty when one of its word n-grams occurs in a
training row. Linear in the data: the evaluation side's n-grams go into a hash index once, then every training
n-gram is looked up in it as the rows stream past; nothing compares items with rows pairwise.

Memory: the index holds one 64-bit hash per distinct evaluation n-gram (Python's ``hash`` of the n-gram string,
a dict of ints), plus the normalised evaluation texts; the training rows are never held as n-grams. A hash hit
is confirmed by comparing the n-gram strings themselves, so a hash collision can never flag an item: the result is
exactly that of comparing the sets of n-gram strings.
"""
from __future__ import annotations

import re
from array import array
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
    norm: str  # normalised


@dataclass
class Findings:
    """One evaluation set's result: for each dirty item (by position), the training rows that share an n-gram."""

    n_items: int
    dirty: dict[int, list[int]] = field(default_factory=dict)  # item index -> sorted training row indices
    matches: dict[int, list[dict]] = field(default_factory=dict)  # item index -> a few matches with their spans


class NgramIndex:
    """The hashed n-grams of every evaluation text, with where each first occurs and which texts hold it."""

    def __init__(self, texts: Sequence[EvalText], n: int):
        self.texts, self.n = list(texts), n
        self.index: dict[int, int] = {}  # hash of the n-gram string -> gram id
        self.first_text = array("l")  # gram id -> the text it first occurs in, and where (word position)
        self.first_pos = array("l")
        self.more_texts: dict[int, list[int]] = {}  # gram id -> further texts holding it (rare: repeated n-grams)
        self.collisions: dict[str, int] = {}  # n-gram string -> gram id, for strings whose hash another one has
        self._words = lru_cache(maxsize=4096)(lambda t_idx: self.texts[t_idx].norm.split())
        for t_idx, t in enumerate(self.texts):
            toks = t.norm.split()
            seen: set[int] = set()
            for pos in range(len(toks) - n + 1):
                gram = " ".join(toks[pos:pos + n])
                gid = self._find(gram)
                if gid is None:
                    gid = len(self.first_text)
                    self.first_text.append(t_idx)
                    self.first_pos.append(pos)
                    h = _hash(gram)
                    if h in self.index:
                        self.collisions[gram] = gid
                    else:
                        self.index[h] = gid
                elif gid not in seen and self.first_text[gid] != t_idx:
                    self.more_texts.setdefault(gid, []).append(t_idx)
                seen.add(gid)

    def __len__(self) -> int:
        return len(self.first_text)

    def gram(self, gid: int) -> str:
        """The n-gram string of a gram id."""
        pos = self.first_pos[gid]
        return " ".join(self._words(self.first_text[gid])[pos:pos + self.n])

    def _find(self, gram: str) -> int | None:
        """The gram id of an n-gram string, confirmed string to string; None when no evaluation text has it."""
        gid = self.index.get(_hash(gram))
        if gid is not None and self.gram(gid) == gram:
            return gid
        return self.collisions.get(gram) if self.collisions else None

    def holders(self, gid: int) -> list[int]:
        """Every evaluation text holding gram ``gid``."""
        return [self.first_text[gid], *self.more_texts.get(gid, ())]

    def scan(self, words: list[str]) -> Iterable[int]:
        """Gram ids of the evaluation n-grams that occur in ``words`` (a training text's normalised words)."""
        n, index, find = self.n, self.index, self._find
        for pos in range(len(words) - n + 1):
            gram = " ".join(words[pos:pos + n])
            if _hash(gram) in index or self.collisions:
                gid = find(gram)
                if gid is not None:
                    yield gid


def detect(train_rows: Sequence[dict], texts: Sequence[EvalText], n_items: Sequence[int], n: int = 13,
           progress: Callable[[Iterable], Iterable] = lambda it: it, max_matches: int = 10) -> list[Findings]:
    """Which evaluation items share a word ``n``-gram with which training rows.

    ``texts`` are every evaluation set's texts (see :mod:`.fields`), ``n_items`` the item count of each set. Returns
    one :class:`Findings` per set: its dirty items with every training row index (0-based, in ``train_rows``' order)
    and, for the first ``max_matches`` of those rows, the longest matched span on each side."""
    norm = normaliser()
    index = NgramIndex(texts, n)
    rows_of_gram: dict[int, list[int]] = {}
    for r, row in enumerate(progress(train_rows)):
        for _, text in train_texts(row):
            for gid in index.scan(norm(text).split()):
                rows = rows_of_gram.setdefault(gid, [])
                if not rows or rows[-1] != r:
                    rows.append(r)
    out = [Findings(k) for k in n_items]
    hit_rows: dict[tuple[int, int], set[int]] = {}
    for gid, rows in rows_of_gram.items():
        for t_idx in index.holders(gid):
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

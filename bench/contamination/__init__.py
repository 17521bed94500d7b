"""Contamination: which evaluation items the training data already holds (lm-eval's decontamination rules).

An evaluation item is **dirty** when one of its word n-grams (``n = 13`` by default) occurs in a training row,
after both sides went through lm-eval's ``Janitor`` normalisation (:mod:`.janitor`). The texts compared on each
side are listed in :mod:`.fields` (per task, in its YAML's ``contamination:``). :mod:`.ngram` is the exact method
(a hash index of the evaluation n-grams, one pass over the training rows), :mod:`.minhash` the optional
near-duplicate mode, :mod:`.check` runs a check and builds each task's report (stored through
:class:`bench.rundir.ContaminationReport`; tables read it to score the clean items apart, :mod:`bench.tables`).
"""
from .check import METHOD_VERSION, METHODS, Settings, check, dirty_rows, summary_lines
from .fields import TRAIN_FIELDS, item_fields, item_texts, train_texts
from .janitor import RULES, implementation, normalise, word_ngrams, words

__all__ = ["METHODS", "METHOD_VERSION", "RULES", "Settings", "TRAIN_FIELDS", "check",
           "dirty_rows", "implementation", "item_fields", "item_texts", "normalise", "summary_lines",
           "train_texts", "word_ngrams", "words"]

"""lm-eval's decontamination text rules: its ``Janitor`` normalisation and its word n-grams.

lm-evaluation-harness decides that an evaluation document overlaps a training set when one of its word n-grams
(``n = 13``) occurs in a training document, after both went through ``Janitor.normalize_string``: ASCII letters
lower-cased, every character of ``string.punctuation`` deleted (other characters, non-ASCII letters included, kept as
they are), then ``str.split()`` on whitespace and the n-grams joined with single spaces
(``lm_eval/decontamination/janitor.py`` and ``decontaminate.py``). We use lm-eval's own module when the ``lm_eval``
package is installed: ``janitor.py`` needs only the standard library, so it is loaded from its file, without
``lm_eval``'s dependencies or its package ``__init__`` (``pip install --no-deps lm_eval`` is enough). Without it, the
same three rules below stand in (:data:`PORT`); the tests check that both give identical n-grams, and every report
names the one that ran (:func:`implementation`).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import string
from functools import lru_cache
from typing import Callable, Iterator

from bench.provenance import versions
from core.io import package_file

PORT = "bench port of lm_eval Janitor.normalize_string + word_ngrams"
RULES = ("lm-eval Janitor: ASCII letters lower-cased, string.punctuation deleted, split on whitespace, word n-grams "
         "joined by one space")

_TABLE = str.maketrans(string.ascii_lowercase + string.ascii_uppercase, string.ascii_lowercase * 2,
                       string.punctuation)


def _port_normalise(text: str) -> str:
    return text.translate(_TABLE)


@lru_cache(maxsize=1)
def _janitor_module():
    """lm-eval's ``decontamination/janitor.py`` loaded from its file (None when lm_eval is not installed).

    Importing it prints a warning that its optional C++ helper is missing (stdout and a traceback on stderr);
    we only use its pure-Python normalisation, so that noise is swallowed."""
    path = package_file("lm_eval", "decontamination/janitor.py")
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location("bench_contamination_lm_eval_janitor", path)
    module = importlib.util.module_from_spec(spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            spec.loader.exec_module(module)
        module.Janitor().normalize_string("x")  # the API we rely on is there
    except Exception:  # an lm_eval whose janitor no longer looks like this: fall back to the port, and say so
        return None
    return module


@lru_cache(maxsize=1)
def _functions() -> tuple[Callable[[str], str], str]:
    mod = _janitor_module()
    if mod is None:
        return _port_normalise, PORT
    return mod.Janitor().normalize_string, f"lm_eval {versions(['lm_eval'])['lm_eval']} decontamination/janitor.py"


def implementation() -> str:
    """Which normalisation runs: lm-eval's own Janitor (with its version) or :data:`PORT`."""
    return _functions()[1]


def normaliser() -> Callable[[str], str]:
    """The normalisation function (lm-eval's ``Janitor().normalize_string`` when available)."""
    return _functions()[0]


def normalise(text: str) -> str:
    """``text`` normalised by lm-eval's Janitor rules (see the module docstring)."""
    return _functions()[0](text)


def words(text: str) -> list[str]:
    """The normalised words of ``text``: what the n-grams are made of."""
    return _functions()[0](text).split()


def word_ngrams(text: str, n: int) -> Iterator[str]:
    """The word n-grams of ``text`` after normalisation, as lm-eval forms them (none when it has < n words)."""
    toks = words(text)
    return (" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1))

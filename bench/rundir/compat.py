"""The run-directory format's version and every compatibility rule for reading older records, in one place.

Rules (docs/RUNDIR.md "Version"):

- ``VERSION`` is the layout of docs/RUNDIR.md. A change that an older reader would misread (a renamed field, a new
  meaning, a moved file) bumps it; readers refuse versions outside ``MIN_VERSION``..``VERSION`` with one line.
- Within a version a record may gain a field. Older files without it read with the default in ``ABSENT`` below,
  and a writer omits a new optional field whose value is None, so files that never had it keep their bytes.
- A field stored as an explicit null is written back as null (:func:`split`), so reading and re-writing a record
  never changes its file.
- Fields a record does not know (written by a newer bench of the same version, or by a scorer) are kept and
  written back unchanged (each record's ``extra``).
- Item values stored one line per judge repeat (before repeats were combined at scoring) are combined on reading
  (:func:`combine_repeats`, the median of each item's values, as the scorers do now).
- A task summary without ``metric_units`` (written before the scorer's units were recorded) has the units the
  tables used to infer from its kind (:func:`legacy_metric_units`).
- A task summary whose ``metric_units`` do not say which item values stand behind each metric (``items``, written
  since the scorer's ``Metric.items``) has the headline metric, item selection and first judged turn that reporting
  used to infer from its kind (:func:`legacy_headline`, :func:`legacy_items`, :func:`legacy_turn_base`).
"""
from __future__ import annotations

import re
from statistics import median
from typing import Any, Iterable

FORMAT = "sftmix-bench run directory"
VERSION = 1  # the layout of docs/RUNDIR.md
MIN_VERSION = 1  # the oldest version this bench reads

# record -> {field: the value an older file without the field reads as}
ABSENT: dict[str, dict[str, Any]] = {
    # scores/<v>/<task>.json: "kind" and the judge fields predate mcq/exact tasks and unjudged scorers
    "TaskSummary": {"kind": "chat", "judge": "none", "judge_kind": "none", "n_failed": 0, "repeats": 1},
    # scores/<v>/<task>.items.jsonl: mcq/exact items had no turn; "category" came with the per-category tables
    "ItemValue": {"turn": None, "category": None, "repeats": None},
    # judgments/<v>/<task>.jsonl: "failure" (the cause of a failed verdict) came with the failure counts; form,
    # config, attempts, latency, cached and meta with the judge configs; "variant" is absent in bench
    # judge-calibrate's judgments.jsonl
    "Verdict": {"failure": None, "error": None, "form": "", "config": "", "attempts": 0, "latency_s": 0.0,
                "cached": False, "meta": {}, "variant": None, "repeat": 0,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0}},
    # judge_log.jsonl: local judges log no temperature / max_tokens
    "JudgeLogEntry": {"temperature": None, "max_tokens": None, "form": "", "attempt": 1, "error": None,
                      "usage": None, "raw": None, "latency_s": None},
}


def split(names: Iterable[str], d: dict) -> tuple[dict, dict]:
    """(the record's own fields, everything else) of a record's JSON object. An own field stored as an explicit
    null stays in the rest too, so that writing the record back keeps the null (files stay identical)."""
    names = set(names) - {"extra"}
    own = {k: v for k, v in d.items() if k in names}
    return own, {k: v for k, v in d.items() if k not in names or v is None}


def with_absent(record: str, own: dict) -> dict:
    """``own`` with the defaults of ``ABSENT[record]`` for the fields an older file lacks (or stored as null)."""
    for k, default in ABSENT[record].items():
        if own.get(k) is None:
            own[k] = dict(default) if isinstance(default, dict) else default
    return own


# Kinds whose every metric was stored as a fraction (0-1) and shown in percent before summaries said so.
LEGACY_FRACTION_KINDS = ("mcq", "exact")
# Metrics stored in percent whose item values are fractions (AlpacaEval's win rate, MT-Bench pairwise's).
LEGACY_PERCENT_METRICS = ("win_rate", "win_rate_adjusted")


def legacy_metric_units(kind: str, metrics: Iterable[str]) -> dict[str, tuple[str, bool]]:
    """metric -> (unit, stored as a fraction) for a summary that predates ``metric_units``: every metric of an
    mcq/exact summary is a fraction shown in percent; a win rate (and, in an MT-Bench pairwise summary, every
    metric) is in percent already; anything else has no unit."""
    metrics = list(metrics)
    if kind in LEGACY_FRACTION_KINDS:
        return {k: ("%", True) for k in metrics}
    pairwise = "win_rate_adjusted" in metrics
    return {k: ("%", False) if pairwise or k in LEGACY_PERCENT_METRICS else ("", False) for k in metrics}


def combine_repeats(values: list[float]) -> float:
    """One item's value from several lines of an older file (one per judge repeat): their median."""
    return float(median(values))


def legacy_headline(kind: str, metric_shown: str | None, metrics: Iterable[str]) -> str:
    """The headline metric of a summary that predates item selections: the MCQ metric shown (``acc`` when none),
    exact match, the scorer's ``metric_shown``, else the first of overall / adjusted win rate / win rate / score."""
    metrics = list(metrics)
    if kind == "mcq":
        return metric_shown or "acc"
    if kind == "exact":
        if metric_shown and metric_shown in metrics:  # the scorer's primary metric (exact_match, f1, ...)
            return metric_shown
        return "exact_match" if "exact_match" in metrics or "em" not in metrics else "em"
    if metric_shown and metric_shown in metrics:  # another kind's scorer names its primary metric
        return metric_shown
    for k in ("overall", "win_rate_adjusted", "win_rate", "score"):  # win_rate_adjusted: MT-Bench pairwise
        if k in metrics:
            return k
    plain = [k for k in metrics if "/" not in k]
    return plain[0] if plain else "overall"


def legacy_items(kind: str, metric_shown: str | None, metrics: Iterable[str], key: str) -> str:
    """Which item values stood behind metric ``key`` of a summary that predates item selections ("all", "turn",
    "category" or "none", as ``MetricUnit.items``): an MCQ summary's items are the metric shown's; an exact one's
    exact match's; an MT-Bench pairwise one's the adjusted win rate's (and its categories'); a chat summary's
    items stand behind overall / win rate / score / the headline, ``turn<N>`` and ``category/<c>``."""
    metrics = list(metrics)
    if kind == "mcq":
        return "all" if key == (metric_shown or "acc") else "none"
    if kind == "exact":
        return "all" if key in ("exact_match", "em", metric_shown) else "none"
    headline = legacy_headline(kind, metric_shown, metrics)
    if "win_rate_adjusted" in metrics and key != headline and not key.startswith("category/"):
        return "none"  # a pairwise summary has no 1-10 turn scores: its items stand for the adjusted win rate only
    if re.fullmatch(r"turn(\d+)", key):
        return "turn"
    if key.startswith("category/"):
        return "category"
    return "all" if key in ("overall", "win_rate", "score", headline) else "none"


def legacy_turn_base(kind: str) -> int:
    """The number of the first turn in the judgments and item values of a summary that predates ``turn_base``:
    chat scorers numbered judged turns from 1 (FastChat), every other kind from 0 (as generations records do)."""
    return 1 if kind == "chat" else 0

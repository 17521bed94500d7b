"""Exact-match scoring of generated short answers: normalised string match, and a numeric match.

Normalisation (SQuAD style): lower-case, drop punctuation and the articles a/an/the, collapse whitespace.
``em`` compares the whole normalised answer; ``numeric`` compares the last number in the generation with the
gold number (when the gold answer is a number), tolerant to formatting like "1,000" or "3.0".
"""
from __future__ import annotations

import re
import string

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def to_number(text: str) -> float | None:
    nums = _NUM.findall(text)
    if not nums:
        return None
    try:
        return float(nums[-1].replace(",", ""))
    except ValueError:
        return None


def score(prediction: str, answer: str) -> dict:
    """{'em': 0/1, 'numeric': 0/1 or None when the gold answer is not a number}."""
    first_line = prediction.strip().split("\n")[0] if prediction.strip() else ""
    em = float(normalize(prediction) == normalize(answer) or normalize(first_line) == normalize(answer))
    gold = to_number(answer) if _NUM.fullmatch(answer.strip().replace(" ", "")) else None
    numeric = None if gold is None else float(to_number(prediction) == gold)
    return {"em": em, "numeric": numeric}


PRIMARY_METRIC = "em"


def aggregate(records: list[dict]) -> dict:
    out = {"n": len(records), "primary": PRIMARY_METRIC}
    for key in ("em", "numeric"):
        vals = [r[key] for r in records if r.get(key) is not None]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out
VERSION = "1"  # bump when the scoring changes: the score stage key includes it

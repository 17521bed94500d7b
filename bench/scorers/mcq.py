"""Multiple-choice scoring: option log-likelihoods (lm-eval style), or generate-then-parse the letter.

``acc`` is the argmax of each option's summed log-probability; ``acc_norm`` divides that sum by the option's
UTF-8 byte length first (lm-eval divides by characters; identical for ASCII options). Tables show ``acc``: our
options are single letters (" A") or yes/no/maybe, where length normalisation changes little or nothing, and
``acc`` is what lm-eval reports for PubMedQA. Both are always stored.
"""
from __future__ import annotations

import re


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # first index on ties, deterministic


def score_logliks(logliks: list[float], continuations: list[str], answer: int) -> dict:
    """Prediction and correctness from one item's option log-likelihoods."""
    normed = [ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(logliks, continuations)]
    pred, pred_norm = argmax(logliks), argmax(normed)
    return {"pred": pred, "pred_norm": pred_norm, "acc": float(pred == answer), "acc_norm": float(pred_norm == answer)}


PRIMARY_METRIC = "acc"


def parse_letter(text: str, n_choices: int, labels: str = "ABCDEFGHIJ") -> int | None:
    """The option index a generated answer names ("B", "(B) ...", "Answer: B.", "the answer is (B)"), or None.

    Tried in order: an explicit "answer is X" / "Answer: X"; a leading letter; a letter followed by "." or ")";
    any standalone capital letter in range (last resort: "A" as an article can fool it).
    """
    valid = labels[:n_choices]
    letter = rf"\(?([{valid}])\)?(?![A-Za-z0-9])"
    for pattern in (rf"(?i:answer\s*(?:is|:)?)\s*{letter}", rf"^\s*\(?([{valid}])(?:[.):]|\s*$)",
                    rf"(?<![A-Za-z])\(?([{valid}])[.)]", rf"(?<![A-Za-z]){letter}"):
        m = re.search(pattern, text)
        if m:
            return valid.index(m.group(1))
    return None


def aggregate(records: list[dict]) -> dict:
    """Mean acc / acc_norm over per-item records (each carrying 'acc' and, for loglik scoring, 'acc_norm')."""
    n = len(records)
    out = {"n": n, "primary": PRIMARY_METRIC}
    for key in ("acc", "acc_norm"):
        vals = [r[key] for r in records if r.get(key) is not None]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out
VERSION = "1"  # bump when the scoring changes: the score stage key includes it

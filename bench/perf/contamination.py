"""The contamination check at Alpaca scale (`bench perf --only contamination`): ``contam_rows`` synthetic training
rows of ~``contam_words`` words against ``contam_items`` MCQ items (a 120-word question, four 6-word options),
made here from a seeded Zipf vocabulary with capitals and punctuation; every 100th item's question is planted in
some training row (whole, or one 13-word window of it, with other case and punctuation), so the run also checks
that exactly those items are flagged. Timed: :func:`bench.contamination.check` end to end (index, scan, spans,
reports), wall and CPU seconds; memory: the RSS high-water mark above the memory held once the data existed
(the index, the scan and the reports).
"""
from __future__ import annotations

import time

import numpy as np

from bench.contamination import Settings, check
from bench.tasks import Task

from .meter import Memory

TARGET_S = 60.0  # the bound: 52k rows x 8.6k items within a minute on the 2-core machine
PLANT_EVERY = 100


def _texts(rng, vocab, n_texts: int, mean_words: int) -> list[str]:
    lengths = np.maximum(1, rng.poisson(mean_words, n_texts))
    p = 1.0 / np.arange(1, len(vocab) + 1)
    idx = rng.choice(len(vocab), size=int(lengths.sum()), p=p / p.sum())
    words = vocab[idx].tolist()
    out, k = [], 0
    for n in lengths.tolist():
        out.append(" ".join(words[k:k + n]))
        k += n
    return out


def synthetic(rows: int, items: int, words: int, seed: int = 0) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(training rows, MCQ items, planted item id -> training row index)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(20000)]
    for i in range(0, len(vocab), 7):
        vocab[i] = vocab[i].capitalize()
    for i in range(3, len(vocab), 9):
        vocab[i] += ",.;:?!"[i % 6]
    vocab = np.array(vocab, dtype=object)
    ins = _texts(rng, vocab, rows, max(1, words // 5))
    inp = _texts(rng, vocab, rows, max(1, words * 2 // 15))
    out = _texts(rng, vocab, rows, words - words // 5 - words * 2 // 15 * 2 // 5)
    train = [{"instruction": a, "input": b if k % 5 < 2 else "", "output": c}
             for k, (a, b, c) in enumerate(zip(ins, inp, out))]
    questions = _texts(rng, vocab, items, 120)
    options = _texts(rng, vocab, items * 4, 6)
    evals = [{"id": f"q{i}", "question": q, "choices": options[4 * i:4 * i + 4], "answer": 0, "category": None,
              "extra": {}} for i, q in enumerate(questions)]
    planted = {}
    for i in range(0, items, PLANT_EVERY):
        r = int(rng.integers(rows))
        if r in planted.values():
            continue
        q = evals[i]["question"].split()
        copy = " ".join(q) if i % 200 == 0 else " ".join(q[10:23])  # whole, or exactly one 13-gram
        train[r]["output"] = train[r]["output"] + " " + copy.upper()
        planted[evals[i]["id"]] = r
    return train, evals, planted


def contamination_worker(spec: dict) -> dict:
    """Time one check of the synthetic data (see the module docstring)."""
    shape = spec["shape"]
    mem = Memory("cpu")
    rows, items, planted = synthetic(shape["contam_rows"], shape["contam_items"], shape["contam_words"])
    task = Task(name="perf_mcq", kind="mcq", scorer="mcq", data={"local": "synthetic"}, contamination=None)
    n_words = sum(len(t.split()) for r in rows for t in (r["instruction"], r["input"], r["output"]))
    static = mem.reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    reports = check(rows, {"source": "synthetic"}, [(task, items)], Settings(), progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = mem.peak()
    dirty = {k: v["rows"] for k, v in reports["perf_mcq"]["dirty"].items()}
    return {"seconds": seconds, "cpu_s": cpu, "rows": len(rows), "items": len(items), "train_words": n_words,
            "n_dirty": len(dirty), "n_planted": len(planted),
            "exact": dirty == {k: [r] for k, r in planted.items()},
            "peak_mb": peak - static, "data_mb": static - mem.base, "total_peak_mb": peak}


def contamination_target(sections: dict) -> list[dict]:
    """The wall-time bound, with the planted items found exactly (n/a when not run)."""
    r = sections.get("contamination", {}).get("check")
    if r is None:
        return []
    name = "contamination check, training rows x items, wall (1 process)"
    if "error" in r:
        return [{"target": name, "ratio": None, "value": None, "bound": f"<= {TARGET_S:g} s", "status": "n/a",
                 "margin": None}]
    ok = r["seconds"] <= TARGET_S and r["exact"]
    return [{"target": f"contamination check, {r['rows']:,} rows x {r['items']:,} items, wall (1 process)",
             "ratio": None, "value": f"{r['seconds']:.1f} s, peak +{r['peak_mb']:.0f} MB, planted "
                                     f"{r['n_planted']} found {'exactly' if r['exact'] else 'NOT exactly'}",
             "bound": f"<= {TARGET_S:g} s", "status": "PASS" if ok else "MISS",
             "margin": r["seconds"] / TARGET_S - 1.0}]


def contamination_lines(rep) -> list[str]:
    """The report's section."""
    r = rep.sections.get("contamination", {}).get("check")
    if not r:
        return []
    lines = ["", "## Contamination check (lm-eval 13-gram rule, synthetic Alpaca-scale data)", ""]
    if "error" in r:
        return lines + [f"n/a: {r['error']}"]
    la = r.get("load_avg")
    return lines + [
        f"{r['rows']:,} training rows ({r['train_words'] / r['rows']:.0f} words each on average, "
        f"{r['train_words']:,} words) against {r['items']:,} MCQ items (a ~120-word question and four options): "
        f"{r['seconds']:.1f} s wall, {r['cpu_s']:.1f} s CPU, one process (a hash index of the items' n-grams, one "
        f"pass over the rows). Memory: +{r['peak_mb']:.0f} MB above the {r['data_mb']:.0f} MB the data itself "
        f"holds (total RSS peak {r['total_peak_mb']:.0f} MB). Planted overlaps: {r['n_planted']}, flagged "
        f"{r['n_dirty']}, {'exactly the planted ones' if r['exact'] else 'NOT exactly the planted ones'}."
        + (f" Load average {la[0]:.1f}–{la[1]:.1f}." if la else "")]

"""The learning-rate choice of a study: each rate's pooled NTP validation accuracy, the best, per task -> tuning.md.

    python scripts/study_tuning.py OUT_DIR RATE=RUN_DIR [RATE=RUN_DIR ...]     (prints the chosen rate)

RUN_DIR: a `bench run` of the study's tune.yaml at that learning rate (variant ntp, seed 0, validation tasks).
Reads each run's task summaries (scores/ntp@s0/*.json); the best pooled accuracy wins, ties to the first listed.
"""
import json
import sys
from pathlib import Path


def pooled(run_dir: str) -> tuple[float, int, list[tuple[str, float, int]]]:
    """(pooled accuracy, items, per task (name, acc, items)) of NTP at seed 0."""
    total = n = 0
    per = []
    for f in sorted(Path(run_dir, "scores", "ntp@s0").glob("*.json")):
        s = json.loads(f.read_text())
        k, acc = s["n_items"], s["metrics"]["acc"]
        total, n = total + acc * k, n + k
        per.append((s["task"].split(":", 1)[1], acc, k))
    if not n:
        raise SystemExit(f"{run_dir}: no scores/ntp@s0/*.json: has the tuning run finished?")
    return total / n, n, per


def main(argv: list[str]) -> str:
    out, specs = Path(argv[0]), [a.split("=", 1) for a in argv[1:]]
    rows = [(lr, *pooled(d)) for lr, d in specs]
    best = max(rows, key=lambda r: r[1])  # first listed on ties
    lines = ["# Learning-rate selection for study-bbh (validation bucket only)", "",
             "Config: `tune.yaml` (the study's data, model and training; NTP alone, seed 0; scored on "
             "`bbh_validation:<task>`, every validation item of the 10 training tasks). Commands:", "", "```"]
    lines += [f"HF_HUB_OFFLINE=1 bench run --config results/study/study-bbh/tune.yaml --out runs/tune-lr{lr} "
              f"learning_rate={lr}" for lr, *_ in rows]
    lines += [f"python scripts/study_tuning.py results/study/study-bbh "
              + " ".join(f"{lr}=runs/tune-lr{lr}" for lr, *_ in rows), "```", "",
              "| learning rate | NTP validation accuracy (pooled items) | items |", "|---|---:|---:|"]
    lines += [f"| {lr} | {100 * acc:.2f} % | {n} |" for lr, acc, n, _ in rows]
    lines += ["", f"Chosen: **{best[0]}** (NTP's best pooled validation accuracy: the baseline is tuned; SFTMix runs at "
              "the same rate with the paper's alpha and mu). Per task (acc %; items):", "",
              "| task | " + " | ".join(f"lr {lr}" for lr, *_ in rows) + " |", "|---|" + "---:|" * len(rows)]
    for i, (task, _, k) in enumerate(rows[0][3]):
        lines.append(f"| {task} ({k}) | " + " | ".join(f"{100 * r[3][i][1]:.1f}" for r in rows) + " |")
    (out / "tuning.md").write_text("\n".join(lines) + "\n")
    return best[0]


if __name__ == "__main__":
    print(main(sys.argv[1:]))

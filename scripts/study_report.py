"""Write a study's report folder from a `bench run` directory trained over seeds (run.seeds).

    python scripts/study_report.py RUN_DIR OUT_DIR [--baseline ntp] [--group NAME=task,task ...] [--command TEXT]

OUT_DIR gets: ``table.md`` / ``table.csv`` (each task's headline metric: the baseline's mean over seeds, and for
every other variant its mean, the mean difference from the baseline, a two-level paired bootstrap 95% CI —
seeds, then items — and the per-seed differences), the same for task groups pooled item by item; ``deltas.png``
(per-task differences with CIs); ``confidence.png`` (each seed's reference-run confidence histogram with the
median split); ``answers.md`` / ``answers.json`` (multiple-choice tasks: how often each variant picks each option,
over seeds and items, beside the gold answers' distribution: answer-prior shifts show there);
``confidence-by-source.md`` (per source task, the share of its training rows in the confident half under the global
median and the per-source one); ``provenance.json`` (the run's own provenance, plus this report's inputs);
``command.txt``. With ``--near-duplicates``: ``near-duplicates.md``, every evaluated item that has a near-duplicate
training row (sftmix.neardup: ratio >= 0.98), whatever task the row comes from; this check loads the training data
and the tasks (sftmix's data loading), the rest reads the run directory only.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml

from bench.bootstrap import two_level_bootstrap
from bench.rundir import RunDir, read_jsonl, split_seed
from bench.tables import headline_metric, item_values, load_results
from bench.tasks import load_task
from sftmix.data import load_rows, to_messages
from sftmix.neardup import THRESHOLD, matches

N_RESAMPLES = 2000


def _per_seed_items(score, metric: str, prefix: str = "") -> dict[int, dict]:
    return {seed: {(prefix, *k): v for k, v in (item_values(s, metric) or {}).items()}
            for seed, s in (score.seeds or {}).items()}


def _row(name: str, base: dict[int, dict], other: dict[int, dict]) -> dict:
    seeds = sorted(set(base) & set(other))
    pairs = {k: (base[k], other[k]) for k in seeds if base[k] and other[k]}
    if not pairs:
        return {}
    r = two_level_bootstrap(pairs, n_resamples=N_RESAMPLES, seed=0)
    mean_b = float(np.mean([np.mean(list(base[k].values())) for k in pairs]))
    mean_o = float(np.mean([np.mean(list(other[k].values())) for k in pairs]))
    return {"task": name, "baseline": mean_b, "variant_mean": mean_o, "delta": r["delta"], "lo": r["lo"],
            "hi": r["hi"], "n_items_per_seed": r["n"] // max(r["n_seeds"], 1), "n_seeds": r["n_seeds"],
            "per_seed": {str(k): v for k, v in r["per_seed"].items()},
            "significant": bool(r["lo"] > 0 or r["hi"] < 0)}


def _config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def build(run_dir: Path, baseline: str, groups: dict[str, list[str]]) -> tuple[list[dict], list[str], list[str]]:
    scores = [s for s in load_results([run_dir]) if s.seeds]
    tasks = sorted({s.task for s in scores}, key=lambda t: min(s.task_rank for s in scores if s.task == t))
    variants = list(dict.fromkeys(s.variant for s in scores))
    order = [v if isinstance(v, str) else v.get("name") for v in _config(run_dir).get("run", {}).get("variants", [])]
    variants.sort(key=lambda v: order.index(v) if v in order else len(order))  # the run config's order
    by = {(s.variant, s.task): s for s in scores}
    rows = []
    for v in variants:
        if v == baseline:
            continue
        for t in tasks:
            b, o = by.get((baseline, t)), by.get((v, t))
            if b is None or o is None:
                continue
            metric = b.metric_shown or headline_metric(b)
            row = _row(t, _per_seed_items(b, metric), _per_seed_items(o, metric))
            if row:
                rows.append({"variant": v, "metric": metric, **row})
        for g, members in groups.items():  # pooled: every item of every member task, per seed
            base: dict[int, dict] = {}
            other: dict[int, dict] = {}
            metrics = []
            for t in members:
                b, o = by.get((baseline, t)), by.get((v, t))
                if b is None or o is None:
                    break
                metric = b.metric_shown or headline_metric(b)
                metrics.append(metric)
                for k, d in _per_seed_items(b, metric, t).items():
                    base.setdefault(k, {}).update(d)
                for k, d in _per_seed_items(o, metric, t).items():
                    other.setdefault(k, {}).update(d)
            else:
                row = _row(g, base, other)
                if row:
                    rows.append({"variant": v, "metric": "/".join(sorted(set(metrics))) + " (pooled items)", **row})
    return rows, tasks, variants


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def write_table(rows: list[dict], baseline: str, out: Path) -> None:
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "task", "metric", f"{baseline}_mean", "variant_mean", "delta", "ci_lo", "ci_hi",
                    "n_seeds", "n_items_per_seed", "per_seed_delta", "ci_excludes_0"])
        for r in rows:
            w.writerow([r["variant"], r["task"], r["metric"], f"{r['baseline']:.3f}", f"{r['variant_mean']:.3f}",
                        f"{r['delta']:.3f}", f"{r['lo']:.3f}", f"{r['hi']:.3f}", r["n_seeds"], r["n_items_per_seed"],
                        " ".join(f"s{k}:{v:+.2f}" for k, v in r["per_seed"].items()), r["significant"]])
    lines = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        lines += [f"### {v} − {baseline}", "",
                  f"| task | metric | {baseline} | {v} | Δ | 95% CI | per-seed Δ | n/seed |",
                  "|---|---|---:|---:|---:|---|---|---:|"]
        for r in (r for r in rows if r["variant"] == v):
            mark = " *" if r["significant"] else ""
            lines.append(f"| {r['task']} | {r['metric']} | {_fmt(r['baseline'])} | {_fmt(r['variant_mean'])} | "
                         f"{r['delta']:+.1f}{mark} | [{r['lo']:+.1f}, {r['hi']:+.1f}] | "
                         + " ".join(f"{x:+.1f}" for x in r["per_seed"].values()) + f" | {r['n_items_per_seed']} |")
        lines.append("")
    lines.append(f"Means over seeds, in percent. Δ = variant − {baseline}; CI = two-level paired bootstrap "
                 f"({N_RESAMPLES} resamples: seeds, then items within each drawn seed; bench.bootstrap."
                 "two_level_bootstrap); * = the CI excludes 0. Pooled rows put every item of the group's tasks "
                 "together (item-weighted).")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot_deltas(rows: list[dict], baseline: str, out: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot takes its backend when first imported

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(tasks) + 1.5))
    h = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        rs = {r["task"]: r for r in rows if r["variant"] == v}
        ys = [j + (i - (len(variants) - 1) / 2) * h for j, t in enumerate(tasks) if t in rs]
        d = [rs[t]["delta"] for t in tasks if t in rs]
        lo = [rs[t]["delta"] - rs[t]["lo"] for t in tasks if t in rs]
        hi = [rs[t]["hi"] - rs[t]["delta"] for t in tasks if t in rs]
        ax.errorbar(d, ys, xerr=[lo, hi], fmt="o", ms=4, capsize=2, label=v)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(tasks)), tasks)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference from {baseline} (points; 95% two-level bootstrap CI)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "deltas.png", dpi=120)
    plt.close(fig)


def plot_confidence(run_dir: Path, out: Path) -> bool:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot takes its backend when first imported

    tables = sorted(run_dir.glob("dynamics*/confidence.parquet"))
    if not tables:
        return False
    fig, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3), squeeze=False)
    for ax, p in zip(axes[0], tables):
        df = pd.read_parquet(p)
        ppl = -df["confidence"].to_numpy()  # confidence = -(mean response perplexity over checkpoints)
        cut = float(np.median(ppl))
        ax.hist(np.log10(ppl), bins=40, color="#4c72b0")
        ax.axvline(math.log10(cut), color="red", lw=1, label=f"median split (ppl {cut:.2f})")
        ax.set_title(p.parent.name, fontsize=9)
        ax.set_xlabel("log10 mean response perplexity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "confidence.png", dpi=120)
    plt.close(fig)
    return True


def answer_distribution(run_dir: Path, variants: list[str], tasks: list[str]) -> dict:
    """task -> {"gold": {option: share}, variant: {option: share}, "n": items over seeds} for multiple-choice tasks,
    an option named by its continuation ("(A)", "Yes"); from the generation records of every seed."""
    rd = RunDir(run_dir)
    out: dict = {}
    for t in tasks:
        rows: dict = {}
        for vdir in sorted((run_dir / "generations").iterdir()) if (run_dir / "generations").is_dir() else []:
            base, _ = split_seed(vdir.name)
            if base not in variants:
                continue
            path = rd.generations(vdir.name, t)
            if not path.is_file():
                continue
            for r in read_jsonl(path):
                if r.get("logliks") is None or r.get("pred") is None:
                    continue
                conts = r["continuations"]
                rows.setdefault(base, []).append(conts[int(r["pred"])])
                if base == variants[0]:
                    rows.setdefault("gold", []).append(conts[int(r["answer"])])
        if rows:
            out[t] = {k: _shares(v) for k, v in rows.items()}
            out[t]["n"] = len(rows.get("gold", []))
    return out


def _shares(picks: list[str]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for p in picks:
        counts[p] = counts.get(p, 0) + 1
    return {k: counts[k] / len(picks) for k in sorted(counts)}


def write_answers(dist: dict, variants: list[str], out: Path) -> None:
    lines = ["# Answer distributions", "",
             "How often each variant picks each option (the option with the highest log-likelihood), over all seeds "
             "and evaluated items, beside the gold answers' distribution. TV = total-variation distance from the "
             "gold distribution (0: the same shares; a model that always picks one option of a balanced binary task "
             "scores 50). A difference between variants that comes with a shift of these shares is at least partly a "
             "change of answer prior, not of knowledge.", ""]
    for t, d in dist.items():
        options = sorted({o for k, v in d.items() if k != "n" for o in v})
        lines += [f"## {t} ({d['n']} answers per variant: items x seeds)", "",
                  "| | " + " | ".join(options) + " | TV from gold |", "|---|" + "---:|" * (len(options) + 1)]
        for k in ["gold"] + [v for v in variants if v in d]:
            tv = 0.5 * sum(abs(d[k].get(o, 0) - d["gold"].get(o, 0)) for o in options)
            lines.append(f"| {k} | " + " | ".join(f"{100 * d[k].get(o, 0):.0f}" for o in options)
                         + f" | {'' if k == 'gold' else f'{100 * tv:.0f}'} |")
        lines.append("")
    (out / "answers.md").write_text("\n".join(lines) + "\n")
    (out / "answers.json").write_text(json.dumps(dist, indent=1) + "\n")


def confidence_by_source(run_dir: Path, out: Path) -> bool:
    tables = sorted(run_dir.glob("dynamics*/confidence.parquet"))
    frames = [pd.read_parquet(p).assign(seed=p.parent.name) for p in tables]
    frames = [f for f in frames if "source" in f.columns and f["source"].notna().any()]
    if not frames:
        return False
    df = pd.concat(frames)
    lines = ["# Confident share per source task", "",
             "Share of each task's training rows in the confident half, over the reference runs of all seeds: under "
             "the global median (the paper's split: `sftmix`, `sftmix-random` ignores it) and under the per-task "
             "median (`sftmix-stratified`). A global split near 0 or 100 % for a task means the global "
             "'confident/unconfident' pairs are mostly pairs of different tasks.", "",
             "| source task | rows x seeds | confident (global median) | confident (per-task median) |",
             "|---|---:|---:|---:|"]
    for src, g in df.groupby("source"):
        lines.append(f"| {src} | {len(g)} | {100 * (g['split_global'] == 'confident').mean():.0f} % | "
                     f"{100 * (g['split_per_source'] == 'confident').mean():.0f} % |")
    (out / "confidence-by-source.md").write_text("\n".join(lines) + "\n")
    return True


def near_duplicates(run_dir: Path, out: Path) -> int:
    """Every evaluated item with a near-duplicate training row; returns how many. Loads the run's training data and
    tasks as the run did (limit, limit_mode, local data)."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    run, data = cfg["run"], cfg["data"]
    rows = load_rows(data["data"], split=data.get("split", "train"), limit=data.get("max_examples"))
    texts = [" ".join(m["content"] for m in to_messages(r) if m["role"] != "assistant") for r in rows]
    lines = ["# Evaluated items with a near-duplicate training row", "",
             f"Training rows: {len(rows)} ({data['data']}). A near-duplicate: normalised texts with a similarity "
             f"ratio >= {THRESHOLD} (sftmix.neardup), whatever task the row comes from. Evaluated items: the ones "
             "the run scored (its limit and limit_mode).", "", "| task | items | with a near-duplicate row |",
             "|---|---:|---:|"]
    found, details = 0, []
    for name in run["tasks"]:
        task = load_task(name)
        items = task.load_records(limit=run.get("limit"), local=(run.get("data_paths") or {}).get(name),
                                  limit_mode=run.get("limit_mode", "first"))
        prompts = [it.get("question") or "" for it in items]
        hits = matches(prompts, texts)
        found += len(hits)
        lines.append(f"| {name} | {len(items)} | {len(hits)} |")
        details += [f"- {name} item {items[i]['id']}: training row {rows[j].get('id', j)} (ratio {r:.3f})"
                    for i, (j, r) in sorted(hits.items())]
    lines += ["", f"{found} evaluated item(s) in all." + (" They are:" if details else ""), ""] + details
    (out / "near-duplicates.md").write_text("\n".join(lines) + "\n")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--baseline", default="ntp")
    ap.add_argument("--group", action="append", default=[], help="NAME=task,task: a pooled row")
    ap.add_argument("--command", default="", help="the exact command that made the run (command.txt)")
    ap.add_argument("--near-duplicates", action="store_true",
                    help="list evaluated items with a near-duplicate training row (loads the data)")
    a = ap.parse_args(argv)
    groups = {g.split("=", 1)[0]: g.split("=", 1)[1].split(",") for g in a.group}
    a.out_dir.mkdir(parents=True, exist_ok=True)
    rows, tasks, variants = build(a.run_dir, a.baseline, groups)
    if not rows:
        print(f"{a.run_dir}: no task has the baseline and another variant over seeds yet", file=sys.stderr)
        return 2
    write_table(rows, a.baseline, a.out_dir)
    plot_deltas(rows, a.baseline, a.out_dir)
    plot_confidence(a.run_dir, a.out_dir)
    write_answers(answer_distribution(a.run_dir, variants, tasks), variants, a.out_dir)
    confidence_by_source(a.run_dir, a.out_dir)
    n_dups = near_duplicates(a.run_dir, a.out_dir) if a.near_duplicates else None
    prov = json.loads((a.run_dir / "provenance.json").read_text()) if (a.run_dir / "provenance.json").exists() else {}
    prov["report"] = {"script": "scripts/study_report.py", "baseline": a.baseline, "groups": groups,
                      "n_resamples": N_RESAMPLES, "tasks": tasks, "variants": variants,
                      "near_duplicate_items": n_dups}
    (a.out_dir / "provenance.json").write_text(json.dumps(prov, indent=1, default=str) + "\n")
    (a.out_dir / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    if a.command:
        (a.out_dir / "command.txt").write_text(a.command.rstrip() + "\n")
    print(f"wrote {a.out_dir}/table.md, table.csv, deltas.png, confidence.png, answers.md, provenance.json"
          + ("" if n_dups is None else f", near-duplicates.md ({n_dups} evaluated items with a near-duplicate row)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

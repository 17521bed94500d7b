"""Small data files in each benchmark's real schema (the datasets themselves are not shipped offline).

``write_fixtures(dir)`` writes one file per task and returns {task name: path}; each file has
``N_ROWS[task]`` rows. Schemas follow the hub datasets the task YAMLs name:
GBaker/MedQA-USMLE-4-options-hf, the original MedQA US/test.jsonl (5 options), openlifescienceai/medmcqa,
qiaojin/PubMedQA pqa_labeled, cais/mmlu (parquet, as the hub serves it), tatsu-lab/alpaca_eval's
alpaca_eval_gpt4_baseline.json (a JSON list) and FastChat's MT-Bench question.jsonl.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

ORGANS = ["heart", "liver", "lung", "kidney", "brain", "spleen", "skin"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def medqa_4(n: int) -> list[dict]:
    return [{"id": f"test-{i:05d}", "sent1": f"A patient has pain in the {ORGANS[i % 7]}. Which organ is affected?",
             "sent2": "", "ending0": ORGANS[i % 7], "ending1": ORGANS[(i + 1) % 7], "ending2": ORGANS[(i + 2) % 7],
             "ending3": ORGANS[(i + 3) % 7], "label": (i * 3) % 4} for i in range(n)]


def medqa_5(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        options = {k: ORGANS[(i + j) % 7] for j, k in enumerate("ABCDE")}
        key = "ABCDE"[i % 5]
        rows.append({"question": f"Question {i}: which organ filters blood?", "answer": options[key],
                     "options": options, "meta_info": "step1" if i % 2 else "step2&3", "answer_idx": key})
    return rows


def medmcqa(n: int) -> list[dict]:
    return [{"id": f"mm{i:04x}-id", "question": f"Which vitamin is number {i}?", "opa": "Vitamin A",
             "opb": "Vitamin B12", "opc": "Vitamin C", "opd": "Vitamin D", "cop": i % 4, "choice_type": "single",
             "exp": "Because.", "subject_name": ["Anatomy", "Pharmacology"][i % 2], "topic_name": None}
            for i in range(n)]


def pubmedqa(n: int) -> list[dict]:
    return [{"pubid": 21645374 + i, "question": f"Do statins reduce risk number {i}?",
             "context": {"contexts": [f"Background {i}.", f"Results {i}."], "labels": ["BACKGROUND", "RESULTS"],
                         "meshes": ["Humans"], "reasoning_required_pred": ["yes"], "reasoning_free_pred": ["yes"]},
             "long_answer": "They may.", "final_decision": ["yes", "no", "maybe"][i % 3]} for i in range(n)]


def pubmedqa_bigbio(n: int) -> list[dict]:
    """bigbio/pubmed_qa ``pubmed_qa_labeled_fold0_source`` rows (lm-eval's pubmedqa dataset)."""
    return [{"QUESTION": f"Do statins reduce risk number {i}?", "CONTEXTS": [f"Background {i}.", f"Results {i}."],
             "LABELS": ["BACKGROUND", "RESULTS"], "MESHES": ["Humans"], "YEAR": "2011",
             "reasoning_required_pred": "yes", "reasoning_free_pred": "yes",
             "final_decision": ["yes", "no", "maybe"][i % 3], "LONG_ANSWER": "They may."} for i in range(n)]


def mmlu(n: int) -> list[dict]:
    subjects = ["anatomy", "clinical_knowledge", "medical_genetics"]
    return [{"question": f"MMLU question {i}?", "subject": subjects[i % 3],
             "choices": [f"opt{i}a", f"opt{i}b", f"opt{i}c", f"opt{i}d"], "answer": (i + 1) % 4} for i in range(n)]


def alpaca_eval(n: int) -> list[dict]:
    return [{"instruction": f"Write a haiku about the {ORGANS[i % 7]}.", "output": f"A haiku about {ORGANS[i % 7]}.",
             "generator": "gpt4_turbo", "dataset": ["helpful_base", "koala", "oasst"][i % 3]} for i in range(n)]


def mt_bench(n: int) -> list[dict]:
    cats = ["writing", "math", "coding", "roleplay"]
    rows = []
    for i in range(n):
        row = {"question_id": 81 + i, "category": cats[i % 4],
               "turns": [f"First question {i}: name an organ.", f"Second question {i}: now name another."]}
        if cats[i % 4] in ("math", "roleplay"):  # FastChat's file carries `reference` on some rows only
            row["reference"] = [f"ref {i} turn 1", f"ref {i} turn 2"]
        rows.append(row)
    return rows


N_ROWS = {"medqa_4": 6, "medqa_5": 5, "medmcqa": 8, "pubmedqa": 6, "mmlu_medical": 9, "alpaca_eval": 5,
          "mt_bench": 4}


def write_fixtures(directory: str | Path) -> dict[str, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = {
        "medqa_4": _jsonl(d / "medqa4_test.jsonl", medqa_4(N_ROWS["medqa_4"])),
        "medqa_5": _jsonl(d / "US_test.jsonl", medqa_5(N_ROWS["medqa_5"])),
        "medmcqa": _jsonl(d / "medmcqa_dev.jsonl", medmcqa(N_ROWS["medmcqa"])),
        "pubmedqa": _jsonl(d / "pqa_labeled.jsonl", pubmedqa(N_ROWS["pubmedqa"])),
        "mt_bench": _jsonl(d / "question.jsonl", mt_bench(N_ROWS["mt_bench"])),
    }
    paths["mmlu_medical"] = d / "mmlu_test.parquet"
    pd.DataFrame(mmlu(N_ROWS["mmlu_medical"])).to_parquet(paths["mmlu_medical"])
    paths["alpaca_eval"] = d / "alpaca_eval_gpt4_baseline.json"
    paths["alpaca_eval"].write_text(json.dumps(alpaca_eval(N_ROWS["alpaca_eval"]), indent=1), encoding="utf-8")
    return paths

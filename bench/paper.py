"""The SFTMix paper's reported numbers, as data, for the "paper" rows of our tables.

Source: Yuxin Xiao, Shujian Zhang, Wenxuan Zhou, Marzyeh Ghassemi, Sanqiang Zhao, "SFTMix: Elevating Language
Model Instruction Tuning with Mixup Recipe", arXiv 2410.05248 — as transcribed in the project's PAPER.md
(``../shared/PAPER.md``, beside the repository) §4.1, §4.3 and §4.4. Only recovered cells are listed (PAPER.md's
"?" cells are absent, never guessed). Units are the paper's
display units: MT-Bench scores 1-10, AlpacaEval 2 and accuracies in percent. Metric keys are ``task/metric`` with
our task and metric names, so a paper row lines up with the columns of our own rows.
"""
from __future__ import annotations

import re

CITATION = "Xiao et al. 2024, SFTMix, arXiv 2410.05248"
LABEL = "paper (Xiao et al. 2024)"

_MAIN_SRC = "arXiv 2410.05248, main table (instruction following, Alpaca-52K rows); PAPER.md §4.1"
_HEALTH_SRC = "arXiv 2410.05248, healthcare table (MedAlpaca-263K SFT, accuracy %); PAPER.md §4.3"
_ROLE_SRC = "arXiv 2410.05248, ablation on the role of Mixup (Llama-3.1-8B, Alpaca-52K); PAPER.md §4.4"


def _row(layout, train_data, model, variant, source, settings=None, **metrics):
    row = {"layout": layout, "train_data": train_data, "model": model, "variant": variant, "source": source,
           "metrics": {k.replace("__", "/"): v for k, v in metrics.items()}}
    if settings:  # the loss weights the paper used for this row (the mixup-role layout shows their roles)
        row["settings"] = settings
    return row


# The paper's loss weights in §4.4 (NTP weight, Mixup weight μ): its own, not this project's variant registry.
_ROLE_SETTINGS = {"ntp": {"ntp_weight": 1.0, "mu": 0.0}, "sftmix": {"ntp_weight": 1.0, "mu": 0.2},
                  "mixup-equal": {"ntp_weight": 1.0, "mu": 1.0}, "mixup-only": {"ntp_weight": 0.0, "mu": 1.0}}


PAPER_ROWS: list[dict] = [
    # §4.1 main table: MT-Bench single/multi-turn were not recovered, only overall.
    _row("main", "Alpaca-52K", "Llama-3.1-8B", "ntp", _MAIN_SRC,
         mt_bench__overall=4.3625, alpaca_eval__win_rate=4.0714, alpaca_eval__lc_win_rate=8.6528),
    _row("main", "Alpaca-52K", "Llama-3.1-8B", "sftmix", _MAIN_SRC,
         mt_bench__overall=4.5825, alpaca_eval__win_rate=4.9031, alpaca_eval__lc_win_rate=10.3195),
    _row("main", "Alpaca-52K", "Mistral-7B-v0.1", "ntp", _MAIN_SRC,
         mt_bench__overall=4.6163, alpaca_eval__win_rate=4.3560, alpaca_eval__lc_win_rate=9.1759),
    _row("main", "Alpaca-52K", "Mistral-7B-v0.1", "sftmix", _MAIN_SRC,
         mt_bench__overall=4.9100, alpaca_eval__win_rate=4.5386, alpaca_eval__lc_win_rate=9.4994),
    _row("main", "Alpaca-52K", "Qwen-2.5-14B", "ntp", _MAIN_SRC,
         mt_bench__overall=6.1930, alpaca_eval__win_rate=7.0764, alpaca_eval__lc_win_rate=13.9508),
    _row("main", "Alpaca-52K", "Qwen-2.5-14B", "sftmix", _MAIN_SRC,
         mt_bench__overall=6.5247, alpaca_eval__win_rate=7.8810, alpaca_eval__lc_win_rate=15.0235),
    # §4.3 healthcare table; MMLU-medical is not a paper column.
    _row("health", "MedAlpaca-263K", "Llama-3.1-8B", "ntp", _HEALTH_SRC,
         medqa_4__acc=59.31, medqa_5__acc=54.52, pubmedqa__acc=75.40, medmcqa__acc=53.65, average=60.72),
    _row("health", "MedAlpaca-263K", "Llama-3.1-8B", "sftmix", _HEALTH_SRC,
         medqa_4__acc=60.88, medqa_5__acc=55.38, pubmedqa__acc=77.80, medmcqa__acc=54.15, average=62.05),
    _row("health", "MedAlpaca-263K", "Mistral-7B-v0.1", "ntp", _HEALTH_SRC,
         medqa_4__acc=49.10, medqa_5__acc=44.62, pubmedqa__acc=75.40, medmcqa__acc=48.15, average=54.32),
    _row("health", "MedAlpaca-263K", "Mistral-7B-v0.1", "sftmix", _HEALTH_SRC,
         medqa_4__acc=51.77, medqa_5__acc=45.72, pubmedqa__acc=77.40, medmcqa__acc=49.03, average=55.98),
    # §4.4 role of Mixup.
    _row("mixup-role", "Alpaca-52K", "Llama-3.1-8B", "ntp", _ROLE_SRC, _ROLE_SETTINGS["ntp"],
         mt_bench__overall=4.3625, alpaca_eval__lc_win_rate=8.6528),
    _row("mixup-role", "Alpaca-52K", "Llama-3.1-8B", "sftmix", _ROLE_SRC, _ROLE_SETTINGS["sftmix"],
         mt_bench__overall=4.5825, alpaca_eval__lc_win_rate=10.3195),
    _row("mixup-role", "Alpaca-52K", "Llama-3.1-8B", "mixup-equal", _ROLE_SRC, _ROLE_SETTINGS["mixup-equal"],
         mt_bench__overall=4.4062, alpaca_eval__lc_win_rate=8.2856),
    _row("mixup-role", "Alpaca-52K", "Llama-3.1-8B", "mixup-only", _ROLE_SRC, _ROLE_SETTINGS["mixup-only"],
         mt_bench__overall=4.5062, alpaca_eval__lc_win_rate=7.2964),
]

# Normalised spellings under which runs may name the paper's models and training sets (HF ids, short names).
_ALIASES = {
    "Llama-3.1-8B": {"llama318b", "metallama318b", "llama31_8b"},
    "Mistral-7B-v0.1": {"mistral7bv01", "mistral7b"},
    "Qwen-2.5-14B": {"qwen2514b"},
    "Alpaca-52K": {"alpaca52k", "alpaca", "alpacadata", "alpacadatacleaned"},
    "MedAlpaca-263K": {"medalpaca263k", "medalpaca", "medicalmeadow"},
}


def normalise(name: str | None) -> str:
    """Comparable form of a model / dataset name: drop the hub org and file path, lowercase, alphanumerics only."""
    if not name:
        return ""
    name = str(name).rstrip("/").split("/")[-1].lower()
    name = re.sub(r"\.(jsonl?|parquet|csv)$", "", name)
    return re.sub(r"[^a-z0-9]", "", name)


def matches(paper_name: str, ours: str | None) -> bool:
    """Whether a run's model / training-set name denotes the paper's ``paper_name``."""
    n = normalise(ours)
    if not n:
        return False
    return n == normalise(paper_name) or n in {normalise(a) for a in _ALIASES.get(paper_name, ())}


def paper_rows(layout: str, train_data: str | None, model: str | None) -> list[dict]:
    """The paper's rows of ``layout`` for the run's training set and model (empty when the paper has none)."""
    return [r for r in PAPER_ROWS if r["layout"] == layout and matches(r["train_data"], train_data)
            and matches(r["model"], model)]

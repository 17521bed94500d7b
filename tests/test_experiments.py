"""Every bundled experiment in bench/experiments/ plans offline (`bench run --config X --dry-run`), and the paper
configs carry the paper's hyperparameters (PAPER.md §2)."""
import hashlib
import importlib.util
import os
import re
from pathlib import Path

import pytest

from bench import cli
from bench.config import EXPERIMENTS, load_run_config
from bench.judge import load_judge_config
from bench.pipeline import run_variants
from support import alpaca_eval_template_missing

CONFIGS = sorted(EXPERIMENTS.glob("*.yaml"))
PAPER = [p for p in CONFIGS if p.stem.startswith("paper-")]


def test_every_paper_config_is_bundled():
    names = {p.stem for p in CONFIGS}
    expected = {"paper-main-llama", "paper-main-mistral", "paper-main-qwen", "paper-health-llama",
                "paper-health-mistral", "paper-mixup-role", "paper-pairing", "paper-alpha-mu",
                "paper-weak-to-strong", "smol", "default", "ci"}
    assert expected <= names, expected - names


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # planning must not need a judge key


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_dry_run_plans_offline(path: Path, tmp_path, capsys, offline):
    if path.stem == "study-bbh" and not os.environ.get("BBH_DIR"):
        pytest.skip("no BBH task files here (../shared/data/bbh): the plan could not count the study's items")
    tasks = [t if isinstance(t, str) else t.get("name") for t in load_run_config(str(path), {}).run.tasks]
    if "alpaca_eval" in tasks and alpaca_eval_template_missing():
        pytest.skip(alpaca_eval_template_missing())  # the plan renders every judge prompt to count its tokens
    out = tmp_path / "run"
    rc = cli.main(["run", "--config", path.stem, "--dry-run", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert not out.exists(), "--dry-run must not create the results directory"

    cfg = load_run_config(str(path), {})
    variants = [v for v, _ in run_variants(cfg)]
    stages = re.findall(r"^  run\s+(\S+)", stdout, re.M)  # a fresh --out: every stage is to run
    if any(v.needs_confidence for v in variants):
        assert any(s.startswith("dynamics") for s in stages)
    names = [f"{v.name}@s{s}" for s in cfg.run.seeds for v in variants] if cfg.run.seeds else [v.name for v in variants]
    for name in names:
        assert f"train/{name}" in stages
        for task in cfg.run.tasks:
            assert f"generate/{name}/{task}" in stages
            assert f"score/{name}/{task}" in stages
    assert stages[0] == "contamination"  # the training data against every task's items, first
    n_stages = len(names) * (1 + 2 * len(cfg.run.tasks))
    assert len([s for s in stages if not s.startswith(("dynamics", "contamination"))]) == n_stages

    gens = re.search(r"^generations to make: (\d+)", stdout, re.M)
    assert gens and int(gens.group(1)) > 0
    # every task's column says which peer protocol it follows
    protocols = dict(re.findall(r"^  ([\w:.-]+): (.+)$", stdout.split("protocols:\n", 1)[1], re.M))
    assert set(cfg.run.tasks) <= set(protocols), stdout
    for task in cfg.run.tasks:
        expected = {"mt_bench": "MT-Bench (FastChat", "alpaca_eval": "AlpacaEval 2.0 (weighted_alpaca_eval_gpt4_turbo)",
                    "medqa_4": "lm-evaluation-harness", "pubmedqa": "lm-evaluation-harness"}.get(task)
        if expected:
            assert expected in protocols[task], protocols[task]
    chat = [t for t in cfg.run.tasks if t in ("mt_bench", "alpaca_eval", "toy_open")]
    if not chat:
        assert re.search(r"^judge calls: none \(no judged task\)$", stdout, re.M), stdout
        return
    judge = re.search(r"^judge calls: (\d+) to (\S+)(.*)$", stdout, re.M)
    assert judge, stdout
    n_calls, model, rest = int(judge.group(1)), judge.group(2), judge.group(3)
    if cfg.judge.model:
        assert model == cfg.judge.model
        assert n_calls > 0
        # every turn of every variant is judged; AlpacaEval's pairwise judge runs both orders
        per_variant = sum(int(n) for n in re.findall(r"score/%s/\S+\s+\((\d+) judge calls\)" % re.escape(variants[0].name), stdout))
        assert n_calls == per_variant * len(variants)
        cost = re.search(r"cost ~\$([\d,]+\.\d\d)", rest)
        assert cost and float(cost.group(1).replace(",", "")) > 0, rest
    else:
        assert "no API cost" in rest


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_configs_use_paper_setup(path: Path):
    cfg = load_run_config(str(path), {})
    t = cfg.train
    assert (t.learning_rate, t.weight_decay, t.lr_scheduler_type, t.warmup_ratio) == (2e-6, 0.1, "cosine", 0.1)
    assert (t.global_batch_size, t.num_train_epochs, t.bf16) == (32, 3, "true")
    assert t.global_batch_size % (t.per_device_batch_size * cfg.run.num_gpus) == 0
    assert cfg.run.num_gpus == 8 and cfg.generation.backend == "vllm"
    assert cfg.model.template == "alpaca" and cfg.data.max_length == 2048 and not cfg.model.lora
    assert cfg.dynamics.num_checkpoints == 5
    if {"mt_bench", "alpaca_eval"} & set(cfg.run.tasks):
        assert cfg.judge.model == "gpt-4-0613" and cfg.run.train_data_name == "Alpaca-52K"
    for v, base in run_variants(cfg):
        if base == "sftmix" and v.name == "sftmix":
            assert (v.alpha, v.mu) == (0.5, 0.2)


def test_alpha_mu_sweep_grid():
    cfg = load_run_config(str(EXPERIMENTS / "paper-alpha-mu.yaml"), {})
    sftmix = {(v.alpha, v.mu) for v, base in run_variants(cfg) if base == "sftmix"}
    assert {(a, 0.2) for a in (0.1, 0.5, 1.0, 2.0)} | {(0.5, m) for m in (0.1, 0.2, 0.5, 1.0)} == sftmix
    assert "ntp" in [v.name for v, _ in run_variants(cfg)]


def test_weak_to_strong_uses_gemma_reference():
    cfg = load_run_config(str(EXPERIMENTS / "paper-weak-to-strong.yaml"), {})
    refs = {v.name: v.reference_model for v, _ in run_variants(cfg)}
    assert refs["sftmix-w2s"] == "google/gemma-2b" and refs["sftmix"] is None
    assert cfg.model.model == "meta-llama/Llama-3.1-8B"


PEER_TEMPLATE = Path(__file__).resolve().parents[2] / "shared" / "peer" / "alpaca_eval" / "alpaca_eval_clf.txt"


def _no_alpaca_eval_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "alpaca_eval"
                        else real(name, *a))
    monkeypatch.delenv("ALPACA_EVAL_PROMPT", raising=False)


def test_dry_run_with_alpaca_eval_needs_no_package_given_a_template_file(tmp_path, capsys, offline, monkeypatch):
    """Without alpaca-eval (and offline: no download), a user's template file is enough to plan; with nothing to
    take the template from, the error says so in one line."""
    _no_alpaca_eval_package(monkeypatch)
    monkeypatch.setenv("SFTMIX_HOME", str(tmp_path / "home"))
    args = ["run", "--config", "paper-main-llama", "--dry-run", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    assert "no source could be loaded" in capsys.readouterr().err
    template = tmp_path / "clf.txt"  # a template of alpaca_eval's chatml shape (not its text)
    template.write_text("<|im_start|>system\nJudge.\n<|im_end|>\n<|im_start|>user\n{instruction}\n{output_1}\n"
                        "{output_2}\n<|im_end|>\n")
    assert cli.main(args + [f"judge.alpaca_eval_prompt={template}"]) == 0, capsys.readouterr().err
    expected = f"alpaca_eval: AlpacaEval 2.0 (weighted_alpaca_eval_gpt4_turbo) (prompts: {template})"
    assert expected in capsys.readouterr().out


@pytest.mark.skipif(not PEER_TEMPLATE.is_file(), reason=f"peer template not found at {PEER_TEMPLATE}")
def test_dry_run_with_alpaca_eval_uses_the_pinned_download(tmp_path, capsys, offline, monkeypatch):
    """The pinned download, once fetched (here: placed in the download cache, sha256-checked), serves offline."""
    _no_alpaca_eval_package(monkeypatch)
    monkeypatch.setenv("SFTMIX_HOME", str(tmp_path / "home"))
    src = load_judge_config.__globals__["CONFIG_DIR"] / "alpaca_eval_weighted.yaml"
    url = re.search(r'url: "([^"]+)"', src.read_text()).group(1)
    sha = hashlib.sha256(PEER_TEMPLATE.read_bytes()).hexdigest()
    assert sha in src.read_text()  # the pin is the peer's file (alpaca_eval at the same commit)
    cached = tmp_path / "home" / "downloads" / sha[:16] / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PEER_TEMPLATE.read_bytes())
    assert cli.main(["run", "--config", "paper-main-llama", "--dry-run", "--out", str(tmp_path / "run")]) == 0
    assert f"(prompts: {url})" in capsys.readouterr().out

"""Trustworthy runs (issue 10): every input mistake caught before the first training step (one line, exit 2, no
run directory), judge failures as data for `bench judge`, stage keys that follow the judge prompt and the scorer,
results-directory locks, and the smaller defaults (umask, bare `bench`, generate folders, finished `bench train`)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from openai_server import FakeOpenAIServer, prompt_key

import sftmix.recipe
from bench.commands.generate import default_out
from bench.config import experiment_path, load_run_config
from bench.lock import RunLock
from bench.pipeline import Runner
from bench.scorers import get_scorer
from core.errors import UserError
from core.io import UMASK, write_json
from sftmix.presets import resolve_model
from support import ROOT, bench, the_error

SMALL = ["max_examples=48", "num_train_epochs=1", "limit=6", "max_new_tokens=16", "num_checkpoints=2"]


# ---- every validation case fails before training and creates no run directory ----------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    (d / "no_answer.jsonl").write_text('{"id": "a", "question": "1 + 1?", "answer": "2"}\n'
                                       '{"id": "b", "question": "2 + 2?"}\n', encoding="utf-8")
    (d / "latin1.jsonl").write_bytes('{"id": "a", "question": "caf\u00e9?", "answer": "2"}\n'.encode("latin-1"))
    (d / "bad.yaml").write_text("run:\n  limit: 3\n  tasks: [toy_open\nmodel:\n  model: tiny-llama\n")
    (d / "a_file").write_text("not a folder\n")
    return {"no_answer": d / "no_answer.jsonl", "latin1": d / "latin1.jsonl", "bad_yaml": d / "bad.yaml",
            "a_file": d / "a_file", "missing_model": d / "no-such-model-folder"}


VALIDATION = {
    "limit_negative": (["--limit", "-3"], ["run.limit", "integer >= 1", "got -3"]),
    "limit_negative_dry_run": (["--limit", "-3", "--dry-run"], ["run.limit", "got -3"]),
    "limit_zero": (["--limit", "0"], ["run.limit", "got 0"]),
    "data_path_missing_answer": (["--data-path", "toy_exact={no_answer}"], ["no_answer.jsonl", "row 1", "'answer'"]),
    "data_path_not_utf8": (["--data-path", "toy_exact={latin1}"], ["latin1.jsonl", "utf-8"]),
    "data_path_not_utf8_dry_run": (["--data-path", "toy_exact={latin1}", "--dry-run"], ["latin1.jsonl", "utf-8"]),
    "bf16_bad_value": (["train.bf16=maybe"], ["train.bf16", "one of 'auto', 'true', 'false'", "'maybe'"]),
    "list_where_a_name_is_expected": (["data.data=[toy]"], ["data.data", "expected string", "['toy']"]),
    "list_where_a_name_is_expected_dry_run": (["data.data=[toy]", "--dry-run"], ["data.data", "expected string"]),
    "mapping_for_model": (["model.model={{name: x}}"], ["model.model", "expected string"]),
    "missing_local_model_folder": (["--model", "{missing_model}"], ["local model folder", "does not exist"]),
    "unknown_model_offline": (["--model", "no-such-model-xyz"], ["'no-such-model-xyz' is not a preset",
                                                                 "not in the local Hugging Face cache"]),
    "out_is_a_file": (["--out", "{a_file}"], ["a_file is a file, not a directory"]),
    "yaml_error_with_line": (["--config", "{bad_yaml}"], ["bad.yaml:4:", "not valid YAML"]),
    "judge_key_missing": (["--judge-model", "gpt-4o-mini"], ["needs an API key", "$OPENAI_API_KEY"]),
    "vllm_not_installed": (["--backend", "vllm"], ["vLLM is not installed"]),
}


@pytest.mark.parametrize("case", list(VALIDATION))
def test_mistakes_fail_before_anything_runs(case, files, tmp_path, monkeypatch):
    if case == "vllm_not_installed" and __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def no_training(*a, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(sftmix.recipe, "finetune", no_training)
    monkeypatch.setattr(sftmix.recipe, "run_dynamics", no_training)
    args, needles = VALIDATION[case]
    out = tmp_path / "run"
    argv = ["run", "--config", "ci", "--out", out, *[a.format(**files) for a in args]]
    the_error("run", bench(*argv), *needles)
    assert not out.exists()
    assert files["a_file"].read_text() == "not a folder\n"


def test_dry_run_counts_come_from_the_data(tmp_path):
    two = tmp_path / "two.jsonl"
    two.write_text('{"id": "a", "question": "1 + 1?", "answer": "2"}\n{"id": "b", "question": "2?", "answer": "2"}\n')
    rc, stdout, stderr = bench("run", "--config", "ci", "--out", tmp_path / "run", "--dry-run", "limit=50",
                               "--data-path", f"toy_exact={two}")
    assert rc == 0, stderr
    assert "generate/ntp/toy_exact  (2 generations)" in stdout
    assert not (tmp_path / "run").exists()


# ---- stage keys --------------------------------------------------------------------------------------------------

def test_score_stage_keys_follow_the_judge_prompt_file_and_the_scorer_version(tmp_path, monkeypatch):
    prompts = tmp_path / "judge_prompts.jsonl"
    line = {"name": "single-v1", "system_prompt": "You are a judge.", "prompt_template": "Rate: {question} {answer}"}
    prompts.write_text(json.dumps(line) + "\n")
    monkeypatch.setenv("FASTCHAT_JUDGE_PROMPTS", str(prompts))
    cfg = load_run_config(experiment_path("ci"), {"run.out": str(tmp_path / "run")})

    def keys() -> dict[str, str]:
        r = Runner(cfg, cfg.run.out, progress=False)
        return {s.name: s.key for s in r.stages}

    k1 = keys()
    prompts.write_text(json.dumps({**line, "prompt_template": "Rate this: {question} {answer}"}) + "\n")
    k2 = keys()
    changed = {n for n in k1 if k1[n] != k2[n]}
    assert changed == {"score/ntp/toy_open", "score/sftmix/toy_open"}  # only the judged tasks' scores

    monkeypatch.setattr(get_scorer("mcq"), "version", "99")
    k3 = keys()
    assert {n for n in k2 if k2[n] != k3[n]} == {"score/ntp/toy_mcq", "score/sftmix/toy_mcq"}


# ---- locks -------------------------------------------------------------------------------------------------------

def test_lock_refuses_a_live_holder_naming_its_pid_and_takes_over_after_kill(tmp_path):
    out = tmp_path / "run"
    code = ("import sys; from bench.lock import RunLock; lock = RunLock(sys.argv[1], 'holder'); lock.acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by another run \\(pid {holder.pid} on \\S+, holder started"):
            RunLock(out, "second").acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
    with RunLock(out, "third") as lock:  # the dead holder's lock is free again
        assert lock.holder()["pid"] == os.getpid()


# ---- bench judge: failures per cause, re-asking only the failed, refusals, repeats -----------------------------

@pytest.fixture(scope="module")
def generations(tmp_path_factory):
    gdir = tmp_path_factory.mktemp("judge_cmd") / "gens"
    rc, _, stderr = bench("generate", "--model", "tiny-llama", "--tasks", "toy_open", "--limit", "3",
                          "--max-new-tokens", "8", "--out", gdir)
    assert rc == 0, stderr
    return gdir


@pytest.fixture
def gens(generations, tmp_path):
    dst = tmp_path / "gens"
    shutil.copytree(generations, dst)
    return dst


def judge_cmd(server, gdir: Path, *extra) -> tuple[int, str, str]:
    return bench("judge", "--generations", gdir, "--tasks", "toy_open", "--judge-model", "judge-model",
                 "--judge-base-url", server.url, *extra)


def test_judge_repeats_asks_each_item_n_times(gens):
    with FakeOpenAIServer() as server:
        rc, stdout, stderr = judge_cmd(server, gens, "--repeats", "3")
    assert rc == 0, stderr
    assert len(server.per_prompt) >= 3 and set(server.per_prompt.values()) == {3}  # every judged turn, 3 times
    records = [json.loads(ln) for ln in (gens / "judgments" / "gens" / "toy_open.jsonl").read_text().splitlines()]
    assert len(records) == 3 * len(server.per_prompt) and {r["repeat"] for r in records} == {0, 1, 2}
    assert json.loads((gens / "scores" / "gens" / "toy_open.json").read_text())["repeats"] == 3


def test_judge_rerun_asks_exactly_the_failed_verdicts(gens):
    failing = {"on": True}
    bad = set()

    def reply(messages):
        if failing["on"] and (prompt_key(messages) in bad or not bad):
            bad.add(prompt_key(messages))  # the first prompt asked gets no readable verdict while failing
            return "I cannot decide."
        return f"Rating: [[{int(prompt_key(messages), 16) % 10 + 1}]]"

    with FakeOpenAIServer(reply=reply) as server:
        rc, stdout, _ = judge_cmd(server, gens, "--concurrency", "1")
        assert rc == 1 and re.search(r"failed=1/\d+ \(transport 0, refused 0, unparsable 1, malformed 0\)",
                                     stdout), stdout
        assert len(bad) == 1 and server.per_prompt[next(iter(bad))] == 3  # asked again twice (parse retries)
        summary = json.loads((gens / "scores" / "gens" / "toy_open.json").read_text())
        assert summary["failures"] == {"transport": 0, "refused": 0, "unparsable": 1, "malformed": 0}
        asked = dict(server.per_prompt)
        failing["on"] = False
        rc, stdout, _ = judge_cmd(server, gens, "--concurrency", "1")
        assert rc == 0 and re.search(r"failed=0/\d+ \(transport 0, refused 0, unparsable 0, malformed 0\)",
                                     stdout), stdout
        again = {k: n - asked.get(k, 0) for k, n in server.per_prompt.items() if n - asked.get(k, 0)}
        assert again == {k: 1 for k in bad}  # one request, for the failed verdict only


@pytest.mark.parametrize("refusal", [{"status": 401, "message": "Incorrect API key provided"},
                                     {"empty_choices": True}], ids=["401", "empty-choices"])
def test_judge_refusal_exits_nonzero_and_keeps_earlier_scores(gens, refusal):
    with FakeOpenAIServer() as server:
        assert judge_cmd(server, gens)[0] == 0
    before = {p: p.read_bytes() for p in sorted(gens.rglob("*")) if p.is_file() and p.suffix in (".json", ".jsonl")
              and "judge_log" not in p.name}
    with FakeOpenAIServer(fault=lambda n, k, m: refusal) as server:
        line = the_error("judge", judge_cmd(server, gens, "--repeats", "2"), "refused", "nothing was written")
    assert "Incorrect API key" in line or "no choices" in line
    after = {p: p.read_bytes() for p in before}
    assert after == before


# ---- smaller defaults ----------------------------------------------------------------------------------------------

def test_results_get_the_users_umask(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert 0o666 & ~UMASK != 0o600 or UMASK == 0o066  # not mkstemp's private mode under a usual umask


def test_bare_bench_prints_help_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, _ = bench()
    assert rc == 0 and "usage: bench" in stdout and "run" in stdout
    assert list(tmp_path.iterdir()) == []


def test_generate_default_folders_do_not_collide_and_another_models_folder_is_refused(tmp_path, monkeypatch):
    assert default_out("runs/x/variants/ntp/model") != default_out("runs/x/variants/sftmix/model")
    assert default_out("runs/x/variants/ntp/model") == Path("runs/generate/x-ntp")
    assert default_out("runs/sftmix/model") == Path("runs/generate/sftmix")
    monkeypatch.chdir(tmp_path)
    rc, _, stderr = bench("generate", "--model", "tiny-llama", "--tasks", "toy_exact", "--limit", "1",
                          "--max-new-tokens", "4", "--out", "gen")
    assert rc == 0, stderr
    before = (tmp_path / "gen" / "toy_exact.generations.jsonl").read_bytes()
    model = tmp_path / "other-model"

    shutil.copytree(resolve_model("tiny-llama"), model)
    the_error("generate", bench("generate", "--model", model, "--tasks", "toy_exact", "--limit", "1", "--out", "gen"),
              "holds generations of another model", "--force")
    assert (tmp_path / "gen" / "toy_exact.generations.jsonl").read_bytes() == before


def test_finished_bench_train_is_a_no_op(tmp_path):
    args = ["train", "--variant", "ntp", "--model", "tiny-llama", "--data", "toy", "--out", tmp_path / "t",
            "max_examples=16", "num_train_epochs=1", "global_batch_size=8", "per_device_batch_size=8",
            "max_length=64"]
    rc, _, stderr = bench(*args)
    assert rc == 0, stderr
    record = (tmp_path / "t" / "train.json").read_bytes()
    checkpoints = sorted(p.name for p in (tmp_path / "t" / "checkpoints").iterdir())
    rc, stdout, stderr = bench(*args)
    assert rc == 0, stderr
    assert "already trained" in stdout and "nothing to do" in stdout
    assert (tmp_path / "t" / "train.json").read_bytes() == record
    assert sorted(p.name for p in (tmp_path / "t" / "checkpoints").iterdir()) == checkpoints


def test_judge_repeats_give_the_judges_noise_in_the_summary_and_report(gens, tmp_path):
    """A judge whose rating varies between repeats: the summary's reliability has spread, disagreement and a
    test-retest r, the item values keep every repeat, and `bench judge-report` prints them; one repeat is "not
    estimable"."""
    asked: Counter = Counter()

    def noisy(messages):
        key = prompt_key(messages)
        asked[key] += 1
        return f"Rating: [[{(int(key, 16) + 3 * asked[key]) % 10 + 1}]]"

    with FakeOpenAIServer(reply=noisy) as server:
        rc, stdout, stderr = judge_cmd(server, gens, "--repeats", "2", "--concurrency", "1")
    assert rc == 0, stderr
    assert "judge reliability: repeats 2: spread" in stdout
    summary = json.loads((gens / "scores" / "gens" / "toy_open.json").read_text())
    rep = summary["reliability"]["repeats"]
    assert rep["repeats"] == 2 and rep["spread"] > 0 and rep["disagreement"] == 1.0
    assert rep["test_retest"] is not None and summary["repeat_combine"] == "median"
    items = [json.loads(ln) for ln in (gens / "scores" / "gens" / "toy_open.items.jsonl").read_text().splitlines()]
    assert all(len(it["repeats"]) == 2 and it["value"] == sum(it["repeats"]) / 2 for it in items)
    rc, out, _ = bench("judge-report", gens, "--json", tmp_path / "rel.json")
    assert rc == 0 and "gens / toy_open" in out and "test-retest r" in out
    assert json.loads((tmp_path / "rel.json").read_text())[str(gens)]["gens"]["toy_open"] == summary["reliability"]
    with FakeOpenAIServer() as server:
        assert judge_cmd(server, gens)[0] == 0
    one = json.loads((gens / "scores" / "gens" / "toy_open.json").read_text())["reliability"]["repeats"]
    assert one["spread"] is None and "not estimable" in one["note"]

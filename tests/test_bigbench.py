"""BIG-bench JSON tasks as data: the content-hash split, eval items (mcq), training rows, hhh subtasks, errors."""
import hashlib
import json

import pytest

from bench.tasks import load_task
from core.errors import UserError
from sftmix import bigbench
from sftmix.data import load_rows
from sftmix.sources import data_identity


def write_task(root, name, examples, **fmt):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "task.json").write_text(json.dumps({"name": name, "description": "fixture", **fmt, "examples": examples}))
    return d / "task.json"


def place(i):  # a distinct destination per example: inputs differing in one digit only would be near-duplicates

    return hashlib.sha256(str(i).encode()).hexdigest()[:12]


def mc_examples(n, tag="q"):
    return [{"input": f"{tag} {i}: which way to {place(i)}?", "target_scores": {"left": int(i % 2 == 0), "right": int(i % 2 == 1)},
             "target": "left" if i % 2 == 0 else "right"} for i in range(n)]


@pytest.fixture
def bb(tmp_path, monkeypatch):
    write_task(tmp_path, "navigate", mc_examples(200), task_prefix="Decide.\n")
    write_task(tmp_path, "hyperbaton", mc_examples(50, "h"), append_choices_to_input=False,
               example_input_prefix="\nInput: ", example_output_prefix="\nOutput: ")
    hhh = tmp_path / "hhh_alignment"
    write_task(tmp_path, "hhh_alignment", [])
    for sub, n in (("harmless", 3), ("helpful", 4)):
        write_task(hhh, sub, [{"input": f"Human: {sub} {i}\n\nAssistant:",
                               "target_scores": {f"good {i}": 1, f"bad {i}": 0}} for i in range(n)])
    monkeypatch.setenv(bigbench.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(bigbench, "package_file", lambda *a: None)  # never the installed package
    return tmp_path


def test_bucket_is_a_pure_function_of_the_input_with_the_given_fractions():
    texts = [f"example {i}" for i in range(3000)]
    buckets = [bigbench.bucket(t) for t in texts]
    assert buckets == [bigbench.bucket(t) for t in reversed(texts)][::-1]  # order-independent
    share = {b: buckets.count(b) / len(texts) for b in bigbench.SPLITS}
    assert abs(share["train"] - 0.6) < 0.04 and abs(share["validation"] - 0.1) < 0.03 and abs(share["eval"] - 0.3) < 0.04
    # the hand computation: sha256 of the text as a number in [0, 1), cut at 0.6 and 0.7
    u = int(hashlib.sha256(b"example 7").hexdigest()[:15], 16) / 16**15
    assert bigbench.bucket("example 7") == ("train" if u < 0.6 else "validation" if u < 0.7 else "eval")
    assert {bigbench.bucket(t, (0, 0, 1)) for t in texts[:50]} == {"eval"}
    with pytest.raises(UserError, match="summing to 1"):
        bigbench.check_fractions((0.5, 0.2, 0.2))


def test_splits_partition_the_task_and_training_never_sees_eval_items(bb):
    items = {s: bigbench.load_items("navigate", split=s) for s in bigbench.SPLITS}
    all_items = bigbench.load_items("navigate")
    assert sum(len(v) for v in items.values()) == len(all_items) == 200
    ids = [set(it["id"] for it in v) for v in items.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all(len(v) > 5 for v in items.values())
    train_text = {r["instruction"] for r in load_rows("bigbench:navigate,hyperbaton")}
    eval_items = load_task("bigbench:navigate").load_records()
    assert len(eval_items) == len(items["eval"])
    assert not any(it["extra"]["input"] in t for it in eval_items for t in train_text)
    val = load_task("bigbench_validation:navigate").load_records()
    assert [it["id"] for it in val] == [it["id"] for it in items["validation"]]
    # every training row of navigate comes from its train bucket
    assert {r["id"] for r in load_rows("bigbench:navigate")} == {f"navigate/{it['id']}" for it in items["train"]}


def test_eval_items_follow_bigbench_formatting_and_score_as_mcq(bb):
    task = load_task("bigbench:navigate")
    assert task.name == "bigbench:navigate" and task.kind == "mcq" and task.scorer == "mcq"
    it = task.load_records()[0]
    n = int(it["extra"]["input"].split()[1].rstrip(":"))
    assert it["choices"] == ["left", "right"] and it["answer"] == n % 2
    assert task.render_prompt(it) == f"Decide.\n\nQ: q {n}: which way to {place(n)}?\n  choice: left\n  choice: right\nA:"
    assert task.continuations(it) == [" left", " right"]
    assert task.source.startswith("bigbench:") and task.source.endswith("navigate/task.json")
    hyper = load_task("bigbench:hyperbaton")
    h = hyper.load_records()[0]
    assert hyper.render_prompt(h) == f"\nInput: {h['extra']['input']}\nOutput:"  # no choices appended


def test_training_rows_are_instruction_to_answer_with_a_per_task_cap(bb):
    rows = load_rows("bigbench:navigate?n=10")
    assert len(rows) == 10
    for r in rows:
        n = int(r["instruction"].split("\n")[1].split()[1].rstrip(":"))
        assert r["instruction"].startswith("Decide.\nq ") and r["instruction"].endswith("choice: right")
        assert r["output"] == ("left" if n % 2 == 0 else "right")
    assert rows == load_rows("bigbench:navigate?n=10")  # deterministic subset
    val = load_rows("bigbench:navigate", split="validation")
    assert not {r["id"] for r in val} & {r["id"] for r in load_rows("bigbench:navigate")}
    # a task_prefix without a trailing separator (as the real navigate task's) still starts the input on a new line
    write_task(bb, "glued", mc_examples(20, "g"), task_prefix="Do you return to the starting point?")
    assert all(r["instruction"].startswith("Do you return to the starting point?\ng ")
               for r in load_rows("bigbench:glued", split="all"))
    both = load_rows("bigbench:navigate,hyperbaton?n=5")
    assert [r["id"].split("/")[0] for r in both] == ["navigate"] * 5 + ["hyperbaton"] * 5


def test_hhh_alignment_reads_subtasks_as_categories(bb):
    task = load_task("hhh_alignment")
    items = task.load_records()
    assert len(items) == 7 and {it["category"] for it in items} == {"harmless", "helpful"}
    assert all(it["choices"][it["answer"]].startswith("good") for it in items)
    assert items[0]["id"].startswith("harmless/")


def test_local_copy_beats_the_environment(bb, tmp_path_factory):
    other = tmp_path_factory.mktemp("copy")
    write_task(other, "navigate", mc_examples(20, "z"))
    items = load_task("bigbench:navigate").load_records(local=other)
    assert items and all(it["extra"]["input"].startswith("z ") for it in items)


def test_data_identity_hashes_the_task_files(bb):
    before = data_identity("bigbench:navigate")
    write_task(bb, "navigate", mc_examples(201))
    assert data_identity("bigbench:navigate")["sha256_16"] != before["sha256_16"]


def test_bad_bigbench_input_is_one_line(bb, monkeypatch):
    with pytest.raises(UserError, match="'nope': not under .*no installed bigbench"):
        load_rows("bigbench:nope")
    with pytest.raises(UserError, match="unknown option 'x'"):
        load_rows("bigbench:navigate?x=1")
    with pytest.raises(UserError, match="n must be an integer"):
        load_rows("bigbench:navigate?n=0")
    (bb / "gen").mkdir()
    (bb / "gen" / "task.json").write_text(json.dumps({"examples": [{"input": "a", "target": "b"}]}))
    with pytest.raises(UserError, match="not multiple choice"):
        load_task("bigbench:gen").load_records()
    with pytest.raises(UserError, match="takes no parameter"):
        load_task("toy_mcq:x")
    with pytest.raises(UserError, match="name the BIG-bench task"):
        load_task("bigbench").load_records()
    monkeypatch.delenv(bigbench.ENV_DIR)
    with pytest.raises(UserError, match="pip install --no-deps bigbench"):
        load_task("bigbench:navigate").load_records()

"""Bad input on the command line: exit code 2, one error line on stderr naming the problem, no traceback, and
nothing written where the command would have written (each runs `python -m bench.cli` as a subprocess)."""
import json
from pathlib import Path

import pytest
from support import ROOT, bench_process, the_error

TOY = ROOT / "sftmix" / "assets" / "toy_train.jsonl"
SMALL_TRAIN = ["global_batch_size=4", "per_device_batch_size=4", "max_length=64"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    rows = [json.loads(ln) for ln in TOY.read_text().splitlines()[:8]]
    changed = [dict(r) for r in rows]
    changed[3]["output"] += " (edited)"  # same ids, one example's content (hash) differs
    bad_field = [dict(r) for r in rows[:3]]
    bad_field[1]["output"] = 5
    chats = [{"id": "c0", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]},
             {"id": "c1", "messages": [{"role": "user", "content": "is anyone there?"}]}]
    return {
        "good": write_jsonl(d / "good.jsonl", rows),
        "changed": write_jsonl(d / "changed.jsonl", changed),
        "bad_json": write_jsonl(d / "bad_json.jsonl", rows[:3] + ['{"id": "x", "instruction": '] + rows[3:5]),
        "bad_field": write_jsonl(d / "bad_field.jsonl", bad_field),
        "empty": write_jsonl(d / "empty.jsonl", []),
        "no_assistant": write_jsonl(d / "no_assistant.jsonl", chats),
        "missing": d / "missing.jsonl",
    }


def listing(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ---- bench run ----------------------------------------------------------------------------------------------------

RUN_CASES = {
    "unknown_variant": (["--variants", "ntp,sftmx"], ["unknown variant 'sftmx'", "did you mean 'sftmix'"]),
    "unknown_task": (["--tasks", "toy_open,toy_mqc"], ["unknown task 'toy_mqc'", "did you mean 'toy_mcq'"]),
    "unknown_config_key": (["limt=3"], ["'limt'", "did you mean 'limit'"]),
    "missing_train_data": (["--train-data", "{missing}"], ["missing.jsonl", "no such file"]),
    "malformed_train_data": (["--train-data", "{bad_json}"], ["bad_json.jsonl:4:", "malformed JSON"]),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_bad_input(case, data, tmp_path):
    args, needles = RUN_CASES[case]
    args = [a.format(**data) for a in args]
    out = tmp_path / "run"
    the_error("run", bench_process("run", "--config", "ci", "--out", out, *args), *needles)
    # Nothing written: a results directory made here would also refuse the corrected command ("different config").
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


# ---- bench train / bench dynamics --------------------------------------------------------------------------------

TRAIN_CASES = {
    "missing_file": (["--data", "{missing}"], ["missing.jsonl", "no such file"]),
    "malformed_row": (["--data", "{bad_field}"], ["bad_field.jsonl:2", "'output'"]),
    "malformed_json": (["--data", "{bad_json}"], ["bad_json.jsonl:4:"]),
    "empty_data_set": (["--data", "{empty}"], ["empty.jsonl", "empty"]),
    "chat_without_assistant_turn": (["--data", "{no_assistant}"], ["no_assistant.jsonl:2", "assistant"]),
    "unknown_variant": (["--data", "{good}", "--variant", "sftmx"], ["unknown variant 'sftmx'", "'sftmix'"]),
    "unknown_key_value_option": (["--data", "{good}", "learning_rte=1e-3"], ["'learning_rte'", "'learning_rate'"]),
    "unknown_flag": (["--data", "{good}", "--bogus-flag"], ["--bogus-flag"]),
    "missing_confidence_file": (["--data", "{good}", "--variant", "sftmix", "--confidence", "{missing}"],
                                ["missing.jsonl"]),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input(case, data, tmp_path):
    args, needles = TRAIN_CASES[case]
    out = tmp_path / "train"
    result = bench_process("train", "--model", "tiny-llama", "--out", out, *[a.format(**data) for a in args],
                           *SMALL_TRAIN)
    the_error("train", result, *needles)
    assert not out.exists()


@pytest.mark.slow
def test_train_refuses_confidence_file_of_other_data(data, tmp_path):
    dyn = tmp_path / "dyn"
    rc, stdout, stderr = bench_process("dynamics", "--model", "tiny-llama", "--data", data["good"], "--out", dyn,
                               "num_checkpoints=2", *SMALL_TRAIN)
    assert rc == 0, stderr[-3000:]
    conf = dyn / "confidence.parquet"
    before = listing(dyn)
    out = tmp_path / "train"
    result = bench_process("train", "--variant", "sftmix", "--model", "tiny-llama", "--data", data["changed"],
                   "--confidence", conf, "--out", out, *SMALL_TRAIN)
    the_error("train", result, str(conf), "does not match")
    assert not out.exists()
    assert listing(dyn) == before


def test_dynamics_missing_data(data, tmp_path):
    out = tmp_path / "dyn"
    the_error("dynamics", bench_process("dynamics", "--model", "tiny-llama", "--data", data["missing"], "--out", out),
                 "missing.jsonl")
    assert not out.exists()


# ---- bench judge / generate / table ------------------------------------------------------------------------------

def test_judge_missing_folder(tmp_path):
    the_error("judge", bench_process("judge", "--generations", tmp_path / "nope"), "nope", "not found")
    assert not (tmp_path / "nope").exists()


def test_judge_unknown_task_writes_nothing(tmp_path):
    gens = tmp_path / "gens"
    gens.mkdir()
    the_error("judge", bench_process("judge", "--generations", gens, "--tasks", "toy_opn"),
                 "unknown task 'toy_opn'", "'toy_open'")
    assert list(gens.iterdir()) == []


def test_generate_unknown_task(tmp_path):
    out = tmp_path / "gen"
    the_error("generate", bench_process("generate", "--model", "tiny-llama", "--tasks", "toy_opn", "--out", out),
                 "unknown task 'toy_opn'", "'toy_open'")
    assert not out.exists()


def test_generate_missing_model_folder(tmp_path):
    out = tmp_path / "gen"
    the_error("generate", bench_process("generate", "--model", tmp_path / "no-model", "--tasks", "toy_exact",
                                   "--out", out), "no-model")
    assert not out.exists()


def test_table_missing_folder(tmp_path):
    the_error("table", bench_process("table", tmp_path / "no-run"), "no-run")


def test_table_folder_without_results(tmp_path):
    (tmp_path / "empty-run").mkdir()
    the_error("table", bench_process("table", tmp_path / "empty-run"), "empty-run")

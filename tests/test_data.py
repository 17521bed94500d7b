import json
import logging

import pandas as pd
import pytest
import torch

from core.errors import UserError
from sftmix.data import (
    IGNORE, PaddedCollator, build_examples, example_hash, example_id, load_rows, to_messages, tokenize_chat,
)
from sftmix.templates import TEMPLATES, apply_template, template_hash

SYSTEM = "You answer briefly."
CHAT_2 = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris"},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "The capital of Italy is Rome."},
]


def labelled_runs(ids, labels):
    """Contiguous runs of labelled tokens, as lists of ids."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("template", ["chatml", "alpaca"])
@pytest.mark.parametrize("messages", [CHAT_2[:3], CHAT_2, CHAT_2[1:]], ids=["single", "multi", "multi-nosys"])
def test_labels_cover_exactly_assistant_turns_and_end_marker(tiny_tokenizer, template, messages):
    apply_template(tiny_tokenizer, template)
    ids, labels, truncated = tokenize_chat(messages, tiny_tokenizer, max_length=1024)
    assert not truncated and len(ids) == len(labels)
    runs = [tiny_tokenizer.decode(r) for r in labelled_runs(ids, labels)]
    eot = tiny_tokenizer.eos_token  # both templates end a response with eos (<|im_end|> for the tiny preset)
    assert runs == [m["content"] + eot for m in messages if m["role"] == "assistant"]
    # the user/system text is in the input but never labelled
    unlabelled = tiny_tokenizer.decode([i for i, lab in zip(ids, labels) if lab == IGNORE])
    for m in messages:
        if m["role"] != "assistant":
            assert m["content"] in unlabelled


def test_alpaca_template_text(tiny_tokenizer):
    apply_template(tiny_tokenizer, "alpaca")
    text = tiny_tokenizer.apply_chat_template(CHAT_2[1:2], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<s>Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhat is the capital of France?\n\n### Response:\n"
    )
    with_sys = tiny_tokenizer.apply_chat_template(CHAT_2, tokenize=False)
    assert with_sys.startswith("<s>" + SYSTEM + "\n\n### Instruction:") and with_sys.count("### Response:") == 2


def test_chatml_generation_prompt(tiny_tokenizer):
    apply_template(tiny_tokenizer, "chatml")
    text = tiny_tokenizer.apply_chat_template(CHAT_2[1:2], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def test_apply_template_none_keeps_own_and_requires_one(tiny_tokenizer):
    own = tiny_tokenizer.chat_template
    assert own and apply_template(tiny_tokenizer, None).chat_template == own
    h = template_hash(tiny_tokenizer)
    apply_template(tiny_tokenizer, "alpaca")
    assert tiny_tokenizer.chat_template == TEMPLATES.get("alpaca") and template_hash(tiny_tokenizer) != h
    tiny_tokenizer.chat_template = None
    with pytest.raises(UserError, match="template=alpaca|chatml"):
        apply_template(tiny_tokenizer, None)
    with pytest.raises(UserError, match="did you mean 'chatml'"):
        apply_template(tiny_tokenizer, "chatm")


def test_formats_to_messages():
    assert to_messages({"instruction": "Add.", "input": "2 and 3", "output": "5"}) == [
        {"role": "user", "content": "Add.\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    assert to_messages({"instruction": "Hi", "output": "Hello"})[0]["content"] == "Hi"
    assert to_messages({"prompt": "P", "response": "R"})[1] == {"role": "assistant", "content": "R"}
    assert to_messages({"prompt": "P", "completion": "C"})[1]["content"] == "C"
    assert to_messages({"messages": CHAT_2}) == CHAT_2
    assert example_id({"id": 7}, 3) == "7" and example_id({}, 3) == "3"
    assert example_hash(CHAT_2) == example_hash([dict(m, extra=None) for m in CHAT_2])
    assert example_hash(CHAT_2) != example_hash(CHAT_2[:3])


def test_build_examples_from_mixed_formats(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "a", "instruction": "Uppercase.", "input": "cat", "output": "CAT"},
        {"id": "b", "prompt": "Say hi.", "response": "hi"},
        {"id": "c", "messages": CHAT_2},
    ])
    examples, stats = build_examples(str(path), tiny_tokenizer, max_length=512)
    assert [e["id"] for e in examples] == ["a", "b", "c"]
    assert (stats.n_rows, stats.n_examples, stats.n_truncated, stats.n_dropped) == (3, 3, 0, 0)
    for e in examples:
        runs = labelled_runs(e["input_ids"], e["labels"])
        assert e["n_response_tokens"] == sum(map(len, runs))
    assert tiny_tokenizer.decode(labelled_runs(examples[0]["input_ids"], examples[0]["labels"])[0]) == "CAT<|im_end|>"
    assert tiny_tokenizer.decode(labelled_runs(examples[1]["input_ids"], examples[1]["labels"])[0]) == "hi<|im_end|>"
    assert len(labelled_runs(examples[2]["input_ids"], examples[2]["labels"])) == 2


def test_toy_data_loads(toy_train_path, tiny_tokenizer):
    rows = load_rows("toy")
    assert rows == load_rows(str(toy_train_path)) and len(rows) >= 300
    examples, stats = build_examples("toy", tiny_tokenizer, max_length=512, limit=50)
    assert stats.n_rows == 50 and stats.n_examples == 50 and len({e["hash"] for e in examples}) == 50


def test_truncation_counted_and_dropped_warned(tiny_tokenizer, caplog):
    long_prompt = "word " * 200
    rows = [
        {"id": "short", "prompt": "Hi", "response": "Hello there"},
        {"id": "cut", "prompt": "Hi", "response": "a fairly long response " * 20},
        {"id": "gone1", "prompt": long_prompt, "response": "x"},
        {"id": "gone2", "prompt": long_prompt, "response": "y"},
    ]
    with caplog.at_level(logging.WARNING, logger="sftmix"):
        examples, stats = build_examples(rows, tiny_tokenizer, max_length=40)
    assert [e["id"] for e in examples] == ["short", "cut"]
    assert (stats.n_rows, stats.n_truncated, stats.n_dropped, stats.n_examples) == (4, 3, 2, 2)
    assert all(len(e["input_ids"]) <= 40 and len(e["labels"]) == len(e["input_ids"]) for e in examples)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 2 of 4" in warnings[0]


def test_duplicate_ids_refused(tiny_tokenizer):
    rows = [{"id": 1, "prompt": "a", "response": "b"}, {"id": 1, "prompt": "c", "response": "d"}]
    with pytest.raises(UserError, match="duplicate id '1'"):
        build_examples(rows, tiny_tokenizer)


def test_collator_pads_right_and_keeps_idx():
    batch = PaddedCollator(pad_token_id=9)([
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "idx": 4, "id": "x"},
        {"input_ids": [5], "labels": [5], "idx": 0, "id": "y"},
    ])
    assert set(batch) == {"input_ids", "labels", "attention_mask", "idx"}
    assert batch["input_ids"].tolist() == [[1, 2, 3], [5, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["idx"].tolist() == [4, 0] and batch["idx"].dtype == torch.long
    assert "idx" not in PaddedCollator(0)([{"input_ids": [1], "labels": [1]}])


# ---- bad input: one-line UserErrors naming file, line and field ----------------------------------------------------
def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    msg = one_line_error(load_rows, str(tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in msg and "no such file" in msg


def test_malformed_json_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, "", '{"prompt": "a", "resp'])
    msg = one_line_error(load_rows, str(path))
    assert f"{path}:3:" in msg and "malformed JSON" in msg


@pytest.mark.parametrize("row,line_field", [
    ({"instruction": "x"}, "'output' is missing"),
    ({"instruction": "x", "output": 5}, "'output' must be a string, got int"),
    ({"prompt": "x"}, "'response' is missing"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}, "messages[1].role"),
    ({"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "yo"}]}, "'content' must be a string"),
    ({"text": "hello"}, "unknown row format"),
])
def test_invalid_row_names_line_and_field(tmp_path, row, line_field):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "ok", "response": "ok"}, row])
    msg = one_line_error(load_rows, str(path))
    assert f"{path}:2:" in msg and line_field in msg


def test_chat_without_assistant(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    msg = one_line_error(load_rows, str(path))
    assert f"{path}:1:" in msg and "no assistant turn" in msg


def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "empty" in one_line_error(load_rows, str(tmp_path / "empty.jsonl"))


def test_invalid_parquet_row_names_row(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"instruction": ["a", "b"], "output": ["x", None]}).to_parquet(path)
    msg = one_line_error(load_rows, str(path))
    assert "d.parquet:row 2" in msg and "'output' is missing" in msg
    assert load_rows(str(path), limit=1) == [{"instruction": "a", "output": "x"}]


def test_hub_id_offline():
    msg = one_line_error(load_rows, "someone/some-dataset")
    assert "someone/some-dataset" in msg and "local" in msg


def test_mixed_formats_in_parquet(tmp_path, tiny_tokenizer):
    path = tmp_path / "mixed.parquet"
    pd.DataFrame([{"id": "a", "instruction": "Hi", "output": "Hello"},
                  {"id": "b", "prompt": "Say yes.", "completion": "yes"}]).to_parquet(path)
    examples, stats = build_examples(str(path), tiny_tokenizer, max_length=256)
    assert stats.n_examples == 2
    assert tiny_tokenizer.decode(labelled_runs(examples[1]["input_ids"], examples[1]["labels"])[0]) == "yes<|im_end|>"

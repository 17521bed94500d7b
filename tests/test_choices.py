"""Any number of choices: labels past J (or none), and validation that renders every item before anything runs."""
import json

import pytest
import yaml

from bench.tasks import Task, letters
from core.errors import UserError
from support import bench, error_lines


def mcq_task(tmp_path, n_choices: int, **extra) -> Task:
    rows = [{"id": str(i), "q": f"question {i}", "opts": [f"option {k}" for k in range(n_choices)],
             "gold": i % n_choices} for i in range(3)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "many", "kind": "mcq", "scorer": "mcq", "data": {"local": str(data)},
            "fields": {"id": "id", "question": "q", "choices": "opts", "answer": "gold"},
            "prompt": "{{ question }}\n{% for l, c in options %}{{ l }}. {{ c }}\n{% endfor %}Answer:", **extra}
    path = tmp_path / "many.yaml"

    path.write_text(yaml.safe_dump(spec))
    return Task.from_yaml(path)


def test_letters_go_past_z():
    assert letters(3) == ["A", "B", "C"]
    assert letters(28)[9:11] == ["J", "K"] and letters(28)[25:] == ["Z", "AA", "AB"]
    assert letters(703)[-1] == "AAA"


def test_fourteen_and_thirty_choices_render_with_default_labels(tmp_path):
    for n in (14, 30):
        task = mcq_task(tmp_path, n)
        items = task.load_records()
        task.check_renders(items)
        assert task.continuations(items[0])[-1] == f" {letters(n)[-1]}"
        assert f"{letters(n)[-1]}. option {n - 1}" in task.render_prompt(items[0])


def test_explicit_labels_too_short_fail_only_where_a_template_uses_them(tmp_path):
    task = mcq_task(tmp_path, 5, labels=["1", "2", "3"])
    items = task.load_records()
    with pytest.raises(UserError, match="5 choices but 3 labels"):
        task.check_renders(items)
    free = mcq_task(tmp_path, 5, labels=["1", "2", "3"], prompt="{{ question }}", continuation=" {{ choice }}")
    free.check_renders(free.load_records())  # no label used: any number of choices
    assert free.continuations(free.load_records()[0]) == [f" option {k}" for k in range(5)]


def test_validation_renders_every_item_before_training(tmp_path, monkeypatch):
    task = mcq_task(tmp_path, 4, prompt="{{ question }} {{ missing_field }}")
    monkeypatch.setenv("BENCH_TASKS_DIR", str(tmp_path))
    del task
    rc, _, stderr = bench("run", "--config", "ci", "--out", str(tmp_path / "run"), "tasks=many", "--dry-run")
    assert rc == 2
    (line,) = error_lines(stderr)
    assert "task many item 0: cannot render its prompt" in line and "missing_field" in line
    assert not (tmp_path / "run").exists()

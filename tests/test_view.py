"""`bench view`: the report of a finished run (tests/view_run.py: real writers, scripted model and judge), checked
against the run directory's own files - read here with plain json, not through bench.view - first as data and HTML,
then in a real browser (headless Chromium driven by Playwright, pointed at the system browser; skipped with a reason
where neither is installed)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bench.cli import main
from bench.perf.view import fabricate_view_run, find_chromium
from bench.rundir.generations import GenerationRecord
from bench.tables import render_table
from bench.view import gather, write_report
from bench.view.data import _add_generations
from view_run import HOSTILE, HOSTILE_JUDGE, TASKS, UNPARSABLE, make_view_run, write_contamination
from support import ROOT

VARIANTS = ("ntp", "sftmix")
PERCENT_KINDS = ("mcq", "exact")


# ---------------------------------------------------------------------------------------------- the run, as files


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def files_of(run: Path) -> dict:
    """Everything the checks compare with, straight from the run directory's files."""
    out = {"gens": {}, "judgments": {}, "values": {}, "summary": {}}
    for v in VARIANTS:
        for t in TASKS:
            out["gens"][v, t] = jsonl(run / "generations" / v / f"{t}.jsonl")
            j = run / "judgments" / v / f"{t}.jsonl"
            out["judgments"][v, t] = jsonl(j) if j.exists() else []
            out["values"][v, t] = jsonl(run / "scores" / v / f"{t}.items.jsonl")
            out["summary"][v, t] = json.loads((run / "scores" / v / f"{t}.json").read_text())
    return out


def item_ids(files: dict, task: str) -> list[str]:
    return list(dict.fromkeys(str(r["example_id"]) for r in files["gens"]["ntp", task]))


def item_scores(files: dict, task: str) -> dict[str, dict[str, float]]:
    """{item id: {variant: mean over the item's turns of its value}} in display units."""
    out: dict[str, dict[str, float]] = {}
    for v in VARIANTS:
        scale = 100.0 if files["summary"][v, task]["kind"] in PERCENT_KINDS else 1.0
        by: dict[str, list[float]] = {}
        for r in files["values"][v, task]:
            by.setdefault(str(r["example_id"]), []).append(float(r["value"]) * scale)
        for eid, vals in by.items():
            out.setdefault(eid, {})[v] = sum(vals) / len(vals)
    return out


def expected_disagree(files: dict) -> set[tuple[str, str]]:
    return {(t, eid) for t in TASKS for eid, s in item_scores(files, t).items()
            if len({round(x, 9) for x in s.values()}) > 1}


def expected_failed(files: dict) -> set[tuple[str, str]]:
    return {(t, str(r["example_id"])) for (v, t), recs in files["judgments"].items() for r in recs if r["failed"]}


@pytest.fixture(scope="module")
def view_run(tmp_path_factory) -> Path:
    return make_view_run(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def files(view_run) -> dict:
    return files_of(view_run)


@pytest.fixture(scope="module")
def report(view_run, tmp_path_factory) -> Path:
    return write_report([view_run], tmp_path_factory.mktemp("report") / "report.html")


# ---------------------------------------------------------------------------------------------- without a browser


def test_the_fixture_run_has_what_the_checks_need(files):
    """Guards the checks below: a hostile answer, a failed verdict, items that agree and items that disagree."""
    assert any(r["text"] == HOSTILE for r in files["gens"]["sftmix", "mt_bench"])
    assert ("mt_bench", "83") in expected_failed(files)
    scores = {(t, e) for t in TASKS for e in item_scores(files, t)}
    assert 0 < len(expected_disagree(files)) < len(scores)


def test_gathered_items_match_the_run_directory(view_run, files):
    b = gather([view_run])["browser"]
    assert [c["key"] for c in b["columns"]] == list(VARIANTS)
    assert [t["name"] for t in b["tasks"]] == list(TASKS)  # the run config's task order
    items = {(it["task"], it["id"]): it for it in b["items"]}
    assert set(items) == {(t, e) for t in TASKS for e in item_ids(files, t)}
    for (v, t), recs in files["gens"].items():
        for r in recs:
            it = items[t, str(r["example_id"])]
            cell = it["cells"][v]
            if r.get("scoring") == "loglik":
                assert cell["answers"][0] == r["continuations"][r["pred"]] and cell["pred"] == r["pred"]
                assert it["choices"] == r["continuations"] and it["answer"] == r["answer"]
                assert it["turns"][0]["prompt"] == r["context"]
            else:
                assert cell["answers"][r["turn"]] == r["text"]
                assert it["turns"][r["turn"]]["prompt"] == r["messages"][-1]["content"]
                assert it["turns"][r["turn"]].get("reference") == r.get("reference", r.get("answer"))
    for t in TASKS:
        for eid, s in item_scores(files, t).items():
            for v, x in s.items():
                assert items[t, eid]["cells"][v]["score"] == pytest.approx(x)
            assert items[t, eid]["diff"].get("sftmix") == pytest.approx(s["sftmix"] - s["ntp"])
    for (v, t), recs in files["judgments"].items():
        for eid in {str(r["example_id"]) for r in recs}:
            got = items[t, eid]["cells"][v]["verdicts"]
            want = sorted((r for r in recs if str(r["example_id"]) == eid), key=lambda r: (r["turn"], r["repeat"]))
            assert [(g["turn"] + 1, g["repeat"], g.get("score"), g["failed"], g["text"]) for g in got] == \
                [(r["turn"], r["repeat"], r["score"], r["failed"], r["raw"]) for r in want]
    assert {k for k, it in items.items() if it["disagree"]} == expected_disagree(files)
    assert {k for k, it in items.items() if it["failed"]} == expected_failed(files)
    assert not b["contamination"] and all("dirty" not in it for it in b["items"])


def test_tables_are_bench_tables_own(view_run):
    view = gather([view_run])
    assert [t["layout"] for t in view["tables"]] == ["main", "default"]  # auto picks main; default beside it
    for t in view["tables"]:
        md = render_table([view_run], t["layout"], "md")
        rows = [ln for ln in md.splitlines() if ln.startswith("|")]
        assert [[c["text"] for c in row] for row in t["rows"]] == \
            [[c.strip() for c in ln.strip("|").split(" | ")] for ln in rows[2:]]
        assert [n for n in md.split("\n\n", 1)[1].splitlines() if n] == [f"- {n}" for n in t["notes"]]


def test_report_is_self_contained_and_never_embeds_markup_from_the_run(report):
    html = report.read_text(encoding="utf-8")
    assert len(re.findall(r"<script\b", html)) == 2  # the JSON data block and view.js, nothing else
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", html)  # no CDN, no network
    assert "default-src 'none'" in html and "script-src 'sha256-" in html
    for hostile in (HOSTILE, HOSTILE_JUDGE, UNPARSABLE, "<|im_start|>"):
        assert hostile not in html  # only ever escaped (JSON \u003c... or HTML &lt;...)
    data = html.split('<script type="application/json" id="bench-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data
    assert HOSTILE in [a for it in json.loads(data)["items"] for c in it["cells"].values() for a in c["answers"]]


def test_reporting_imports_nothing_from_sftmix(view_run, tmp_path):
    code = ("import sys; from bench.view import build_report\n"
            "html = build_report([sys.argv[1]])\n"
            "bad = sorted(m for m in sys.modules if m == 'sftmix' or m.startswith('sftmix.'))\n"
            "assert not bad, bad\n"
            "assert len(html) > 10000\n")
    r = subprocess.run([sys.executable, "-c", code, str(view_run)], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr


def test_cli_writes_the_report_and_refuses_bad_input_in_one_line(view_run, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["view", str(view_run), "--out", str(out), "--layout", "default", "--resamples", "200"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert 'data-layout="default"' in html and 'data-layout="main"' not in html and "200 resamples" in html
    assert main(["view", str(tmp_path / "missing"), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench view: error:") and "no such run directory" in err[0]
    assert not (tmp_path / "x.html").exists()
    with pytest.raises(SystemExit) as e:
        main(["view", str(view_run), "--layout", "nope"])
    assert e.value.code == 2


def test_runs_without_recorded_prompts_and_several_runs(view_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(view_run, old)
    for p in (old / "generations").glob("*/*.jsonl"):  # as a run from before prompts were recorded
        recs = [{k: v for k, v in r.items() if k not in ("messages", "context", "reference")} for r in jsonl(p)]
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    b = gather([old])["browser"]
    assert all("prompt" not in t for it in b["items"] for t in it["turns"] if it["task"] != "toy_exact")
    view = gather([view_run, old])
    keys = [c["key"] for c in view["browser"]["columns"]]
    assert keys == ["run:ntp", "run:sftmix", "old:ntp", "old:sftmix"]
    assert [c["baseline"] for c in view["browser"]["columns"]] == [None, "run:ntp", None, "old:ntp"]
    assert "Run" in view["tables"][0]["label_cols"]


def relabel(scores: Path) -> None:
    """Task summaries copied into another variant folder name that folder, as the score stage would have."""
    for summary in scores.glob("*.json"):
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "variant": scores.name}))


def test_seed_folders_are_columns_compared_with_ntp_of_the_same_seed(view_run, tmp_path):
    run = tmp_path / "seeded"
    shutil.copytree(view_run, run, ignore=shutil.ignore_patterns("plots"))
    for kind in ("generations", "judgments", "scores", "variants"):
        for v in VARIANTS:
            for seed in (0, 1):
                shutil.copytree(run / kind / v, run / kind / f"{v}@s{seed}")
                if kind == "scores":
                    relabel(run / kind / f"{v}@s{seed}")
            shutil.rmtree(run / kind / v)
    view = gather([run])
    cols = view["browser"]["columns"]
    assert [(c["key"], c["baseline"], c["seed"]) for c in cols] == [
        ("ntp@s0", None, 0), ("ntp@s1", None, 1), ("sftmix@s0", "ntp@s0", 0), ("sftmix@s1", "ntp@s1", 1)]
    files = files_of(view_run)
    items = {(it["task"], it["id"]): it for it in view["browser"]["items"]}
    for t in TASKS:
        for eid, sc in item_scores(files, t).items():
            assert items[t, eid]["diff"] == pytest.approx({"sftmix@s0": sc["sftmix"] - sc["ntp"],
                                                           "sftmix@s1": sc["sftmix"] - sc["ntp"]})
    assert "seeds" in " ".join(view["tables"][-1]["notes"])  # the tables merge the seeds, as bench table does


def test_a_bench_judge_folder_is_read_with_its_generations(view_run, tmp_path):
    """`bench generate --out DIR` + `bench judge --generations DIR --label L`: generations at DIR/<task>.generations
    .jsonl, scores and judgments under the label."""
    folder = tmp_path / "gen"
    shutil.copytree(view_run / "scores" / "ntp", folder / "scores" / "mine")
    relabel(folder / "scores" / "mine")
    shutil.copytree(view_run / "judgments" / "ntp", folder / "judgments" / "mine")
    for t in TASKS:
        shutil.copy(view_run / "generations" / "ntp" / f"{t}.jsonl", folder / f"{t}.generations.jsonl")
    (folder / "generate.json").write_text(json.dumps({"model": "x"}))
    b = gather([folder])["browser"]
    assert [c["key"] for c in b["columns"]] == ["mine"]
    answers = {(it["task"], it["id"]): it["cells"]["mine"]["answers"] for it in b["items"]}
    for r in files_of(view_run)["gens"]["ntp", "toy_exact"]:
        assert answers["toy_exact", r["example_id"]] == [r["text"]]
    assert any(it["cells"]["mine"].get("verdicts") for it in b["items"] if it["task"] == "mt_bench")


def test_out_may_be_a_folder_and_unwritable_output_is_one_line(view_run, tmp_path, capsys):
    assert main(["view", str(view_run), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["view", str(view_run), "--out", str(blocker / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench view: error: cannot write")


def test_serve_serves_the_file_on_localhost_only(report):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from bench.view.serve import serve; "
                             "serve(__import__('pathlib').Path(sys.argv[1]), 0, open_browser=False)", str(report)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        assert urllib.request.urlopen(url, timeout=10).read() == report.read_bytes()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "etc/passwd", timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set BENCH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe)
        yield b
        b.close()


class Loaded:
    """A page with the report loaded and every item rendered; console messages, page errors and requests seen."""

    def __init__(self, browser, path: Path, suffix: str = "", **context):
        self.context = browser.new_context(viewport={"width": 1400, "height": 900}, **context)
        self.page = self.context.new_page()
        self.console, self.errors, self.requests = [], [], []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url + suffix)  # "#item=..." or "?per-page=..."
        self.settle()

    def settle(self):
        # a selector, not wait_for_function: the page's CSP forbids the eval that wait_for_function needs
        self.page.wait_for_selector("html[data-rendered='all']", state="attached", timeout=60_000)

    def count(self) -> int:
        """Items matching the filters; every one of them is in the page (no test here has more than a page)."""
        self.settle()
        shown = self.page.locator("#item-list article.item").count()
        assert int(self.page.get_attribute("#count", "data-count")) == shown
        assert int(self.page.get_attribute("#count", "data-shown")) == shown
        return shown

    def close(self):
        self.context.close()


@pytest.fixture
def loaded(browser, report):
    page = Loaded(browser, report)
    yield page
    page.close()


def test_page_loads_offline_without_console_errors(loaded, files):
    assert loaded.errors == [] and [m for m in loaded.console if m.startswith(("error", "warning"))] == []
    assert set(loaded.requests) == {loaded.url}  # nothing fetched but the file itself
    assert loaded.count() == sum(len(item_ids(files, t)) for t in TASKS)
    assert loaded.page.locator("figure[data-plot] img").count() >= 2  # training loss, mt_bench categories
    assert all(src.startswith("data:image/png;base64,")
               for src in loaded.page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))"))


def test_rendered_tables_equal_the_score_files(loaded, view_run, files):
    page = loaded.page
    for layout in ("main", "default"):
        shown = page.eval_on_selector_all(f'table.results[data-layout="{layout}"] tbody tr',
                                          "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
        md = render_table([view_run], layout, "md")
        rows = [ln for ln in md.splitlines() if ln.startswith("|")][2:]
        assert shown == [[c.strip() for c in ln.strip("|").split(" | ")] for ln in rows]  # what bench table prints
    cells = page.eval_on_selector_all('table.results[data-layout="default"] tbody tr', """rows => rows.map(r =>
        Object.fromEntries([...r.cells].map(c => [c.dataset.col, {text: c.innerText, value: c.dataset.value}])))""")
    by_method = {r["Method"]["text"]: r for r in cells}
    for v, method in (("ntp", "NTP"), ("sftmix", "SFTMix")):
        for t in TASKS:
            s = files["summary"][v, t]
            metric = s.get("metric_shown") or ("overall" if s["kind"] == "chat" else "exact_match")
            value = s["metrics"][metric] * (100 if s["kind"] in PERCENT_KINDS else 1)
            col = next(c for c in by_method[method] if c.startswith(f"{t} "))
            assert by_method[method][col]["text"].startswith(f"{value:.2f}")
            assert float(by_method[method][col]["value"]) == pytest.approx(value)


def test_items_found_by_data_attributes_match_the_run_directory(loaded, files):
    page = loaded.page
    shown = page.eval_on_selector_all("#item-list article.item", """els => els.map(a => ({
        task: a.dataset.task, item: a.dataset.item,
        groups: [...a.querySelectorAll('[data-variant]')].map(g => [g.dataset.variant, g.textContent, g.innerText]),
        answers: [...a.querySelectorAll('[data-variant] pre.answer')].map(e => [
            e.closest('[data-variant]').dataset.variant, e.dataset.turn, e.textContent, e.innerText,
            e.dataset.pred ?? null]),
        verdicts: [...a.querySelectorAll('.verdict')].map(e => [e.dataset.of, e.dataset.turn, e.dataset.repeat,
                                                                  e.dataset.score ?? null,
                                                                  e.querySelector('.verdict-text').textContent]),
        values: [...a.querySelectorAll('[data-value-of]')].map(e => [e.dataset.valueOf,
            e.closest('.col-head').dataset.turn, e.dataset.value ?? null]),
        diff: Object.fromEntries([...a.querySelectorAll('[data-diff-of]')].map(e => [e.dataset.diffOf,
                                                                                    Number(e.dataset.diff)]))}))""")
    by_item = {(s["task"], s["item"]): s for s in shown}
    assert list(by_item) == [(t, e) for t in TASKS for e in item_ids(files, t)]  # every item, in the run's order
    for (v, t), recs in files["gens"].items():
        for r in recs:
            want = r["continuations"][r["pred"]] if r.get("scoring") == "loglik" else r["text"]
            got = [a for a in by_item[t, str(r["example_id"])]["answers"] if a[0] == v and a[1] == str(r["turn"] + 1)]
            assert len(got) == 1, (v, t, r["example_id"])
            assert got[0][2] == want and got[0][3] == want  # textContent and the rendered text
            if "pred" in r:
                assert got[0][4] == str(r["pred"])
    for (t, eid), s in by_item.items():  # one data-variant element per variant and item; its text is the answer(s)
        assert [g[0] for g in s["groups"]] == list(VARIANTS)
        for v, text, _ in s["groups"]:
            turns = sorted((r for r in files["gens"][v, t] if str(r["example_id"]) == eid), key=lambda r: r["turn"])
            want = [r["continuations"][r["pred"]] if r.get("scoring") == "loglik" else r["text"] for r in turns]
            assert text == "".join(want)
    for (v, t), recs in files["judgments"].items():
        for r in recs:
            got = [x for x in by_item[t, str(r["example_id"])]["verdicts"]
                   if x[:3] == [v, str(r["turn"]), str(r["repeat"])]]
            assert len(got) == 1
            assert (None if got[0][3] is None else float(got[0][3])) == r["score"]
            assert got[0][4] == r["raw"]
    for (v, t), recs in files["values"].items():
        scale = 100.0 if files["summary"][v, t]["kind"] in PERCENT_KINDS else 1.0
        for r in recs:
            turn = str(r["turn"] if t == "mt_bench" else r["turn"] + 1)
            got = [x for x in by_item[t, str(r["example_id"])]["values"] if x[:2] == [v, turn]]
            assert len(got) == 1 and float(got[0][2]) == pytest.approx(float(r["value"]) * scale)
    for t in TASKS:
        for eid, s in item_scores(files, t).items():
            assert by_item[t, eid]["diff"]["sftmix"] == pytest.approx(s["sftmix"] - s["ntp"])


def test_filters_change_the_visible_item_count(loaded, files):
    from playwright.sync_api import expect  # optional: the browser fixture skips without playwright

    page = loaded.page
    total = sum(len(item_ids(files, t)) for t in TASKS)
    cats = {str(r["example_id"]): r["category"] for r in files["gens"]["ntp", "mt_bench"]}

    def shows(n: int) -> None:
        expect(page.locator("#count")).to_have_attribute("data-count", str(n))
        assert loaded.count() == n

    shows(total)
    page.select_option("#f-task", "toy_mcq")
    shows(len(item_ids(files, "toy_mcq")))
    page.select_option("#f-task", "mt_bench")
    page.select_option("#f-category", "math")
    shows(sum(c == "math" for c in cats.values()))
    page.select_option("#f-category", "")
    page.check("#f-failed")
    failed = expected_failed(files)
    shows(len([k for k in failed if k[0] == "mt_bench"]))
    assert page.get_attribute("#item-list article.item", "data-item") == "83"
    page.select_option("#f-task", "")
    shows(len(failed))
    page.uncheck("#f-failed")
    page.check("#f-disagree")
    dis = expected_disagree(files)
    shows(len(dis))
    assert {(a, b) for a, b in page.eval_on_selector_all(
        "#item-list article.item", "els => els.map(e => [e.dataset.task, e.dataset.item])")} == dis
    page.click("#f-reset")
    shows(total)
    page.fill("#f-search", "TWO SPACES")  # case-insensitive, in answers
    with_text = {(t, str(r["example_id"])) for (v, t), recs in files["gens"].items() for r in recs
                 if "two spaces" in (r.get("text") or "").lower()}
    shows(len(with_text))
    page.fill("#f-search", "window.__pwned")  # hostile text is searchable as text: answers and judge replies
    shows(len({(t, str(r["example_id"])) for (v, t), recs in [*files["gens"].items(), *files["judgments"].items()]
               for r in recs if "window.__pwned" in str(r.get("text") or r.get("raw") or "")}))
    page.fill("#f-search", "no such text anywhere")
    shows(0)
    assert page.locator("#f-dirty-wrap").is_hidden()  # no contamination report in this run
    page.fill("#f-search", "")
    shows(total)
    page.uncheck('#f-columns input[data-col="ntp"]')  # hide a variant's column: its answers go, the others stay
    loaded.settle()
    assert page.locator('[data-variant="ntp"]').count() == 0
    assert page.locator('[data-variant="sftmix"]:visible').count() == total
    page.check('#f-columns input[data-col="ntp"]')
    loaded.settle()
    assert page.locator('[data-variant="ntp"]:visible').count() == total


def test_hostile_answers_and_judge_replies_are_shown_as_text(browser, report):
    # twice: with the page's CSP, and with it bypassed (escaping alone must keep the page safe)
    for bypass in (False, True):
        p = Loaded(browser, report, bypass_csp=bypass)
        page = p.page
        assert page.evaluate("typeof window.__pwned") == "undefined"
        for sel in ("#item-list script", "#item-list img", "#item-list b", "#item-list iframe",
                    '#item-list a[href^="javascript"]'):
            assert page.locator(sel).count() == 0, sel
        ans = page.locator('article[data-task="mt_bench"][data-item="82"] [data-variant="sftmix"] [data-turn="1"]')
        assert ans.text_content() == HOSTILE and ans.inner_text() == HOSTILE
        texts = page.locator('article[data-task="mt_bench"][data-item="82"] .verdict[data-turn="1"] .verdict-text')
        assert texts.count() == 4 and set(texts.all_text_contents()) == {HOSTILE_JUDGE}
        failed = page.locator('article[data-item="83"] .verdict.failed')
        assert failed.count() == 2 and failed.locator(".verdict-text").all_text_contents() == [UNPARSABLE] * 2
        mcq = page.locator('article[data-task="toy_mcq"] .box.prompt pre').first
        assert mcq.text_content().startswith("<|im_start|>user\n")  # a chat template's markup-like tokens as text
        assert p.errors == []
        p.close()


def test_sort_by_difference_and_links_to_items(browser, loaded, report, files):
    page = loaded.page
    page.select_option("#f-sort", "diff-desc")
    diffs = page.eval_on_selector_all("#item-list article.item", """els => els.map(e => {
        const d = e.querySelector('[data-diff-of="sftmix"]'); return d ? Number(d.dataset.diff) : null; })""")
    have = [d for d in diffs if d is not None]
    assert have == sorted(have, reverse=True) and diffs[:len(have)] == have  # items without a difference last
    best = max(((t, e, s["sftmix"] - s["ntp"]) for t in TASKS for e, s in item_scores(files, t).items()),
               key=lambda x: x[2])
    assert diffs[0] == pytest.approx(best[2])
    page.select_option("#f-sort", "diff-asc")
    diffs = [d for d in page.eval_on_selector_all("#item-list article.item", """els => els.map(e => {
        const d = e.querySelector('[data-diff-of="sftmix"]'); return d ? Number(d.dataset.diff) : null; })""")
             if d is not None]
    assert diffs == sorted(diffs)
    # a link to an item that the current filter hides: following it shows the item's task and scrolls to it
    page.select_option("#f-task", "toy_mcq")
    href = page.get_attribute('article[data-task="toy_mcq"] a.anchor', "href")
    assert href.startswith("#item=toy_mcq/")
    page.evaluate("location.hash = '#item=mt_bench/83'")
    target = page.locator("article.item.target")
    target.wait_for()
    assert (target.get_attribute("data-task"), target.get_attribute("data-item")) == ("mt_bench", "83")
    assert page.input_value("#f-task") == "mt_bench"
    from playwright.sync_api import expect  # optional: the browser fixture skips without playwright

    expect(target).to_be_in_viewport()
    # opening the file with the link works too
    other = Loaded(browser, report, "#item=toy_exact/" + item_ids(files, "toy_exact")[-1])
    expect(other.page.locator("article.item.target")).to_be_in_viewport()
    other.close()


def test_contamination_report_turns_on_the_dirty_filter(browser, view_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(view_run, run)
    ids = item_ids(files_of(run), "toy_mcq")
    write_contamination(run, {"toy_mcq": ids[:2]})
    p = Loaded(browser, write_report([run], tmp_path / "r.html"))
    page = p.page
    assert page.locator("#f-dirty-wrap").is_visible()
    page.select_option("#f-dirty", "dirty")
    assert p.count() == 2
    assert page.locator("article.item .badge.dirty").count() == 2
    page.select_option("#f-dirty", "clean")  # the clean items of the tasks the report covers
    assert p.count() == len(ids) - 2
    page.select_option("#f-dirty", "")
    assert p.count() == sum(len(item_ids(files_of(run), t)) for t in TASKS)
    p.close()


@pytest.mark.slow
def test_a_large_run_is_paged_and_filters_run_over_all_of_it(browser, tmp_path):
    from playwright.sync_api import expect  # optional: the browser fixture skips without playwright

    run = fabricate_view_run(tmp_path / "run", n_items=400, n_variants=8, chars=40)  # 3,200 answers: paged
    report = write_report([run], tmp_path / "r.html")
    p = Loaded(browser, report)
    page = p.page
    assert p.errors == [] and page.get_attribute("#count", "data-count") == "400"

    def ids() -> list[str]:
        return page.eval_on_selector_all("#item-list article.item", "els => els.map(e => e.dataset.item)")

    assert ids() == [str(i) for i in range(50)] and page.locator("article.item").first.locator(
        "[data-variant]").count() == 8
    page.click("#f-next")
    p.settle()
    assert ids() == [str(i) for i in range(50, 100)]
    assert page.text_content("#f-page") == "page 2 of 8"
    page.fill("#f-search", "xyz-not-there")  # filters and search run over every item, not the page
    expect(page.locator("#count")).to_have_attribute("data-count", "0")
    page.fill("#f-search", "")
    expect(page.locator("#count")).to_have_attribute("data-count", "400")
    assert ids()[0] == "0"  # a new filter starts again at the first page
    page.evaluate("location.hash = '#item=alpaca_eval/321'")  # a link onto another page
    page.locator("article.item.target").wait_for()
    assert page.text_content("#f-page") == "page 7 of 8" and "321" in ids()
    expect(page.locator("article.item.target")).to_be_in_viewport()
    marks = page.evaluate("['bench-view-first-items', 'bench-view-page-items'].map("
                          "n => performance.getEntriesByName(n).length)")
    assert marks == [1, 1]
    p.close()
    p = Loaded(browser, report.with_name("r.html"), "?per-page=all")  # every item on one page, rendered in chunks
    assert p.count() == 400 and p.page.text_content("#f-page") == "page 1 of 1"
    p.close()


def test_a_log_likelihood_record_of_another_kind_shows_its_text_and_score():
    """A perplexity record (no generated text, not mcq): the scored text is the item's reference, the column's
    answer the model's log-likelihood of it; an mcq record is still read as a choice."""

    it = {"task": "wiki", "id": "1", "turns": [], "cells": {}}
    rec = GenerationRecord.from_dict({"task": "wiki", "example_id": "1", "turn": 0, "context": "",
                                      "continuations": ["The cat sat."], "logliks": [-7.25], "answer": "The cat sat."})
    cell = _add_generations(it, [rec])
    assert it["turns"][0]["reference"] == "The cat sat." and "prompt" not in it["turns"][0]
    assert cell["answers"] == ["log-likelihood -7.250"] and cell["logliks"] == [-7.25]
    it = {"task": "m", "id": "2", "turns": [], "cells": {}}
    mcq = GenerationRecord.from_dict({"task": "m", "example_id": "2", "turn": 0, "context": "Q?",
                                      "continuations": [" A", " B"], "logliks": [-1.0, -2.0], "answer": 1, "pred": 0,
                                      "scoring": "loglik"})
    cell = _add_generations(it, [mcq])
    assert cell["answers"] == [" A"] and it["turns"][0] == {"prompt": "Q?", "reference": " B"}


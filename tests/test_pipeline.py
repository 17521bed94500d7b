"""`bench run` end to end on the `ci` experiment made even smaller: results directory, re-run and partial re-run,
resume after kill -9 mid-judging (requests counted at a test judge server), refused output directory, dead
judge, dry run.

One finished run is made once per module (in-process) and copied by the tests that change it.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import threading
from pathlib import Path

import pytest

from bench.commands.run import add_arguments, build_config
from bench.config import experiment_path, load_run_config
from bench.pipeline import check_out_dir
from bench.rundir import ContaminationReport, RunDir
from core.io import hash_file
from openai_server import FakeOpenAIServer, prompt_key
from sftmix.config import split_overrides
from sftmix.sources import BUNDLED
from support import ROOT, bench, bench_subprocess, error_lines
from test_rundir import undocumented

SMALL = ["max_examples=48", "num_train_epochs=1", "limit=6", "max_new_tokens=16", "num_checkpoints=2"]
VARIANTS, TASKS = ("ntp", "sftmix"), ("toy_open", "toy_mcq", "toy_exact")
# Stage lines share stderr with progress bars ('\r' without a newline), so they need not start a line.
STAGE_LINE = re.compile(r"\[\d+/\d+\] (run|redo|resume) ([\w/.-]+)$", re.M)
# "judge requests: N (...)" for an LLM judge; "judge verdicts: N (reference rubric, no requests)" otherwise
SUMMARY = re.compile(r"stages run: (\d+), skipped \(already done\): (\d+); model requests: (\d+), "
                     r"(?:judge requests: (\d+)|judge verdicts: \d+ \([^)]*no requests\))")


def run_args(out: Path, *extra: str) -> list[str]:
    return ["run", "--config", "ci", "--out", str(out), *SMALL, *extra]


def listing(root: Path) -> dict:
    """Every file and folder under ``root`` with size and mtime: 'nothing modified' means equal listings."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def ran_stages(stderr: str) -> list[str]:
    return [m.group(2) for m in STAGE_LINE.finditer(stderr)]


def summary_numbers(stdout: str) -> dict:
    m = SUMMARY.search(stdout)
    assert m, stdout
    return dict(zip(("ran", "skipped", "model_requests", "judge_requests"), (int(g or 0) for g in m.groups())))


def all_stages() -> list[str]:
    return (["contamination", "dynamics"] + [f"train/{v}" for v in VARIANTS]
            + [f"{s}/{v}/{t}" for s in ("generate", "score") for v in VARIANTS for t in TASKS])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run: (results dir, exit code, stdout, stderr)."""
    out = tmp_path_factory.mktemp("pipeline") / "run"
    rc, stdout, stderr = bench(*run_args(out))
    return out, rc, stdout, stderr


@pytest.fixture
def copy_of(finished, tmp_path):
    """A private copy of the finished run for tests that change it (mtimes kept)."""
    dst = tmp_path / "run"
    shutil.copytree(finished[0], dst)
    return dst


# ---- the run ----------------------------------------------------------------------------------------------------

def test_end_to_end_results_directory(finished):
    out, rc, stdout, stderr = finished
    assert rc == 0, stderr[-3000:]
    assert sorted(ran_stages(stderr)) == sorted(all_stages())
    # The table names both variants, the judge of the open-ended task and how many verdicts failed to parse.
    assert "| NTP |" in stdout and "| SFTMix |" in stdout
    judge_note = [ln for ln in stdout.splitlines() if "reference-rubric-v1" in ln]
    assert judge_note and "toy_open" in judge_note[0] and "n_failed" in judge_note[0], stdout
    assert str(out) in stdout

    assert (out / "config.yaml").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    cfg = load_run_config(experiment_path("ci"), {**split_overrides(SMALL), "run.out": str(out)})
    assert prov["config_hash"] == cfg.config_hash()
    assert prov["seed"] == cfg.train.seed
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", prov["git"]["commit"]) and isinstance(prov["git"]["dirty"], bool)
    assert {"torch", "transformers", "python"} <= set(prov["packages"])
    assert prov["backend"]["name"] == "hf"
    assert prov["judge"] == {"kind": "reference", "model": "reference-rubric-v1"}
    assert prov["train_data"]["sha256_16"] == hash_file(BUNDLED["toy"])
    assert set(prov["task_data"]) == set(TASKS) and all(t["data_hash"] for t in prov["task_data"].values())
    assert isinstance(prov["chat_template_hash"], str) and prov["chat_template_hash"]
    assert prov["hardware"]["cpu_count"] >= 1
    assert prov["status"] == "done"

    for v in VARIANTS:
        for t in TASKS:
            summary = json.loads((out / "scores" / v / f"{t}.json").read_text())
            assert summary["task"] == t and summary["variant"] == v and summary["metrics"]
            items = [json.loads(ln) for ln in (out / "scores" / v / f"{t}.items.jsonl").read_text().splitlines()]
            assert items and all("example_id" in it and "value" in it for it in items)
        judged = json.loads((out / "scores" / v / "toy_open.json").read_text())
        assert judged["judge"] == "reference-rubric-v1" and judged["n_failed"] == 0
        assert (out / "variants" / v / "model" / "config.json").is_file()
    assert (out / "tables" / "default.md").read_text().strip() in stdout
    pngs = sorted((out / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_rerun_of_finished_run_does_nothing(finished):
    out = finished[0]
    before = {p: p.stat().st_mtime_ns for p in (out / "state").iterdir()}
    rc, stdout, stderr = bench(*run_args(out))
    assert rc == 0, stderr[-3000:]
    assert ran_stages(stderr) == []
    assert summary_numbers(stdout) == {"ran": 0, "skipped": len(all_stages()), "model_requests": 0,
                                       "judge_requests": 0}
    assert {p: p.stat().st_mtime_ns for p in (out / "state").iterdir()} == before
    assert "| SFTMix |" in stdout  # the stored table is printed again


def test_contamination_stage_added_to_a_finished_run_sends_no_request(copy_of):
    """A finished run without the check (or with other settings) gets it on the next `bench run`: only the
    contamination stage runs, no generation or judge request is made, and its table shows the clean-item scores."""
    shutil.rmtree(copy_of / "contamination")
    (copy_of / "state" / "contamination.json").unlink()
    made = {d: listing(copy_of / d) for d in ("generations", "judgments", "scores", "variants")}
    # n = 5: the toy tasks ask facts in the training data's own phrasing, so short n-grams overlap
    rc, stdout, stderr = bench(*run_args(copy_of, "contamination.n=5"))
    assert rc == 0, stderr[-3000:]
    assert ran_stages(stderr) == ["contamination"]
    assert summary_numbers(stdout)["model_requests"] == summary_numbers(stdout)["judge_requests"] == 0
    assert {d: listing(copy_of / d) for d in made} == made  # nothing generated, judged, scored or trained again
    reports = ContaminationReport.read_all(RunDir(copy_of))
    assert set(reports) == set(TASKS) and reports["toy_mcq"].extra["n"] == 5
    assert any(r.dirty and r.clean_ids() for r in reports.values())  # toy_open: some of each
    assert "5-gram overlap between toy" in stderr and "| toy_open | 6 |" in stderr  # the finding, as it runs
    stored = (copy_of / "tables" / "contamination.md").read_text()
    assert "toy_open overall: clean" in stored and "| SFTMix |" in stored
    assert (copy_of / "tables" / "contamination.csv").is_file()
    rc, table, _ = bench("table", str(copy_of))
    assert rc == 0 and table.partition("### Contamination: scores on all items and on the clean items")[2].strip() \
        == stored.strip()


def test_a_task_of_a_new_kind_added_to_a_finished_run(copy_of, numeric_kind):  # noqa: F811
    """A benchmark of a kind nothing in bench knows (its scorer and YAML defined by tests/test_new_kind.py) joins a
    finished run: only its own stages (and the contamination check, which reads every task) run; the table shows
    it, headed by its scorer's primary metric."""
    tasks = f"tasks=[{','.join(TASKS)},{numeric_kind}]"
    rc, stdout, stderr = bench(*run_args(copy_of, tasks, "--force"))
    assert rc == 0, stderr[-3000:]
    assert sorted(ran_stages(stderr)) == sorted(["contamination"] + [f"{s}/{v}/{numeric_kind}" for s in
                                                                     ("generate", "score") for v in VARIANTS])
    assert summary_numbers(stdout)["model_requests"] == 2 * 3  # 2 variants x its 3 items, nothing else again
    for v in VARIANTS:
        summary = json.loads((copy_of / "scores" / v / f"{numeric_kind}.json").read_text())
        assert summary["kind"] == "numeric_tolerance" and summary["metric_shown"] == "within_tol"
        assert set(summary["metrics"]) == {"within_tol"} and summary["n_items"] == 3
    table = (copy_of / "tables" / "default.md").read_text()
    assert numeric_kind in table and "within_tol" in table, table


def test_changing_max_new_tokens_reruns_only_generation_and_scoring(copy_of):
    rc, stdout, stderr = bench(*run_args(copy_of, "max_new_tokens=8", "--force"))
    assert rc == 0, stderr[-3000:]
    want = [s for s in all_stages() if s.startswith(("generate/", "score/"))]
    assert sorted(ran_stages(stderr)) == sorted(want)
    n = summary_numbers(stdout)
    assert n["skipped"] == 4 and n["model_requests"] > 0  # contamination, dynamics and both trainings kept
    assert json.loads((copy_of / "provenance.json").read_text())["backend"]["max_new_tokens"] == 8


def test_changing_judge_repeats_reruns_only_chat_scoring(copy_of):
    rc, stdout, stderr = bench(*run_args(copy_of, "judge.repeats=2", "--force"))
    assert rc == 0, stderr[-3000:]
    assert sorted(ran_stages(stderr)) == [f"score/{v}/toy_open" for v in VARIANTS]
    assert summary_numbers(stdout)["model_requests"] == 0
    assert json.loads((copy_of / "scores" / "ntp" / "toy_open.json").read_text())["repeats"] == 2


# ---- resume after kill -9 mid-judging -----------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_after_kill_mid_judging_repeats_no_judge_call_and_no_training(tmp_path):
    """Kill `bench run` while the LLM judge is answering; the re-run asks only what was not answered."""
    kill_at = 4  # the 4th judge request blocks until the process is dead
    reached, release = threading.Event(), threading.Event()

    def fault(n, k, messages):
        if n == kill_at:
            reached.set()
            release.wait(120)
            return {"status": 503}  # nobody is listening any more; not counted as served
        return None

    out = tmp_path / "run"
    args = run_args(out, "--variants", "ntp", "--tasks", "toy_open", "judge.concurrency=1")
    with FakeOpenAIServer(fault=fault, models=("test-judge",)) as server:
        args += ["--judge-model", "test-judge", "--judge-base-url", server.url]
        proc = bench_subprocess(*args)
        try:
            assert reached.wait(300), "the run never reached judging: " + proc.communicate(timeout=60)[1][-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        assert json.loads((out / "state" / "score__ntp__toy_open.json").read_text())["status"] == "running"
        train_state = (out / "state" / "train__ntp.json").read_text()
        model_mtime = (out / "variants" / "ntp" / "model").stat().st_mtime_ns
        answered_before = sum(server.served.values())
        assert answered_before == kill_at - 1
        total_before = server.total

        proc = bench_subprocess(*args)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]

        # Training and generation were not repeated: only the scoring stage resumed.
        assert ran_stages(stderr) == ["score/ntp/toy_open"]
        assert re.search(r"\[\d+/\d+\] resume score/ntp/toy_open$", stderr, re.M)
        assert (out / "state" / "train__ntp.json").read_text() == train_state
        assert (out / "variants" / "ntp" / "model").stat().st_mtime_ns == model_mtime

        records = [json.loads(ln) for ln in (out / "judgments" / "ntp" / "toy_open.jsonl").read_text().splitlines()]
        assert records and not any(r["failed"] for r in records)
        distinct = {(r["example_id"], r["turn"], r["repeat"]) for r in records}
        # No judge prompt was answered twice, and every distinct judge call was answered exactly once.
        assert set(server.served.values()) == {1}
        assert len(server.served) == len(distinct) == len(records)
        assert server.total == len(records) + 1  # + the one request the kill cut off
        assert summary_numbers(stdout)["judge_requests"] == server.total - total_before
    assert json.loads((out / "scores" / "ntp" / "toy_open.json").read_text())["judge"] == "test-judge"


# ---- bad input --------------------------------------------------------------------------------------------------

def test_output_dir_of_another_config_is_refused_unless_force(finished):
    out = finished[0]
    before = listing(out)
    rc, stdout, stderr = bench(*run_args(out, "limit=5"))
    assert rc == 2
    lines = error_lines(stderr)
    assert len(lines) == 1 and "different config" in lines[0] and "--force" in lines[0], stderr
    assert stderr.strip() == lines[0]
    assert listing(out) == before


def test_missing_training_data_leaves_existing_run_untouched(copy_of, tmp_path):
    """Even with --force, a missing data file is found before a stage removes or rewrites anything."""
    before = listing(copy_of)
    rc, _, stderr = bench(*run_args(copy_of, "--train-data", str(tmp_path / "missing.jsonl"), "--force"))
    assert rc == 2
    lines = error_lines(stderr)
    assert len(lines) == 1 and "missing.jsonl" in lines[0], stderr
    assert listing(copy_of) == before


@pytest.mark.slow
def test_dead_judge_fails_fast_before_training(tmp_path):
    out = tmp_path / "run"
    proc = bench_subprocess(*run_args(out, "--judge-model", "test-judge", "--judge-base-url",
                                      f"http://127.0.0.1:{closed_port()}/v1"))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "judge" in lines[0], stderr
    assert stderr.strip() == lines[0]
    assert not out.exists()  # checked before training, before the results directory is even made
    # ... so the same --out is still usable once the judge is up.
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    check_out_dir(build_config(parser.parse_args(run_args(out)[1:])), out, force=False)


def test_dry_run_prints_plan_and_creates_nothing(tmp_path, finished):
    out = tmp_path / "fresh"
    rc, stdout, stderr = bench(*run_args(out, "--dry-run"))
    assert rc == 0, stderr[-3000:]
    assert not out.exists()
    planned = re.findall(r"^\s+(run|skip|redo|resume)\s+(\S+)", stdout, re.M)
    assert [s for _, s in planned] == all_stages() and {v for v, _ in planned} == {"run"}
    assert re.search(r"generations to make: [1-9]\d*", stdout)
    assert re.search(r"judge calls: [1-9]\d* to reference-rubric-v1", stdout)

    # On the finished run everything is skipped and nothing is left to generate or judge.
    done = finished[0]
    before = listing(done)
    rc, stdout, _ = bench(*run_args(done, "--dry-run"))
    assert rc == 0
    assert {v for v, _ in re.findall(r"^\s+(run|skip|redo|resume)\s+(\S+)", stdout, re.M)} == {"skip"}
    assert "generations to make: 0" in stdout and "judge calls: 0" in stdout
    assert listing(done) == before


# ---- trustworthy runs (issue 10): stage lines, locks, judge failures, validation order ---------------------------

def test_stage_lines_carry_durations_and_trainer_logs_go_to_a_file(finished):
    out, rc, _, stderr = finished
    assert rc == 0
    for stage in all_stages():
        assert re.search(r"\[\d+/\d+\] done %s in \d+\.\d s$" % re.escape(stage), stderr, re.M), stage
    assert "'loss'" not in stderr and "'grad_norm'" not in stderr  # no raw Trainer dicts among the stage lines
    logged = [json.loads(ln) for ln in (out / "variants" / "ntp" / "train_log.jsonl").read_text().splitlines()]
    assert logged and all("step" in e for e in logged) and any("loss" in e for e in logged)


def test_changed_options_own_error_wins_over_different_config(finished):
    out = finished[0]
    before = listing(out)
    rc, _, stderr = bench(*run_args(out, "limit=-3"))
    assert rc == 2
    (line,) = error_lines(stderr)
    assert "run.limit" in line and ">= 1" in line and "different config" not in line
    assert listing(out) == before


def judge_args(server, *extra: str) -> list[str]:
    return ["--judge-model", "judge-model", "--judge-base-url", server.url, "--force", *extra]


def test_rerun_after_judge_failures_asks_exactly_the_failed_verdicts(copy_of):
    failing = {"on": True}

    def fault(n, k, messages):  # about a third of the prompts fail while `failing` is on
        return {"status": 503} if failing["on"] and int(prompt_key(messages), 16) % 3 == 0 else None

    with FakeOpenAIServer(fault=fault) as server:
        rc, stdout, stderr = bench(*run_args(copy_of, *judge_args(server, "judge.max_retries=0")))
        assert rc == 1, stderr[-3000:]  # finished, but with verdicts missing: not a silent success
        failed = server.total - sum(server.served.values())
        assert failed > 0 and sum(server.served.values()) > 0
        summaries = [json.loads((copy_of / "scores" / v / "toy_open.json").read_text()) for v in VARIANTS]
        assert sum(s["failures"]["transport"] for s in summaries) == failed
        assert all(s["failures"]["refused"] == s["failures"]["unparsable"] == 0 for s in summaries)
        assert "transport" in stdout and "n_failed" in stdout  # the table's note names the cause
        incomplete = sorted(f"score/{v}/toy_open" for v, s in zip(VARIANTS, summaries) if s["failures"]["transport"])
        assert incomplete and all(json.loads((copy_of / "state" / (st.replace("/", "__") + ".json")).read_text())
                                  ["status"] == "incomplete" for st in incomplete)

        failing["on"] = False
        served_before, total_before = dict(server.served), server.total
        rc, stdout, stderr = bench(*run_args(copy_of, *judge_args(server, "judge.max_retries=0")))
        assert rc == 0, stderr[-3000:]
        assert sorted(ran_stages(stderr)) == incomplete  # only the stages with failures resumed
        assert server.total - total_before == failed  # exactly the failed verdicts were asked again...
        assert all(server.served[k] == 1 for k in served_before)  # ...and nothing already answered
        for v in VARIANTS:
            s = json.loads((copy_of / "scores" / v / "toy_open.json").read_text())
            assert s["n_failed"] == 0
            assert s["failures"] == {"transport": 0, "refused": 0, "unparsable": 0, "malformed": 0}

        total_before, listed_before = server.total, server.models_requests
        rc, stdout, stderr = bench(*run_args(copy_of, *judge_args(server, "judge.max_retries=0")))
        assert rc == 0 and ran_stages(stderr) == [] and server.total == total_before
        assert server.models_requests == listed_before  # nothing left to judge: no preflight either


@pytest.mark.parametrize("refusal", [{"status": 401, "message": "Incorrect API key provided"},
                                     {"empty_choices": True}], ids=["401", "empty-choices"])
def test_refusing_judge_stops_and_keeps_earlier_scores(copy_of, refusal):
    scores = {p: p.read_bytes() for p in sorted((copy_of / "scores").rglob("*")) if p.is_file()}
    judgments = {p: p.read_bytes() for p in sorted((copy_of / "judgments").rglob("*")) if p.is_file()}
    with FakeOpenAIServer(fault=lambda n, k, m: refusal) as server:
        rc, stdout, stderr = bench(*run_args(copy_of, *judge_args(server)))
        assert server.total >= 1
    assert rc != 0
    (line,) = error_lines(stderr)
    assert "refused" in line and "nothing was written" in line
    assert {p: p.read_bytes() for p in sorted((copy_of / "scores").rglob("*")) if p.is_file()} == scores
    assert {p: p.read_bytes() for p in sorted((copy_of / "judgments").rglob("*")) if p.is_file()} == judgments


@pytest.mark.slow
def test_second_run_on_a_directory_in_use_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path):
    reached, release = threading.Event(), threading.Event()

    def fault(n, k, messages):  # the first judge request blocks: run A is alive and holds the directory
        if n == 1:
            reached.set()
            release.wait(120)
            return {"status": 503}
        return None

    out = tmp_path / "run"
    with FakeOpenAIServer(fault=fault) as server:
        args = run_args(out, "--variants", "ntp", "--tasks", "toy_open", "judge.concurrency=1",
                        "--judge-model", "judge-model", "--judge-base-url", server.url)
        proc = bench_subprocess(*args)
        try:
            assert reached.wait(300), "run A never reached judging: " + proc.communicate(timeout=60)[1][-3000:]
            before = listing(out)
            for extra in ([], ["learning_rate=1e-4", "--force"]):  # the same config, or another one
                rc, _, stderr = bench(*args, *extra)
                assert rc == 2
                (line,) = error_lines(stderr)
                assert f"in use by another run (pid {proc.pid}" in line, line
            assert listing(out) == before  # the refused runs touched nothing
            os.kill(proc.pid, signal.SIGKILL)  # A dies holding the lock: the kernel releases it
            proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        rc, stdout, stderr = bench(*args)
        assert rc == 0, stderr[-3000:]
        assert ran_stages(stderr) == ["score/ntp/toy_open"]  # A's training and generation were kept


# ---- bench view of the finished run ------------------------------------------------------------------------------

from test_new_kind import numeric_kind  # noqa: E402,F401 (the fixture: a new kind's scorer and YAML)
from test_view import Loaded, browser  # noqa: E402,F401 (browser: the module-scoped Chromium fixture)


def test_bench_view_of_the_finished_run_shows_it_item_by_item(finished, browser, tmp_path):  # noqa: F811
    """What the report shows in headless Chromium equals the run directory: every generation found by its
    data-task / data-item / data-variant / data-turn attributes, and the table `bench run` stored."""
    out = finished[0]
    report = tmp_path / "report.html"
    rc, stdout, stderr = bench("view", str(out), "--out", str(report))
    assert rc == 0, stderr
    page = Loaded(browser, report)
    assert page.errors == [] and not [m for m in page.console if m.startswith("error")]
    shown = page.page.eval_on_selector_all("#item-list [data-variant] pre.answer", """els => els.map(e => [
        e.closest('article').dataset.task, e.closest('article').dataset.item,
        e.closest('[data-variant]').dataset.variant, e.dataset.turn, e.textContent])""")
    want = []
    for path in sorted((out / "generations").glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            text = r["continuations"][r["pred"]] if r.get("scoring") == "loglik" else r["text"]
            want.append([r["task"], str(r["example_id"]), path.parent.name, str(r["turn"] + 1), text])
    assert sorted(shown) == sorted(want)
    rows = page.page.eval_on_selector_all('table.results[data-layout="default"] tbody tr',
                                          "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    stored = [ln for ln in (out / "tables" / "default.md").read_text().splitlines() if ln.startswith("|")][2:]
    assert rows == [[c.strip() for c in ln.strip("|").split(" | ")] for ln in stored]
    page.close()


def test_every_file_a_run_writes_is_documented(finished):
    """docs/RUNDIR.md stays true: each file (and empty folder) the finished run left matches a path pattern of its
    "Files" table."""
    out = finished[0]
    assert finished[1] == 0, finished[3][-2000:]
    written = [p for p in out.rglob("*") if p.is_file() or (p.is_dir() and not any(p.iterdir()))]
    assert len(written) > 50 and (out / "variants" / "sftmix" / "train_log.jsonl").is_file()
    assert undocumented(written, out) == []

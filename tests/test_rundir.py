"""The run-directory module (bench.rundir, docs/RUNDIR.md): paths, record round trips, the format version, and
the tables' independence from sftmix (row order and settings from the run's own records)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.rundir import (FORMAT, VERSION, ItemValues, JudgeLog, JudgeLogEntry, Judgments, MetricUnit,
                          Provenance, RunConfigRecord, RunDir, StageState, TaskSummary, TrainRecord, Verdict,
                          read_jsonl, split_seed, write_jsonl)
from bench.cli import main
from bench.config import experiment_path, load_run_config
from bench.pipeline import check_out_dir
from bench.tables import build_table, render_table
from core.errors import UserError
from support import ROOT


def test_paths_follow_the_documented_layout(tmp_path):
    rd = RunDir(tmp_path)
    rel = lambda p: p.relative_to(tmp_path).as_posix()  # noqa: E731
    assert rel(rd.state("score/sftmix@s1/toy_open")) == "state/score__sftmix@s1__toy_open.json"
    assert rel(rd.summary("ntp", "bigbench:navigate")) == "scores/ntp/bigbench:navigate.json"
    assert rel(rd.item_values("ntp", "toy_mcq")) == "scores/ntp/toy_mcq.items.jsonl"
    assert rel(rd.generations("ntp", "toy_mcq")) == "generations/ntp/toy_mcq.jsonl"
    assert rel(rd.judgments("ntp", "toy_open")) == "judgments/ntp/toy_open.jsonl"
    assert rel(rd.train_record("sftmix")) == "variants/sftmix/train.json"
    assert rel(rd.model_dir("sftmix")) == "variants/sftmix/model"
    assert rel(rd.confidence(rd.dynamics_dir("ab12cd34", 2))) == "dynamics-ab12cd34@s2/confidence.parquet"
    assert rel(rd.confidence()) == "dynamics/confidence.parquet"
    assert rel(rd.table("default", "latex")) == "tables/default.tex"
    assert rel(rd.plot("training_loss")) == "plots/training_loss.png"
    assert rel(rd.generate_output("toy_mcq")) == "toy_mcq.generations.jsonl"
    assert rel(rd.generate_metrics("toy_mcq")) == "toy_mcq.scores.json"
    assert [rel(p) for p in (rd.config, rd.provenance, rd.cache, rd.judge_log, rd.stamp)] == [
        "config.yaml", "provenance.json", "cache.sqlite", "judge_log.jsonl", "rundir.json"]
    assert split_seed("sftmix@s12") == ("sftmix", 12) and split_seed("ntp") == ("ntp", None)
    assert split_seed("odd@sx") == ("odd@sx", None)
    found = RunDir.of_model_dir(rd.model_dir("sftmix@s1"))
    assert found[0].root == tmp_path and found[1] == "sftmix@s1"
    assert RunDir.of_model_dir(tmp_path / "some" / "model") is None


def test_every_record_round_trips(tmp_path):
    rd = RunDir(tmp_path / "run")
    state = StageState("k1", "done", 12.5, {"seconds": 3.2})
    state.write(rd, "train/ntp")
    assert StageState.read(rd, "train/ntp") == state and StageState.read(rd, "train/other") is None

    summary = TaskSummary(task="toy_mcq", variant="ntp", kind="mcq", metrics={"acc": 0.5, "acc_norm": float("nan")},
                          model="tiny", train_data="toy", n_items=4, n_failed=1, repeats=2, metric_shown="acc",
                          failures={"transport": 1}, protocol="lm-eval", conformant=None, seed=3,
                          extra={"scorer": "mcq", "conformant": None})
    path = summary.write(rd)
    assert path == rd.summary("ntp", "toy_mcq")
    back = TaskSummary.read(path)
    assert back.metrics == {"acc": 0.5, "acc_norm": None}  # NaN is stored as null
    assert back.to_dict() == summary.to_dict() and back.seed == 3 and back.scorer == "mcq"
    assert json.loads(path.read_text())["conformant"] is None  # an explicit null stays in the file

    items = ItemValues([{"example_id": "1", "value": 1.0, "turn": None}, {"example_id": "2", "value": 0.0,
                                                                          "turn": None}])
    items.write(rd, "ntp", "toy_mcq")
    assert ItemValues.read(rd.item_values("ntp", "toy_mcq")) == items
    assert ItemValues.read(rd.item_values("ntp", "missing")) is None

    train = TrainRecord(variant={"name": "ntp", "mu": 0.0}, log_history=[{"step": 1, "loss": 2.0}, {"step": 2}],
                        extra={"config_hash": "abc"})
    train.write(rd, "ntp")
    assert TrainRecord.read(rd.train_record("ntp")) == train and train.losses() == [2.0]

    prov = Provenance("h1", "done", {"variants": {"ntp": {"name": "ntp"}}, "seed": 0})
    prov.write(rd)
    assert Provenance.read(rd) == prov and Provenance.read(RunDir(tmp_path / "none")) is None

    write_jsonl(rd.generations("ntp", "toy_mcq"), [{"example_id": "1", "logliks": [0.1, -1.0]}])
    assert read_jsonl(rd.generations("ntp", "toy_mcq")) == [{"example_id": "1", "logliks": [0.1, -1.0]}]

    rd.config.write_text("run:\n  variants: [ntp, {name: hot, base: sftmix, alpha: 2.0}]\n  tasks: [a, {name: b}]\n"
                         "  train_data_name: toy\nmodel:\n  model: tiny-llama\n")
    cfg = RunConfigRecord.read(rd)
    assert cfg.variants() == ["ntp", "hot"] and cfg.tasks() == ["a", "b"]
    assert cfg.variant_settings("hot") == {"name": "hot", "base": "sftmix", "alpha": 2.0}
    assert cfg.model_name == "tiny-llama" and cfg.train_data_name == "toy"


def test_records_name_the_bad_file(tmp_path):
    rd = RunDir(tmp_path)
    TaskSummary(task="t", variant="v", metrics={"acc": 1.0}).write(rd)
    rd.summary("v", "t").write_text('{"task": "t"}')
    with pytest.raises(UserError, match=r"t\.json: missing field 'metrics'"):
        TaskSummary.read(rd.summary("v", "t"))
    rd.item_values("v", "t").write_text('{"value": 1}\n')
    with pytest.raises(UserError, match=r"t\.items\.jsonl: line 1: missing field 'example_id'"):
        ItemValues.read(rd.item_values("v", "t"))


def write_run(run: Path, variants=("ntp", "sftmix"), config: str | None = None) -> None:
    rd = RunDir(run)
    for i, v in enumerate(variants):
        vals = [1.0 if k <= i else 0.0 for k in range(4)]
        TaskSummary(task="toy_mcq", variant=v, kind="mcq", metrics={"acc": sum(vals) / 4}, model="tiny",
                    train_data="toy", n_items=4, metric_shown="acc").write(rd)
        ItemValues([{"example_id": str(k), "value": x} for k, x in enumerate(vals)]).write(rd, v, "toy_mcq")
    if config is not None:
        rd.config.write_text(config)


def test_first_write_stamps_the_version_and_unstamped_dirs_read_as_version_1(tmp_path):
    run = tmp_path / "run"
    write_run(run)
    rd = RunDir(run)
    assert json.loads(rd.stamp.read_text()) == {"format": FORMAT, "version": VERSION} and rd.version() == VERSION
    rd.stamp.unlink()  # a run directory from before the stamp
    assert rd.version() == 1
    assert "NTP" in render_table([run])


@pytest.mark.parametrize("stamp, why", [
    ({"format": FORMAT, "version": 99}, "format version 99 is newer than this bench reads"),
    ({"format": FORMAT, "version": 0}, "format version 0 is older than this bench reads"),
    ({"format": "something else", "version": 1}, "unknown run-directory format"),
    ({"format": FORMAT, "version": "1"}, "unknown run-directory format"),
], ids=["newer", "older", "other-format", "bad-version"])
def test_unreadable_versions_are_refused_with_one_line(tmp_path, capsys, stamp, why):
    run = tmp_path / "run"
    write_run(run)
    RunDir(run).stamp.write_text(json.dumps(stamp))
    with pytest.raises(UserError, match=why):
        build_table([run])
    with pytest.raises(UserError, match=why):  # writers refuse too: nothing is mixed into a format we cannot read
        TaskSummary(task="x", variant="ntp", metrics={}).write(RunDir(run))
    assert main(["table", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0] and "Traceback" not in err[0]


def test_bench_run_refuses_a_newer_run_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    RunDir(run).stamp.write_text(json.dumps({"format": FORMAT, "version": VERSION + 1}))
    cfg = load_run_config(experiment_path("default"), {"run.out": str(run)})
    with pytest.raises(UserError, match="newer than this bench reads"):
        check_out_dir(cfg, run, force=True)


def test_tables_import_nothing_from_sftmix(tmp_path):
    """Loading runs and rendering every layout and format never imports sftmix (not even its registry for row
    order); only writing a file (atomic writes of core.io) or raising the CLI's error type would."""
    run = tmp_path / "run"
    write_run(run, config="run:\n  variants: [ntp, sftmix]\n  tasks: [toy_mcq]\n")
    code = ("import sys; import bench.tables as t\n"
            "for layout in ('auto', 'default', 'ablation', 'mixup-role'):\n"
            "    for fmt in ('md', 'csv', 'latex'):\n"
            "        out = t.render_table([sys.argv[1]], layout, fmt, paper=True)\n"
            "bad = sorted(m for m in sys.modules if m == 'sftmix' or m.startswith('sftmix.'))\n"
            "assert not bad, bad\n"
            "assert 'SFTMix' in t.render_table([sys.argv[1]])\n")
    r = subprocess.run([sys.executable, "-c", code, str(run)], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr


def test_row_order_comes_from_the_run_config(tmp_path):
    order = ["ntp", "zeta", "sftmix", "alpha"]
    run = tmp_path / "run"
    write_run(run, variants=order, config="run:\n  variants: [ntp, zeta, sftmix, alpha]\n")
    assert list(build_table([run]).display_frame()["Method"]) == ["NTP", "zeta", "SFTMix", "alpha"]
    # without a recorded order: the baseline, then SFTMix, then the rest in file (name) order
    RunDir(run).config.unlink()
    assert list(build_table([run]).display_frame()["Method"]) == ["NTP", "SFTMix", "alpha", "zeta"]


def test_variant_settings_come_from_the_run_not_the_registry(tmp_path):
    run = tmp_path / "run"
    write_run(run, variants=("ntp", "sftmix"),
              config="run:\n  variants: [ntp, {name: sftmix, base: sftmix, alpha: 7.0}]\n")
    # no train.json: the settings recorded in provenance.json win over the config's sweep entry
    df = build_table([run], "ablation").display_frame()
    assert df.loc[df["Method"] == "SFTMix", "alpha"].item() == "7.0"
    Provenance("h", "done", {"variants": {"sftmix": {"name": "sftmix", "alpha": 0.25, "mu": 0.2}}}).write(RunDir(run))
    df = build_table([run], "ablation").display_frame()
    assert df.loc[df["Method"] == "SFTMix", "alpha"].item() == "0.25"
    # a variant the registry knows but the run recorded nothing for shows no settings, not today's registry's
    assert df.loc[df["Method"] == "NTP", "mu"].item() == "—"
    assert not math.isnan(build_table([run]).rows[1]["toy_mcq acc (%)"].delta)


# ---- docs/RUNDIR.md lists every file (the run itself is checked in test_pipeline.py) ----------------------------

def rundir_doc_patterns() -> list[re.Pattern]:
    """The path patterns of docs/RUNDIR.md's "Files" table (its first column) as regular expressions: ``<x>`` one
    name, ``[...]`` optional, ``{a,b}`` alternatives, ``*`` any name part, ``**/`` any folders, a trailing ``/``
    the folder and everything under it."""
    text = (ROOT / "docs" / "RUNDIR.md").read_text(encoding="utf-8")
    section = text.split("\n## Files\n", 1)[1].split("\n## ", 1)[0]
    patterns = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split(" | ")[0]
            patterns += re.findall(r"`([^`]+)`", first)
    out = []
    for p in patterns:
        rx, i = [], 0
        while i < len(p):
            if p.startswith("**/", i):
                rx.append("(?:.*/)?")
                i += 3
                continue
            c = p[i]
            if c == "<":
                j = p.index(">", i)
                rx.append("[^/]+")
                i = j + 1
                continue
            if c == "{":
                j = p.index("}", i)
                rx.append("(?:" + "|".join(map(re.escape, p[i + 1:j].split(","))) + ")")
                i = j + 1
                continue
            rx.append({"[": "(?:", "]": ")?", "*": "[^/]*"}.get(c, re.escape(c)))
            i += 1
        if p.endswith("/"):  # the folder itself (when empty) and everything under it
            rx[-1] = "(?:/.*)?"
        out.append(re.compile("".join(rx)))
    return out


def undocumented(paths, root: Path | None = None) -> list[str]:
    """The paths (relative to ``root``) that no pattern of docs/RUNDIR.md covers."""
    patterns = rundir_doc_patterns()
    rel = [Path(p).relative_to(root).as_posix() if root else str(p) for p in paths]
    return [p for p in rel if not any(rx.fullmatch(p) for rx in patterns)]


def test_every_path_rundir_names_is_documented(tmp_path):
    rd = RunDir(tmp_path)
    stage = "score/sftmix@s1/toy_open"
    paths = [rd.stamp, rd.config, rd.provenance, rd.cache, rd.judge_log, rd.contamination, rd.state(stage),
             rd.stage_lock(stage), rd.stage_log(stage), rd.stage_job(stage), rd.stage_cache(stage),
             rd.stage_judge_log(stage), rd.slurm_dir / "submission.sh", rd.confidence(),
             rd.confidence(rd.dynamics_dir("ab12cd34", 2)), rd.dynamics_record(rd.dynamics_dir(seed=1)),
             rd.model_dir("ntp") / "config.json", rd.train_record("ntp"), rd.train_log("ntp"),
             rd.checkpoints("sftmix") / "checkpoint-3" / "optimizer.pt", rd.launch_config(rd.variant_dir("ntp")),
             rd.generations("ntp", "toy_mcq"), rd.judgments("ntp", "toy_open"), rd.summary("ntp", "bigbench:navigate"),
             rd.item_values("ntp", "toy_mcq"), rd.contamination_report("toy_mcq"), rd.table("default", "latex"),
             rd.table("contamination", "csv"), rd.plot("training_loss")]
    assert undocumented(paths, tmp_path) == []
    # the patterns are not a catch-all
    assert undocumented(["variants/ntp/notes.txt", "scores/ntp/x.csv", "stray.json"]) == [
        "variants/ntp/notes.txt", "scores/ntp/x.csv", "stray.json"]


# ---- judge records ------------------------------------------------------------------------------------------------

def test_verdicts_and_judge_log_entries_round_trip(tmp_path):
    rd = RunDir(tmp_path / "run")
    v = Verdict(task="toy_open", example_id="q1", turn=1, judge="gpt-x", judge_kind="llm", repeat=0, score=7.0,
                failed=False, raw={"text": "7", "top_logprobs": [{"token": "7", "logprob": -0.1}]},
                meta={"category": "facts"}, variant="ntp")
    bad = Verdict(task="toy_open", example_id="q2", turn=1, judge="gpt-x", judge_kind="llm", repeat=0, score=None,
                  failed=True, raw="no idea", error="unparsable judge reply", failure="unparsable", variant="ntp")
    path = Judgments.write(rd, "ntp", "toy_open", [v, bad])
    assert path == rd.judgments("ntp", "toy_open") and rd.stamp.exists()
    assert Judgments.read(path) == [v, bad] and Judgments.read(rd.judgments("ntp", "none")) == []
    # bench judge-calibrate's verdicts carry no variant, and store none
    assert "variant" not in Verdict(**{**v.__dict__, "variant": None}).to_record()

    log = JudgeLog(rd.judge_log)
    e = JudgeLogEntry(time=1.5, judge="gpt-x", task="toy_open", example_id="q1", turn=1, repeat=0, form="single",
                      attempt=2, messages=[{"role": "user", "content": "rate"}], temperature=0.0, max_tokens=8,
                      raw="7", usage={"prompt_tokens": 3, "completion_tokens": 1}, latency_s=0.2)
    local = JudgeLogEntry(time=2.0, judge="tiny", task="toy_open", example_id="q2", turn=1, repeat=0, raw="5")
    log.append(e)
    log.append(local)
    lines = [json.loads(x) for x in rd.judge_log.read_text().splitlines()]
    assert "temperature" in lines[0] and "temperature" not in lines[1]  # a local judge's line as it always was
    assert log.read() == [e, local] and log.count() == 2
    worker = JudgeLog(rd.stage_judge_log("score/ntp/toy_open"))
    worker.append(e)
    log.merge_from(worker.path)
    assert log.count() == 3 and not worker.path.exists()


def test_older_records_still_read(tmp_path):
    """What compat.py promises: absent fields read with their defaults, explicit nulls and unknown fields are
    written back as they were, one line per judge repeat is combined."""
    rd = RunDir(tmp_path)
    rd.judgments("ntp", "t").parent.mkdir(parents=True)
    old = {"task": "t", "example_id": 3, "turn": 1, "judge": "j", "judge_kind": "llm", "repeat": 1, "score": 6.0,
           "failed": False, "raw": "6", "error": None, "usage": {"prompt_tokens": 1, "completion_tokens": 1},
           "variant": "ntp", "newer_field": [1]}
    write_jsonl(rd.judgments("ntp", "t"), [old])
    (v,) = Judgments.read(rd.judgments("ntp", "t"))
    assert (v.example_id, v.failure, v.form, v.meta, v.extra) == ("3", None, "", {}, {"newer_field": [1]})

    summary = {"task": "t", "variant": "ntp", "metrics": {"score": 6.0}, "lc_note": None, "a_new_note": "x"}
    rd.summary("ntp", "t").parent.mkdir(parents=True)
    rd.summary("ntp", "t").write_text(json.dumps(summary))
    s = TaskSummary.read(rd.summary("ntp", "t"))
    assert (s.kind, s.judge, s.repeats, s.n_failed, s.lc_note) == ("chat", "none", 1, 0, None)
    back = s.to_dict()
    assert back["lc_note"] is None and back["a_new_note"] == "x"  # the null and the unknown field stay

    rd.item_values("ntp", "t").write_text("".join(json.dumps(r) + "\n" for r in [
        {"example_id": 1, "value": 4.0, "repeat": 0}, {"example_id": 1, "value": 8.0, "repeat": 1},
        {"example_id": 1, "value": 5.0, "repeat": 2}, {"example_id": 2, "value": None}, {"example_id": 3, "value": 2}]))
    combined = ItemValues.read(rd.item_values("ntp", "t")).combined()
    assert [(r.example_id, r.turn, r.value) for r in combined] == [("1", None, 5.0), ("3", None, 2.0)]
    assert all("repeat" not in r.extra for r in combined)


def test_item_values_keep_their_bytes(tmp_path):
    """A scorer's rows written through ItemValues give the same line they always gave (sorted keys, nulls kept,
    ``repeats`` only with several repeats, mcq's per-metric values beside ``value``)."""
    rd = RunDir(tmp_path)
    rows = [{"example_id": "a", "turn": 0, "category": None, "value": 1.0, "acc": 1.0, "acc_norm": 0.0},
            {"example_id": "b", "turn": 1, "category": "x", "value": 7.0, "repeats": [6.0, 8.0]}]
    ItemValues(rows).write(rd, "ntp", "t")
    assert rd.item_values("ntp", "t").read_text() == "".join(
        json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in rows)
    assert [r.to_dict() for r in ItemValues.read(rd.item_values("ntp", "t")).rows] == rows


def test_summaries_without_metric_units_read_the_units_their_kind_had(tmp_path):
    """Older summaries have no metric_units: mcq/exact metrics are fractions shown in percent, a win rate is in
    percent already, anything else unitless (compat.legacy_metric_units); reading one adds nothing to its file.
    A summary that records its units is read as recorded, whatever its kind."""
    rd = RunDir(tmp_path)
    rd.summary("ntp", "m").parent.mkdir(parents=True)
    cases = {"m": ("mcq", {"acc": 0.5, "acc_norm": 0.25}), "a": ("chat", {"win_rate": 40.0, "avg_length": 9}),
             "o": ("chat", {"overall": 6.0})}
    for task, (kind, metrics) in cases.items():
        rd.summary("ntp", task).write_text(json.dumps({"task": task, "variant": "ntp", "kind": kind,
                                                       "metrics": metrics}))
    units = {t: TaskSummary.read(rd.summary("ntp", t)).units() for t in cases}
    assert {k: (u.unit, u.fraction) for k, u in units["m"].items()} == {"acc": ("%", True), "acc_norm": ("%", True)}
    assert (units["a"]["win_rate"].unit, units["a"]["win_rate"].fraction) == ("%", False)
    assert units["a"]["avg_length"].unit == "" and units["o"]["overall"].unit == ""
    assert "metric_units" not in TaskSummary.read(rd.summary("ntp", "m")).to_dict()

    s = TaskSummary(task="n", variant="ntp", metrics={"within": 0.5}, kind="mcq",
                    metric_units={"within": MetricUnit("bits")})
    s.write(rd)
    back = TaskSummary.read(rd.summary("ntp", "n"))
    assert back.metric_units == {"within": MetricUnit("bits", False)} and back.to_dict() == s.to_dict()
    assert json.loads(rd.summary("ntp", "n").read_text())["metric_units"] == {"within": {"unit": "bits",
                                                                                         "fraction": False}}
    rd.summary("ntp", "bad").write_text(json.dumps({"metrics": {}, "metric_units": ["acc"]}))
    with pytest.raises(UserError, match="metric_units"):
        TaskSummary.read(rd.summary("ntp", "bad"))


def test_provenance_fields_are_typed_and_its_json_is_unchanged(tmp_path):
    """provenance.json as `bench run` writes it reads into named fields (git as GitInfo); written back it keeps its
    bytes, an explicit null and a field no version names included; `Provenance(hash, status, {...})` types the
    mapping it is given."""
    rd = RunDir(tmp_path)
    stored = {"config_hash": "abc", "status": "done", "seed": 42, "seeds": None, "chat_template_hash": None,
              "git": {"commit": "f" * 40, "dirty": False}, "packages": {"python": "3.11.7", "torch": "2.1"},
              "judge": {"kind": "llm", "model": "gpt-4"}, "protocols": {"mt_bench": "FastChat single"},
              "task_data": {"mt_bench": {"data_hash": "d", "prompt_hash": "p"}}, "variants": {"ntp": {"mu": 0}},
              "stage_keys": {"train/ntp": "k"}, "model": {"id": "m", "path": "/m"}, "train_data": {"source": "toy"},
              "hardware": {"cpu_count": 2}, "backend": {"name": "hf"}, "executor": {"kind": "local"},
              "last_run": {"ran": 3}, "a_newer_field": [1]}
    rd.provenance.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    before = rd.provenance.read_bytes()
    p = Provenance.read(rd)
    assert (p.config_hash, p.status, p.seed, p.git_commit, p.git.dirty) == ("abc", "done", 42, "f" * 40, False)
    assert p.packages["torch"] == "2.1" and p.judge == {"kind": "llm", "model": "gpt-4"} and p.seeds is None
    assert p.task_data["mt_bench"]["prompt_hash"] == "p" and p.stage_keys == {"train/ntp": "k"}
    assert p.extra == {"seeds": None, "chat_template_hash": None, "a_newer_field": [1]}  # nulls kept as stored
    p.write(rd)
    assert rd.provenance.read_bytes() == before
    p.status, p.stopped = "failed", {"error": "boom"}
    p.write(rd)
    assert json.loads(rd.provenance.read_text()) == {**stored, "status": "failed", "stopped": {"error": "boom"}}
    made = Provenance("h", "running", {"seed": 1, "git": {"commit": "a", "dirty": None}, "other": 2})
    assert made.seed == 1 and made.git_commit == "a" and made.extra == {"other": 2}
    assert made.to_dict() == {"config_hash": "h", "status": "running", "seed": 1, "git": {"commit": "a",
                                                                                           "dirty": None}, "other": 2}


def test_summaries_without_item_selections_read_as_their_kind_implied(tmp_path):
    """A summary that records no item selections (older ones, and ones with units but no ``items``) has the headline,
    per-item selection and first turn its kind implied (compat.legacy_*); reading and writing it back adds none of
    the new fields. One that records them is read as recorded, whatever its kind; a bad selection is a one-line
    error."""
    rd = RunDir(tmp_path)
    rd.summary("ntp", "x").parent.mkdir(parents=True)
    old = {"mcq": ("mcq", {"acc": 0.5, "acc_norm": 0.25}, None),
           "ex": ("exact", {"exact_match": 0.5, "numeric": 0.0}, {"exact_match": {"unit": "%", "fraction": True},
                                                                   "numeric": {"unit": "%", "fraction": True}}),
           "mt": ("chat", {"turn1": 6.0, "turn2": 5.0, "overall": 5.5, "category/writing": 7.0}, None),
           "pair": ("chat", {"win_rate_adjusted": 50.0, "win_rate": 40.0, "category/math": 30.0}, None)}
    for task, (kind, metrics, units) in old.items():
        d = {"task": task, "variant": "ntp", "kind": kind, "metrics": metrics}
        rd.summary("ntp", task).write_text(json.dumps({**d, **({"metric_units": units} if units else {})}))
    read = {t: TaskSummary.read(rd.summary("ntp", t)) for t in old}
    assert {t: s.headline() for t, s in read.items()} == {"mcq": "acc", "ex": "exact_match", "mt": "overall",
                                                          "pair": "win_rate_adjusted"}
    behind = {t: {k: s.items_behind(k) for k in s.metrics} for t, s in read.items()}
    assert behind == {"mcq": {"acc": "all", "acc_norm": "none"}, "ex": {"exact_match": "all", "numeric": "none"},
                      "mt": {"turn1": "turn", "turn2": "turn", "overall": "all", "category/writing": "category"},
                      "pair": {"win_rate_adjusted": "all", "win_rate": "none", "category/math": "category"}}
    assert {t: s.first_turn() for t, s in read.items()} == {"mcq": 0, "ex": 0, "mt": 1, "pair": 1}
    for task, (_, _, units) in old.items():  # nothing added on reading: a rewritten file has no new field
        d = read[task].to_dict()
        assert "turn_base" not in d and "metric_shown" not in d and d.get("metric_units") == units

    # recorded: the kind name says nothing (a "chat" summary numbering its turns from 0, an mcq metric per turn)
    s = TaskSummary(task="n", variant="ntp", metrics={"a1": 0.5, "b": 0.25, "category/c": 0.5}, kind="mcq",
                    metric_shown="b", turn_base=0,
                    metric_units={"a1": MetricUnit("%", True, "turn"), "b": MetricUnit("%", True, "all")})
    s.write(rd)
    back = TaskSummary.read(rd.summary("ntp", "n"))
    assert back == s and back.headline() == "b" and back.first_turn() == 0
    assert [back.items_behind(k) for k in ("a1", "b", "category/c", "acc", "zz")] == ["turn", "all", "category",
                                                                                      "none", "none"]
    assert json.loads(rd.summary("ntp", "n").read_text())["metric_units"]["a1"] == {"unit": "%", "fraction": True,
                                                                                    "items": "turn"}
    rd.summary("ntp", "bad").write_text(json.dumps({"metrics": {}, "metric_units": {"acc": {"items": "some"}}}))
    with pytest.raises(UserError, match="metric_units has items 'some'"):
        TaskSummary.read(rd.summary("ntp", "bad"))

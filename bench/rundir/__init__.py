"""The run directory: every path and record of a `bench run` results directory, in one place (docs/RUNDIR.md).

Writers (the pipeline, :mod:`bench.evaluate`, `bench generate` / `bench judge`) and readers (:mod:`bench.tables`,
:mod:`bench.plots`, :mod:`bench.regression`, the tests) name files only through :class:`RunDir` and read and
write them only through its records, so the format has one owner.

The format is versioned: ``rundir.json`` holds ``{"format": FORMAT, "version": VERSION}``. A directory without it
predates the stamp and has the layout of version 1, so it is read as version 1. A directory stamped with a version
this bench cannot read (older than ``MIN_VERSION`` or newer than ``VERSION``) is refused with a one-line
:class:`~core.errors.UserError` (the CLI's exit 2), never half-read.

Reading imports nothing from ``sftmix`` (the tables must not depend on the training side); errors and the atomic
writers come from :mod:`core` (the layer both packages share).

The package: :mod:`~bench.rundir.paths` (:class:`RunDir`: the names of every file, the read/write helpers),
:mod:`~bench.rundir.records` (the typed records with ``read``/``write``), :mod:`~bench.rundir.judgments` (verdicts
and judge-log entries) and :mod:`~bench.rundir.compat` (the format version and every rule for reading older files).
"""
from .paths import (CONFIG, FORMAT, MIN_VERSION, PROVENANCE, SEED_SEP, STAMP, VERSION, RunDir, fail, read_json,
                    read_jsonl, split_seed, write_json, write_jsonl, write_text)
from .judgments import FAILURES, JudgeLog, JudgeLogEntry, Judgments, Verdict
from .records import (ContaminationReport, GitInfo, ItemValue, ItemValues, MetricUnit, Provenance,
                      RunConfigRecord, StageState, TaskSummary, TrainRecord)

__all__ = ["CONFIG", "FAILURES", "FORMAT", "MIN_VERSION", "PROVENANCE", "SEED_SEP", "STAMP", "VERSION",
           "ContaminationReport", "GitInfo", "ItemValue", "ItemValues", "JudgeLog", "JudgeLogEntry", "Judgments",
           "MetricUnit", "Provenance", "RunConfigRecord", "RunDir", "StageState", "TaskSummary", "TrainRecord",
           "Verdict", "fail", "read_json", "read_jsonl", "split_seed", "write_json", "write_jsonl", "write_text"]

"""Paths of a run directory (:class:`RunDir`), its format version, and the JSON read/write helpers."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, NoReturn

from core import io
from core.errors import UserError

from .compat import FORMAT, MIN_VERSION, VERSION  # noqa: F401 (re-exported: the version lives with its rules)

SEED_SEP = "@s"  # run.seeds: variant "sftmix" at seed 1 is "sftmix@s1" (variants/, generations/, scores/, state/)

STAMP = "rundir.json"
CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
STATE = "state"
CACHE = "cache.sqlite"
JUDGE_LOG = "judge_log.jsonl"
EXECUTOR = "executor"  # what workers of a cluster executor write: logs, their own caches, submitit's folder
CONTAMINATION_DIR = "contamination"
CONFIDENCE = "confidence.parquet"
TRAIN_LOG = "train_log.jsonl"  # the trainer's per-step log (sftmix.recipe), beside train.json
CONTAMINATION = "contamination.json"
TABLE_EXT = {"md": "md", "csv": "csv", "latex": "tex", "tex": "tex"}


def fail(message: str) -> NoReturn:
    """Raise the CLI's one-line error (exit 2) for bad input found in a run directory."""
    raise UserError(message)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; malformed JSON or another type is a one-line error naming the file."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        fail(f"{path}: line {e.lineno}: invalid JSON ({e.msg})")
    except UnicodeDecodeError as e:
        fail(f"{path}: not UTF-8 text (byte {e.start}): the file is damaged")
    if not isinstance(obj, dict):
        fail(f"{path}: expected a JSON object")
    return obj


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) of a JSON-lines file (blank lines skipped); a malformed line is an error naming it."""
    with open(path, encoding="utf-8") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    fail(f"{path}: line {lineno}: invalid JSON ({e.msg})")
                yield lineno, record
        except UnicodeDecodeError:
            fail(f"{path}: line {lineno + 1}: not UTF-8 text: the file is damaged")


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a JSON-lines file (blank lines skipped); a malformed line is an error naming its number."""
    return [record for _, record in iter_jsonl(path)]


def write_json(path: Path, obj: Any) -> None:
    """Atomically, as indented sorted JSON (the format of every ``.json`` record here)."""
    io.write_json(path, obj)


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Atomically, one canonical JSON object per line."""
    io.write_text(path, "".join(io.stable_json(r) + "\n" for r in records))


def write_text(path: Path, text: str) -> None:
    """Atomically."""
    io.write_text(path, text)


def split_seed(name: str) -> tuple[str, int | None]:
    """``"sftmix@s1"`` -> ``("sftmix", 1)``; a name without a seed -> ``(name, None)``."""
    base, sep, seed = name.rpartition(SEED_SEP)
    return (base, int(seed)) if sep and base and seed.isdigit() else (name, None)


class RunDir:
    """The paths of one run directory (nothing is created until a record is written)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # ---- top-level files ------------------------------------------------------------------------------------
    @property
    def stamp(self) -> Path:
        return self.root / STAMP

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def provenance(self) -> Path:
        return self.root / PROVENANCE

    @property
    def cache(self) -> Path:
        return self.root / CACHE

    @property
    def judge_log(self) -> Path:
        return self.root / JUDGE_LOG

    @property
    def contamination(self) -> Path:
        """``contamination.json``: which evaluation items the training data holds, per task ``{"n_items": N,
        "dirty": {item id: [training row index, ...]}}`` (`bench contamination --json`'s shape), rewritten from the
        full reports (:meth:`contamination_report`) whenever one is stored."""
        return self.root / CONTAMINATION

    # ---- stages, training, dynamics -------------------------------------------------------------------------
    def state(self, stage: str) -> Path:
        """``state/<stage with / as __>.json``: the stage's key and status."""
        return self.root / STATE / (stage.replace("/", "__") + ".json")

    @property
    def state_dir(self) -> Path:
        return self.root / STATE

    def stage_lock(self, stage: str) -> Path:
        """``state/<stage>.lock``: held by the process running the stage."""
        return self.state(stage).with_suffix(".lock")

    # ---- executors (bench run --executor processes|slurm|ray) -----------------------------------------------
    @property
    def executor_dir(self) -> Path:
        return self.root / EXECUTOR

    def stage_log(self, stage: str) -> Path:
        """``executor/logs/<stage>.log``: a worker's output for the stage (every attempt, appended)."""
        return self.executor_dir / "logs" / (stage.replace("/", "__") + ".log")

    def stage_job(self, stage: str) -> Path:
        """``executor/jobs/<stage>.json``: the job the coordinator last submitted for the stage (executor, id,
        attempt), so that a later coordinator waits for it rather than submitting it twice."""
        return self.executor_dir / "jobs" / (stage.replace("/", "__") + ".json")

    def stage_cache(self, stage: str) -> Path:
        """``executor/cache/<stage>.sqlite``: a worker's own cache, merged into ``cache.sqlite`` by the coordinator
        (one writer per SQLite file: SQLite's locking is not safe across hosts on network filesystems)."""
        return self.executor_dir / "cache" / (stage.replace("/", "__") + ".sqlite")

    def stage_judge_log(self, stage: str) -> Path:
        """``executor/judge_log/<stage>.jsonl``: a worker's judge-call log, appended to ``judge_log.jsonl`` by the
        coordinator."""
        return self.executor_dir / "judge_log" / (stage.replace("/", "__") + ".jsonl")

    @property
    def slurm_dir(self) -> Path:
        """``executor/slurm/``: submitit's folder (sbatch scripts, pickled jobs, Slurm's own logs)."""
        return self.executor_dir / "slurm"

    def dynamics_dir(self, ref_tag: str | None = None, seed: int | None = None) -> Path:
        """``dynamics`` (the run's own model as reference), ``dynamics-<tag>`` (another reference), ``@s<seed>``."""
        name = "dynamics" if ref_tag is None else f"dynamics-{ref_tag}"
        return self.root / (name if seed is None else f"{name}{SEED_SEP}{seed}")

    def confidence(self, dynamics_dir: Path | None = None) -> Path:
        return (dynamics_dir or self.dynamics_dir()) / CONFIDENCE

    def variant_dir(self, variant: str) -> Path:
        return self.root / "variants" / variant

    def model_dir(self, variant: str) -> Path:
        return self.variant_dir(variant) / "model"

    @classmethod
    def of_model_dir(cls, path: str | Path) -> "tuple[RunDir, str] | None":
        """(run directory, variant) of a trained variant's ``RUN/variants/<v>/model``; None for any other path."""
        p = Path(path)
        if p.name == "model" and p.parent.parent.name == "variants":
            return cls(p.parent.parent.parent), p.parent.name
        return None

    def train_record(self, variant: str) -> Path:
        """``variants/<v>/train.json``, written by :func:`sftmix.recipe.finetune` (see :class:`TrainRecord`)."""
        return self.variant_dir(variant) / "train.json"

    def train_log(self, variant: str) -> Path:
        """``variants/<v>/train_log.jsonl``: the trainer's log lines, one JSON object per logging step."""
        return self.variant_dir(variant) / TRAIN_LOG

    def checkpoints(self, variant: str) -> Path:
        """``variants/<v>/checkpoints/``: the Trainer's ``checkpoint-<step>/`` folders (a re-run resumes there)."""
        return self.variant_dir(variant) / "checkpoints"

    @staticmethod
    def dynamics_record(dynamics_dir: Path) -> Path:
        """``dynamics*/dynamics.json``: how the confidence table was made (reference model, checkpoint steps)."""
        return Path(dynamics_dir) / "dynamics.json"

    @staticmethod
    def launch_config(stage_dir: Path) -> Path:
        """The train config a multi-GPU stage hands to `accelerate launch`."""
        return Path(stage_dir) / "train-config.yaml"

    # ---- per (variant, task) --------------------------------------------------------------------------------
    def generations(self, variant: str, task: str) -> Path:
        return self.root / "generations" / variant / f"{task}.jsonl"

    def judgments(self, variant: str, task: str) -> Path:
        return self.root / "judgments" / variant / f"{task}.jsonl"

    def summary(self, variant: str, task: str) -> Path:
        """``scores/<v>/<task>.json``: the task summary (:class:`TaskSummary`)."""
        return self.root / "scores" / variant / f"{task}.json"

    def item_values(self, variant: str, task: str) -> Path:
        """``scores/<v>/<task>.items.jsonl``: the per-item values behind the summary (:class:`ItemValues`)."""
        return self.root / "scores" / variant / f"{task}.items.jsonl"

    # ---- contamination (per task: its items against the run's training data) ----------------------------------
    def contamination_report(self, task: str) -> Path:
        """``contamination/<task>.json``: the task's full contamination report (:class:`ContaminationReport`)."""
        return self.contamination_dir / f"{task}.json"

    @property
    def contamination_dir(self) -> Path:
        return self.root / CONTAMINATION_DIR

    def contamination_reports(self) -> list[Path]:
        """Every ``contamination/<task>.json``, sorted."""
        return sorted(self.contamination_dir.glob("*.json"))

    # ---- `bench generate` folders (which `bench judge` then uses as a run directory) -------------------------
    def generate_output(self, task: str) -> Path:
        return self.root / f"{task}.generations.jsonl"

    def generate_metrics(self, task: str) -> Path:
        """``<task>.scores.json``: metrics `bench generate` computes for tasks that need no judge."""
        return self.root / f"{task}.scores.json"

    @property
    def generate_marker(self) -> Path:
        return self.root / "generate.json"

    # ---- outputs ---------------------------------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    def table(self, layout: str, fmt: str = "md") -> Path:
        return self.tables_dir / f"{layout}.{TABLE_EXT.get(fmt, fmt)}"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    def plot(self, name: str) -> Path:
        return self.plots_dir / f"{name}.png"

    # ---- listings --------------------------------------------------------------------------------------------
    def summaries(self) -> list[Path]:
        """Every ``scores/<variant>/<task>.json``, sorted."""
        return sorted((self.root / "scores").glob("*/*.json"))

    def train_records(self) -> list[Path]:
        return sorted((self.root / "variants").glob("*/train.json"))

    def generation_files(self) -> list[Path]:
        return sorted((self.root / "generations").glob("*/*.jsonl"))

    def state_files(self) -> list[Path]:
        """Every ``state/<stage>.json``, sorted (the stage name is the stem with ``__`` as ``/``)."""
        return sorted(self.state_dir.glob("*.json"))

    def plot_files(self) -> list[Path]:
        """Every ``plots/<name>.png``, sorted."""
        return sorted(self.plots_dir.glob("*.png"))

    # ---- the format version ----------------------------------------------------------------------------------
    def version(self) -> int:
        """The directory's format version (1 when unstamped); a version this bench cannot read is refused."""
        if not self.stamp.exists():
            return 1
        try:
            stamp = read_json(self.stamp)
        except Exception as e:
            fail(f"{e}; it should read {{\"format\": \"{FORMAT}\", \"version\": {VERSION}}} - delete it (a version-1 "
                 "directory is then assumed and it is written again)")
        version = stamp.get("version")
        if stamp.get("format") != FORMAT or not isinstance(version, int) or isinstance(version, bool):
            fail(f"{self.root}: unknown run-directory format in {STAMP} ({stamp.get('format')!r} version "
                 f"{version!r}); this bench reads {FORMAT!r} versions {MIN_VERSION}-{VERSION}")
        if version > VERSION:
            fail(f"{self.root}: run-directory format version {version} is newer than this bench reads "
                 f"({MIN_VERSION}-{VERSION}); update bench to read it")
        if version < MIN_VERSION:
            fail(f"{self.root}: run-directory format version {version} is older than this bench reads "
                 f"({MIN_VERSION}-{VERSION}); read it with the bench that wrote it, or re-run it")
        return version

    def check(self) -> "RunDir":
        """Refuse a directory in a format this bench cannot read; returns self."""
        self.version()
        return self

    def mark_version(self) -> None:
        """Before writing: refuse an unreadable format, and stamp the directory with this version if unstamped."""
        if self.version() and not self.stamp.exists():
            write_json(self.stamp, {"format": FORMAT, "version": VERSION})


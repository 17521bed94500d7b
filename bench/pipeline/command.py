"""`bench run` end to end: validate, lock the results directory, walk the stages, then tables, plots and the
provenance record."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from core.errors import UserError, first_line
from core.io import write_text
from sftmix.presets import resolve_model
from sftmix.templates import template_hash

from ..config import RunConfig
from ..evaluate import make_judge
from ..lock import HOLDER, LOCK, RunLock
from ..provenance import git_commit, hardware, package_versions
from ..rundir import Provenance, RunDir
from ..validate import validate_run
from .planning import plan
from .runner import Runner
from .worker import run_in_worker


def provenance(cfg: RunConfig, runner: Runner) -> dict:
    """How these results were made: config, hashes, seeds, code, packages, backend, judge, data, hardware."""
    ctx = runner.ctx
    prov = {"config_hash": cfg.config_hash(), "seed": cfg.train.seed, "seeds": cfg.run.seeds, "git": git_commit(),
            "packages": package_versions(), "hardware": hardware(),
            "backend": {"name": cfg.generation.backend, **{k: v for k, v in cfg.generation.__dict__.items()}},
            "judge": ctx.judge_identity(), "protocols": ctx.protocols(), "train_data": ctx.train_data,
            "task_data": {t.name: {"data_hash": t.data_hash, "prompt_hash": t.prompt_hash, "source": t.source}
                          for t in ctx.tasks},
            "variants": {v.name: v.to_dict() for v in ctx.variants},
            "stage_keys": {s.name: s.key for s in runner.stages},
            "executor": {k: v for k, v in cfg.executor.__dict__.items() if v not in (None, [], {})}}
    try:
        from sftmix.recipe import load_tokenizer  # heavy: imports torch

        prov["model"] = {"id": cfg.model.model, "path": resolve_model(cfg.model.model)}
        prov["chat_template_hash"] = template_hash(load_tokenizer(prov["model"]["path"], cfg.model.template))
    except (UserError, OSError):
        prov["chat_template_hash"] = None
    return prov


def check_out_dir(cfg: RunConfig, out: Path, force: bool) -> None:
    """Refuse a results directory made by a different config, unless ``force``."""
    rd = RunDir(out).check()  # a directory in a format this bench cannot read (or write) is refused here
    prov = Provenance.read(rd)
    if prov is None:
        if out.exists() and any(p.name not in (LOCK, HOLDER) for p in out.iterdir()) \
                and not rd.config.exists():
            raise UserError(f"{out} exists and is not a bench run directory: choose another --out")
        return
    old = prov.config_hash
    if old != cfg.config_hash() and not force:
        raise UserError(f"{out} holds results of a different config ({old} != {cfg.config_hash()}); use another "
                        "--out, or --force to reuse it (only stages whose inputs changed will re-run)")


def run_pipeline(cfg: RunConfig, *, dry_run: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Run (or, with ``dry_run``, plan) the whole pipeline into ``cfg.run.out``; return a summary dict.

    Everything is validated first (:mod:`bench.validate`); then the results directory is locked for this process
    (:mod:`bench.lock`): a second run on it is refused at once, naming the holder.
    """
    out = Path(cfg.run.out)
    t0 = time.time()
    runner = Runner(cfg, out, progress=progress)
    # Validation first, so that a changed option's own mistake is reported rather than "different config".
    warnings = validate_run(cfg, runner, dry_run=dry_run)
    if dry_run:
        text = plan(cfg, runner, warnings)
        print(text)
        return {"plan": text}
    check_out_dir(cfg, out, force)
    if cfg.judge.model and _needs_judge(runner):
        make_judge(cfg.judge).preflight()  # fail fast, before hours of training; no cache, so nothing is written
    for task, protocol in runner.ctx.protocols().items():
        if protocol.startswith("NOT "):  # loud, once per run: these numbers cannot be set beside the benchmark's
            print(f"bench: WARNING: {task}: {protocol}", file=sys.stderr, flush=True)
    lock = RunLock(out, "bench run", cfg.executor.lock_mode, cfg.executor.lease_s)
    lock.acquire()  # creates the directory; refuses at once if another live run holds it
    try:
        return _run_locked(cfg, runner, out, force, t0)
    finally:
        lock.release()


def _needs_judge(runner: Runner) -> bool:
    ctx = runner.ctx
    return any(s.kind == "score" and ctx.scorer(ctx.task(s.task)).judged and runner.status(s) != "done"
               for s in runner.stages)


def _run_locked(cfg: RunConfig, runner: Runner, out: Path, force: bool, t0: float) -> dict:
    check_out_dir(cfg, out, force)  # again, under the lock: a run that finished meanwhile may have written it
    rd = RunDir(out)
    rd.mark_version()
    before = Provenance.read(rd)
    write_text(rd.config, cfg.to_yaml())
    prov = None
    if not all(runner.status(s) == "done" for s in runner.stages) or not rd.provenance.exists():
        prov = provenance(cfg, runner)  # computed once per run (it loads the tokenizer for the template hash)
        Provenance(prov["config_hash"], "running", prov).write(rd)
    try:
        return _stages_and_report(cfg, runner, out, before, prov, t0)
    except BaseException as e:  # an error, Ctrl-C or SIGTERM anywhere from the first stage to the last record
        _record_stop(rd, e)
        raise


def _stages_and_report(cfg: RunConfig, runner: Runner, out: Path, before: Provenance | None, prov: dict | None,
                       t0: float) -> dict:
    rd = RunDir(out)
    summary = runner.run(run_in_worker)
    stored = rd.table(cfg.run.layout, "md")
    ledger = runner.ledger
    current = before is not None and before.status == "done" and before.config_hash == cfg.config_hash()
    if not summary["ran"] and stored.exists() and current:
        # Nothing changed: the stored table and plots are current; skip the heavy imports they would cost.
        summary.update(seconds=round(time.time() - t0, 2), out=str(out), table=stored.read_text(), plots=[],
                       judge_cost=None)
        return summary
    table, plots = _report(cfg, out)
    summary.update(seconds=round(time.time() - t0, 2), out=str(out), table=table,
                   plots=[str(p) for p in plots], judge_cost=ledger.summary() if ledger else None)
    prov = prov or provenance(cfg, runner)
    Provenance(prov["config_hash"], "done", {**prov, "last_run": {k: v for k, v in summary.items() if k != "table"}}
               ).write(rd)
    return summary


def _record_stop(rd: RunDir, e: BaseException) -> None:
    """A run that stops (an error, Ctrl-C, SIGTERM) says so in provenance.json, with how to go on: never a
    "running" left behind by a process that is gone."""
    interrupted = isinstance(e, KeyboardInterrupt)
    try:
        prov = Provenance.read(rd)
        if prov is None:
            return
        prov.status = "interrupted" if interrupted else "failed"
        prov.stopped = {"time": time.time(), "error": first_line(e),
                                 "hint": "re-run the same command to resume (finished stages are kept)"}
        prov.write(rd)
    except Exception:  # noqa: BLE001 - a full disk may refuse this write too: the original error matters more
        pass


def _report(cfg: RunConfig, out: Path) -> tuple[str, list[Path]]:
    """Write the run's tables (built once) and plots; return the Markdown table and the plot paths."""
    from ..plots import make_plots  # start-up cost: imports numpy, pandas
    from ..tables import has_paper_rows, write_tables  # start-up cost: imports numpy, pandas

    # The paper's reported numbers go beside ours, in rows marked as the paper's, in the layouts that have them.
    paths = write_tables(out, layout=cfg.run.layout, paper=has_paper_rows(cfg.run.layout))
    table = next(p for p in paths if p.suffix == ".md").read_text(encoding="utf-8")
    return table, make_plots(out)

"""`bench run --executor processes|slurm|ray`: the same stage keys, scores and tables as the serial (local) run, with
stages run in other processes; faults (a worker killed mid-training, the coordinator killed, Slurm preemption, a
deterministic failure); the shared-storage lock mode; `bench status`, `bench stage`, the dry run's job list.

Real engines: a one-node Slurm cluster (scripts/slurm_up.sh: Debian's slurmctld/slurmd/munge) and a local Ray
cluster of two node processes (scripts/ray_up.sh), each started once per session and stopped by its PIDs. A test
that needs an engine this machine lacks skips and says which.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from support import ROOT, bench, bench_subprocess, error_lines

from bench.config import experiment_path, load_run_config
from bench.executors.processes import ProcessExecutor
from bench.lock import RunLock
from bench.pipeline import Runner
from bench.pipeline.stages.train import launch_command
from bench.rundir import RunDir
from bench.rundir.paths import write_json
from bench.rundir.records import JobRecord


# Two variants on one small task: contamination, dynamics, 2 trainings, 2 generations, 2 scores (8 stages, all on
# workers); 24 training steps with a checkpoint every CKPT, so that a training can be killed in the middle of it.
CKPT = 6
SMALL = ["--config", "ci", "--tasks", "toy_mcq", "limit=4", "max_examples=32", "num_train_epochs=12",
         f"save_steps={CKPT}", "num_checkpoints=2", "max_new_tokens=8",
         "threads=1"]  # every process the same torch threads, whatever the load when each starts: the same floats
TIMING = ("seconds", "time")


# ---- engines -----------------------------------------------------------------------------------------------------

def _script_env(out: str) -> dict:
    return dict(re.findall(r"(\w+)=(\S+)", out.split("export", 1)[1])) if "export" in out else {}


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster for the session: the environment that points clients at it."""
    if shutil.which("slurmctld") is None and not os.path.exists("/usr/sbin/slurmctld"):
        pytest.skip("Slurm is not installed here (apt-get install slurmctld slurmd slurm-client munge)")
    pytest.importorskip("submitit", reason="the slurm executor needs submitit (pip install -e '.[slurm]')")
    d = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_up.sh"), str(d)], capture_output=True, text=True)
    if up.returncode != 0:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm_down.sh"), str(d)])
        pytest.fail(f"the Slurm cluster did not start: {up.stderr[-2000:]}")
    yield _script_env(up.stdout)
    subprocess.run(["bash", str(ROOT / "scripts" / "slurm_down.sh"), str(d)])


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (a head and a second node process) for the session: its address and token."""
    pytest.importorskip("ray", reason="the ray executor needs ray (pip install -e '.[ray]')")
    d = f"/tmp/sftmix-ray-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY": str(Path(sys.executable).with_name("ray"))}
    up = subprocess.run(["bash", str(ROOT / "scripts" / "ray_up.sh"), d], capture_output=True, text=True, env=env)
    if up.returncode != 0:
        subprocess.run(["bash", str(ROOT / "scripts" / "ray_down.sh"), d])
        pytest.fail(f"the Ray cluster did not start: {up.stderr[-2000:]}")
    yield _script_env(up.stdout)
    subprocess.run(["bash", str(ROOT / "scripts" / "ray_down.sh"), d])
    shutil.rmtree(d, ignore_errors=True)


def engine_env(kind: str, request) -> dict:
    return {"slurm": lambda: request.getfixturevalue("slurm"), "ray": lambda: request.getfixturevalue("ray_cluster"),
            }.get(kind, dict)()


# ---- helpers -----------------------------------------------------------------------------------------------------

def run(out: Path, *extra: str, env: dict | None = None, timeout: int = 1200) -> tuple[int, str, str]:
    proc = bench_subprocess("run", *SMALL, "--out", str(out), *extra, env=env)
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


def results(out: Path) -> dict:
    """scores/*/*.json (timing fields aside), the per-item values and the tables, by relative path."""
    files = {}
    for p in sorted((out / "scores").rglob("*")) + sorted((out / "tables").glob("*")):
        if p.is_file():
            text = p.read_text()
            if p.suffix == ".json":
                text = json.dumps({k: v for k, v in json.loads(text).items() if k not in TIMING}, sort_keys=True)
            files[str(p.relative_to(out))] = text
    assert files
    return files


def states(out: Path) -> dict[str, dict]:
    return {p.stem.replace("__", "/"): json.loads(p.read_text()) for p in (out / "state").glob("*.json")}


def starts(out: Path, stage: str) -> int:
    """How many times a worker started ``stage`` (each start writes one line to its log)."""
    log = out / "executor" / "logs" / (stage.replace("/", "__") + ".log")
    return len(re.findall(rf"^bench stage {re.escape(stage)}: start ", log.read_text(), re.M)) if log.exists() else 0


def wait_for(cond, timeout: float, proc=None, what: str = "") -> None:
    t0 = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.communicate()[1][-3000:]}")
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The serial (local) run every executor must reproduce."""
    out = tmp_path_factory.mktemp("serial") / "run"
    rc, _, stderr = run(out)
    assert rc == 0, stderr[-3000:]
    return out


def running(out: Path, stage: str) -> bool:
    p = out / "state" / (stage.replace("/", "__") + ".json")
    return p.exists() and json.loads(p.read_text())["status"] == "running"


def checkpointed(out: Path, variant: str) -> bool:
    """The variant's first checkpoint is complete (the Trainer writes trainer_state.json last)."""
    return (out / "variants" / variant / "checkpoints" / f"checkpoint-{CKPT}" / "trainer_state.json").exists()


def resumed(out: Path, stage: str, after: str) -> bool:
    """The stage's log says, after the line containing ``after``, that training resumed from a checkpoint."""
    log = (out / "executor" / "logs" / (stage.replace("/", "__") + ".log")).read_text()
    return bool(re.search(r"resuming from \S*checkpoint-\d+", log.rsplit(after, 1)[-1]))


def assert_reproduces(out: Path, serial: Path, kind: str, attempts: dict | None = None,
                      started: dict | None = None) -> None:
    """The serial run's keys, scores and tables, every stage in a worker of ``kind``, each submitted once and
    started once (or as often as ``attempts`` and ``started`` say)."""
    assert results(out) == results(serial)
    st, ref = states(out), states(serial)
    assert {k: v["key"] for k, v in st.items()} == {k: v["key"] for k, v in ref.items()}
    coordinator = {v["pid"] for v in ref.values()}
    for name, s in st.items():
        assert s["status"] == "done" and s["executor"] == kind and s["pid"] not in coordinator and s["job_id"], \
            (name, s)
        n = (attempts or {}).get(name, 1)
        assert s["attempt"] == n and starts(out, name) == (started or {}).get(name, n), (name, s, starts(out, name))
    assert json.loads((out / "provenance.json").read_text())["executor"]["kind"] == kind


# ---- the same results, wherever the stages ran, through faults --------------------------------------------------

@pytest.mark.slow
def test_processes_reproduce_the_serial_run_through_a_worker_killed_mid_training(serial, tmp_path):
    out = tmp_path / "run"
    proc = bench_subprocess("run", *SMALL, "--out", str(out), "--executor", "processes")
    try:
        wait_for(lambda: checkpointed(out, "sftmix") and running(out, "train/sftmix"), 900, proc,
                 "train/sftmix's first checkpoint")
        pid = states(out)["train/sftmix"]["pid"]
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert re.search(r"failed train/sftmix \(attempt 1 of 3\): the worker was killed by signal 9 .*; retrying",
                     stderr), stderr[-3000:]
    assert "queued train/sftmix as processes" in stderr
    assert_reproduces(out, serial, "processes", {"train/sftmix": 2})
    assert resumed(out, "train/sftmix", "start (attempt 2")  # from its checkpoint, not from scratch
    # Resumable across executors: the local executor finds everything done.
    rc, _, stderr = run(out)
    assert rc == 0 and not re.search(r"\] (run|resume|redo) ", stderr), stderr[-3000:]


@pytest.mark.slow
def test_killed_coordinator_rerun_waits_for_live_jobs_and_runs_nothing_twice(serial, tmp_path):
    """... in the lock mode for filesystems without flock: the dead coordinator's soft lock is taken over."""
    out = tmp_path / "run"
    args = ["run", *SMALL, "--out", str(out), "--executor", "processes", "executor.lock_mode=soft"]
    proc = bench_subprocess(*args)
    worker = None
    try:
        wait_for(lambda: running(out, "train/sftmix"), 900, proc, "train/sftmix to start")
        worker = states(out)["train/sftmix"]["pid"]
        # Held (SIGSTOP) while the coordinator dies and `bench status` looks: the tiny training takes ~2 s, less than
        # status's own start-up, so a free-running worker could be done before status sees it running.
        os.kill(worker, signal.SIGSTOP)
        os.kill(proc.pid, signal.SIGKILL)  # the coordinator dies; its worker goes on
        proc.communicate(timeout=60)
        status = subprocess.run([sys.executable, "-m", "bench.cli", "status", str(out)], capture_output=True,
                                text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        if proc.poll() is None:
            proc.kill()
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGCONT)
    assert status.returncode == 0, status.stderr
    assert re.search(rf"running +train/sftmix .*on \S+ as processes job {worker}", status.stdout), status.stdout
    proc = bench_subprocess(*args)
    stdout, stderr = proc.communicate(timeout=1200)
    assert proc.returncode == 0, stderr[-3000:]
    if f"waiting for train/sftmix: still running as processes job {worker}" not in stderr:
        assert "train/sftmix" not in stderr  # ... or the worker had already finished it
    assert_reproduces(out, serial, "processes")  # no stage ran twice
    assert states(out)["train/sftmix"]["pid"] == worker


@pytest.mark.slow
def test_slurm_reproduces_the_serial_run_through_a_killed_job_and_a_preemption(slurm, serial, tmp_path):
    """train/ntp's job is killed (the coordinator submits it again); train/sftmix's gets USR2, what Slurm sends
    before preempting or at the time limit (submitit requeues the same job, which resumes from its checkpoint)."""
    out = tmp_path / "run"
    senv = {**os.environ, **slurm}
    proc = bench_subprocess("run", *SMALL, "--out", str(out), "--executor", "slurm", env=slurm)
    try:
        wait_for(lambda: running(out, "train/ntp"), 900, proc, "train/ntp to start")
        cancelled, worker = states(out)["train/ntp"]["job_id"], states(out)["train/ntp"]["pid"]
        # The job's worker SIGKILLed on its node (the OOM killer, a crash): scancel would not do, whatever its
        # --signal: Slurm turns it into SIGCONT, SIGTERM (which submitit lets pass, as Slurm sends it before a
        # preemption too) and SIGKILL only after KillWait, within which a fast machine finishes this small training.
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: checkpointed(out, "sftmix") and running(out, "train/sftmix"), 900, proc,
                 "train/sftmix's first checkpoint")
        job = states(out)["train/sftmix"]["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job], check=True, env=senv)

        def requeued() -> bool:  # Slurm holds a requeued job back a while (BeginTime): let it start now
            q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True, env=senv)
            return q.stdout.split()[:2] == ["PENDING", "BeginTime"]

        wait_for(requeued, 300, proc, "the requeue")
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, env=senv)
        stdout, stderr = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "failed train/ntp (attempt 1 of 3)" in stderr
    st = states(out)
    assert st["train/ntp"]["job_id"] != cancelled
    assert st["train/sftmix"]["job_id"] == job  # requeued as the same job, not submitted again
    log = (out / "executor" / "logs" / "train__sftmix.log").read_text()
    assert "this job is preempted" in log and f"Requeued job {job}" in log, log[-3000:]
    assert resumed(out, "train/sftmix", f"Requeued job {job}")
    # train/ntp: submitted twice; train/sftmix: submitted once, started twice (the same job, requeued)
    assert_reproduces(out, serial, "slurm", {"train/ntp": 2}, {"train/sftmix": 2})


@pytest.mark.slow
def test_ray_reproduces_the_serial_run(ray_cluster, serial, tmp_path):
    out = tmp_path / "run"
    rc, _, stderr = run(out, "--executor", "ray", env=ray_cluster)
    assert rc == 0, stderr[-3000:]
    assert_reproduces(out, serial, "ray")


@pytest.mark.slow
def test_deterministic_failure_stops_the_run_in_one_line_without_retry(serial, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(serial, out)
    for name in ("train__sftmix", "generate__sftmix__toy_mcq", "score__sftmix__toy_mcq"):
        (out / "state" / f"{name}.json").unlink()  # sftmix trains again, from a confidence table now broken
    # a whole parquet file of something else (a damaged, cut-short one is found and made again: issue 18)
    pd.DataFrame({"not": ["a confidence table"]}).to_parquet(out / "dynamics" / "confidence.parquet")
    rc, _, stderr = run(out, "--executor", "processes")
    assert rc == 2
    (line,) = error_lines(stderr)
    assert line.startswith("bench run: error: stage train/sftmix failed: ") and "(log: " in line, line
    st = states(out)["train/sftmix"]
    assert st["status"] == "failed" and st["deterministic"] is True and starts(out, "train/sftmix") == 1


# ---- fast checks -------------------------------------------------------------------------------------------------

def _runner(tmp_path, **overrides):
    cfg = load_run_config(experiment_path("ci"), {"run.out": str(tmp_path / "run"), **overrides})
    return Runner(cfg, cfg.run.out, progress=False)


def test_executor_options_never_enter_keys_or_the_config_hash(tmp_path):
    a = _runner(tmp_path)
    b = _runner(tmp_path, **{"executor.kind": "slurm", "executor.partition": "gpu", "executor.gpus_per_node": 8,
                             "executor.lock_mode": "soft", "executor.max_retries": 5})
    assert a.cfg.config_hash() == b.cfg.config_hash()
    assert [(s.name, s.key) for s in a.stages] == [(s.name, s.key) for s in b.stages]
    assert [s.deps for s in a.stages][:4] == [(), (), (), ("dynamics",)]  # contamination, dynamics, train/ntp, ...
    gen = next(s for s in b.stages if s.kind == "generate")
    assert (gen.deps, gen.resources.gpus, b.stage("train/ntp").resources.gpus) == (("train/ntp",), 1, 8)


def test_stage_command_refuses_an_unknown_stage_and_a_changed_key(tmp_path):
    r = _runner(tmp_path)
    r.ctx.rd.root.mkdir(parents=True)
    r.ctx.rd.config.write_text(r.cfg.to_yaml())
    rc, _, stderr = bench("stage", str(r.out), "train/sftmxi")
    assert rc == 2 and "no stage 'train/sftmxi' in this run (did you mean 'train/sftmix'?)" in error_lines(
        stderr, "stage")[0]
    rc, _, stderr = bench("stage", str(r.out), "train/sftmix", "--key", "0123456789abcdef")
    (line,) = error_lines(stderr, "stage")
    assert rc == 2 and "is not the one the coordinator submitted (0123456789abcdef)" in line
    assert not (r.out / "state").exists()


def test_dry_run_lists_jobs_with_resources_dependencies_and_an_sbatch_script(tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "run"
    rc, stdout, stderr = bench("run", *SMALL, "--out", str(out), "--dry-run", "--executor", "slurm",
                               "executor.partition=debug", "executor.gpus_per_node=4", "executor.setup=module load x")
    assert rc == 0, stderr
    assert "executor: slurm; 8 job(s)" in stdout
    assert re.search(r"contamination +\[1 node, 0 GPUs, 1 CPU, 720 min\]", stdout), stdout
    assert re.search(r"train/sftmix +\[1 node, 4 GPUs, 32 CPUs, 720 min\]  after dynamics", stdout), stdout
    assert re.search(r"generate/ntp/toy_mcq +\[1 node, 1 GPU, 8 CPUs, 720 min\]  after train/ntp", stdout)
    assert "#SBATCH --partition=debug" in stdout and "#SBATCH --gpus-per-node=4" in stdout
    assert "module load x" in stdout and "submitit.core._submit" in stdout
    assert not out.exists()


def test_help_lists_the_executor_option():
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--help"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "--executor {local,processes,slurm,ray}" in proc.stdout


def test_multi_node_launch_takes_the_rendezvous_from_slurm(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text("#!/bin/sh\necho gpu-017\necho gpu-018\n")
    (fake / "scontrol").chmod(0o755)
    env = {"SLURM_JOB_NODELIST": "gpu-[017-018]", "SLURM_NODEID": "1", "SLURM_JOB_ID": "4242",
           "PATH": f"{fake}:{os.environ['PATH']}"}
    cmd = launch_command(8, 2, ["train", "--out", "X"], tmp_path / "c.yaml", env=env)
    i = cmd.index("--num_processes")
    assert cmd[i + 1] == "16"
    assert cmd[cmd.index("--num_machines") + 1] == "2" and cmd[cmd.index("--machine_rank") + 1] == "1"
    assert cmd[cmd.index("--main_process_ip") + 1] == "gpu-017"
    assert cmd[cmd.index("--main_process_port") + 1] == str(29500 + 4242)
    assert cmd[-5:] == ["train", "--config", str(tmp_path / "c.yaml"), "--out", "X"]
    single = launch_command(8, 1, ["train"], tmp_path / "c.yaml", env={})
    assert "--num_machines" not in single and single[single.index("--num_processes") + 1] == "8"


def test_soft_lock_is_taken_over_from_a_dead_holder(tmp_path):
    code = ("import sys, time; from bench.lock import RunLock; l = RunLock(sys.argv[1], 'holder', mode='soft'); "
            "l.acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = RunLock(tmp_path, "second", mode="soft")
        with pytest.raises(Exception, match=rf"in use by another run \(pid {holder.pid} on "):
            lock.acquire()
        holder.kill()
        holder.wait()
        lock.acquire()  # the holder is dead (same host): its lease is broken at once
        assert json.loads((tmp_path / ".bench.lock.holder").read_text())["command"] == "second"
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_second_coordinator_is_refused_in_soft_lock_mode_too(tmp_path):
    out = tmp_path / "run"
    held = RunLock(out, "bench run", mode="soft")
    held.acquire()
    try:
        rc, _, stderr = bench("run", *SMALL, "--out", str(out), "executor.lock_mode=soft")
        assert rc == 2
        (line,) = error_lines(stderr)
        assert f"is in use by another run (pid {os.getpid()} on " in line, line
        assert sorted(p.name for p in out.iterdir()) == [".bench.lock", ".bench.lock.holder"]  # nothing written
    finally:
        held.release()


def test_job_record_reads_old_files_and_writes_them_byte_for_byte(tmp_path):
    """``executor/jobs/<stage>.json`` as the coordinator wrote it before the record was typed: read, written back
    identical; a file lacking fields reads with defaults; a live worker of this host is found from it."""
    rd = RunDir(tmp_path / "run")
    old = {"stage": "train/ntp", "executor": "processes", "job_id": str(os.getpid()), "host": socket.gethostname(),
           "attempt": 2, "time": 1764000000.25, "note": "a field no version names"}
    write_json(rd.stage_job("train/ntp"), old)
    before = rd.stage_job("train/ntp").read_bytes()
    record = JobRecord.read(rd, "train/ntp")
    assert (record.executor, record.job_id, record.attempt, record.extra) == ("processes", str(os.getpid()), 2,
                                                                               {"note": "a field no version names"})
    record.write(rd)
    assert rd.stage_job("train/ntp").read_bytes() == before
    write_json(rd.stage_job("gen/x"), {"executor": "slurm", "job_id": 123})
    assert JobRecord.read(rd, "gen/x") == JobRecord("gen/x", "slurm", "123", "", 1, 0.0, {})
    assert JobRecord.read(rd, "absent") is None
    # this test process is alive on this host but is no `bench stage` worker: not taken for one
    assert ProcessExecutor(None, rd).find(record) is None

"""Tasks and experiments ship inside the installed package, and other packages add tasks, scorers and variants
through entry points (issue 24): both proven with real installs (pip, no network) into throwaway folders."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.tasks import BUNDLED_TASKS, tasks_dirs
from core.errors import UserError
from core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def _builds_wheels() -> bool:
    """Whether this environment's setuptools builds a wheel without isolation (>= 70.1, or the wheel package)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools  # optional: a venv of Python >= 3.12 comes without it

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


needs_wheels = pytest.mark.skipif(not _builds_wheels(), reason="setuptools < 70.1 without the wheel package cannot "
                                  "build a wheel offline (scripts/test.sh installs setuptools 80 with judge-lc)")

PLUGIN_FILES = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "bench-plugin-demo"
        version = "0.0.1"

        [project.entry-points."sftmix_bench.tasks"]
        demo = "bench_plugin_demo.tasks"

        [project.entry-points."sftmix_bench.scorers"]
        demo_length = "bench_plugin_demo.scorer:LengthScorer"

        [project.entry-points."sftmix_bench.variants"]
        demo-mixup = "bench_plugin_demo.variants:DEMO"

        [tool.setuptools]
        packages = ["bench_plugin_demo", "bench_plugin_demo.tasks"]

        [tool.setuptools.package-data]
        "bench_plugin_demo.tasks" = ["*.yaml", "*.jsonl"]
    """,
    "bench_plugin_demo/__init__.py": "",
    "bench_plugin_demo/tasks/__init__.py": "",
    "bench_plugin_demo/tasks/demo_echo.yaml": """
        name: demo_echo
        kind: exact
        scorer: demo_length
        description: a plugin's task, scored by the plugin's scorer
        data:
          fallback: {package: bench_plugin_demo, file: tasks/items.jsonl}
        fields: {id: id, question: question, answer: answer}
        generation: {max_new_tokens: 8, temperature: 0.0}
    """,
    "bench_plugin_demo/tasks/items.jsonl": '{"id": "a", "question": "Say hi.", "answer": "hi"}\n'
                                           '{"id": "b", "question": "Say yes.", "answer": "yes"}\n',
    "bench_plugin_demo/scorer.py": """
        from bench.scorers.base import Metric, ScoreResult
        from bench.scorers.exact import ShortAnswerScorer


        class LengthScorer(ShortAnswerScorer):  # a short generated answer per item (kind exact), scored its own way
            name = "demo_length"
            primary = "chars"
            metrics = (Metric("chars", "characters", "mean length of the generated answer", "chars"),)

            def score(self, task, items, generations, records=(), config=None):
                values = [{"example_id": r["example_id"], "turn": 0, "value": len(r["text"])} for r in generations]
                mean = sum(v["value"] for v in values) / len(values) if values else None
                return ScoreResult({"chars": mean}, values, {"n_items": len(values), "n_failed": 0})
    """,
    "bench_plugin_demo/variants.py": """
        from sftmix.variants import Variant

        DEMO = Variant("demo-mixup", "a plugin's variant: NTP + 0.3 x Mixup", mu=0.3)
    """,
}


def _pip_target(source: Path, target: Path) -> None:
    """``pip install --no-deps --no-build-isolation --target``: offline, nothing but ``source`` itself."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True, text=True)


def _bench(args: list[str], cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    env.pop("BENCH_TASKS_DIR", None)
    return subprocess.run([sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_bundled_tasks_are_package_data():
    assert BUNDLED_TASKS == Path(__import__("bench").__file__).resolve().parent / "task_files"
    assert tasks_dirs()[0] == BUNDLED_TASKS and (BUNDLED_TASKS / "toy_mcq.yaml").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"task_files/*.yaml"' in pyproject and '"experiments/*.yaml"' in pyproject


@pytest.mark.slow
@needs_wheels
def test_plugin_package_adds_a_task_a_scorer_and_a_variant(tmp_path):
    src = tmp_path / "plugin"
    for rel, text in PLUGIN_FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(textwrap.dedent(text).lstrip())
    site = tmp_path / "site"
    _pip_target(src, site)
    path = [site, ROOT, *[Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    out = _bench(["tasks"], tmp_path, path)
    assert out.returncode == 0, out.stderr
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("demo_echo "))
    assert row[:4] == ["demo_echo", "exact", "2", "demo_length"]  # the plugin's task, its items, its scorer
    assert "demo_length (from bench-plugin-demo)" in out.stdout  # the scorer is registered, from its package
    out = _bench(["variants"], tmp_path, path)
    assert out.returncode == 0 and "demo-mixup" in out.stdout, out.stderr
    # the plugin's task and variant in a run plan: found, loaded, validated (its items rendered), counted
    out = _bench(["run", "--config", "ci", "--dry-run", "tasks=demo_echo", "variants=ntp,demo-mixup",
                  "--out", str(tmp_path / "run")], tmp_path, path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "generate/demo-mixup/demo_echo" in out.stdout and "score/ntp/demo_echo" in out.stdout
    # without the plugin on the path, its task is unknown, in one line
    out = _bench(["run", "--config", "ci", "--dry-run", "tasks=demo_echo", "--out", str(tmp_path / "run2")],
                 tmp_path, path[1:])
    assert out.returncode == 2 and "unknown task 'demo_echo'" in out.stderr and len(out.stderr.splitlines()) == 1


@pytest.mark.slow
@needs_wheels
def test_a_non_editable_install_finds_its_tasks_and_experiments(tmp_path):
    """The wheel (not the checkout) holds the tasks and experiments: `bench tasks` and a dry run of a bundled
    experiment work from another folder with only the installed copy on the path."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("bench", "sftmix"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
    site = tmp_path / "site"
    _pip_target(src, site)
    assert (site / "bench" / "task_files" / "toy_mcq.yaml").is_file()
    assert (site / "bench" / "experiments" / "ci.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = _bench(["tasks"], work, [site])
    assert out.returncode == 0, out.stderr
    assert str(site) in _bench(["tasks", "-v"], work, [site]).stdout  # the installed copy, not the checkout
    names = {line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip() and not line.startswith("scorers")}
    assert names == {p.stem for p in BUNDLED_TASKS.glob("*.yaml")}
    out = _bench(["run", "--config", "ci", "--dry-run", "--out", str(work / "run")], work, [site])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "generate/sftmix/toy_mcq" in out.stdout


def test_a_broken_plugin_is_one_line(monkeypatch):
    class EP:
        name, value, dist = "broken", "nowhere.module:thing", None

        def load(self):
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr("core.registry.entry_points", lambda group: [EP()])
    reg: Registry[str] = Registry("scorer", plugins="sftmix_bench.scorers")
    with pytest.raises(UserError, match=r"^scorer plugin 'broken' \(nowhere.module:thing, from package \?\) failed "
                                        r"to load: ImportError: No module named 'nowhere'$"):
        reg.get("x")

    class Dup(EP):
        name, value = "mcq", "x:y"

        def load(self):
            return object()

    monkeypatch.setattr("core.registry.entry_points", lambda group: [Dup()])
    reg = Registry("scorer", plugins="sftmix_bench.scorers")
    reg.add("mcq", "builtin")
    with pytest.raises(UserError, match="already registered"):
        "mcq" in reg  # noqa: B015 - the lookup loads the plugins

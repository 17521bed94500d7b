"""The layering (docs/ARCHITECTURE.md), checked by import-linter with the contracts in pyproject.toml: core below both
packages, the recipe alone, reporting free of sftmix, no import cycles inside a package; and the light start-up of
the commands a user types most."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the test extra (pip install -e '.[test]')")


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with ``cwd``'s pyproject.toml, in a fresh interpreter (its own import graph, no cache)."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), *sys.path])}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_import_contracts_hold():
    p = _lint(ROOT, ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "4 kept, 0 broken" in p.stdout


def test_the_contracts_catch_each_kind_of_violation(tmp_path):
    """The same contracts over a small tree that breaks each: every one reports broken."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    files = {
        "core/errors.py": "import sftmix.recipe\n",  # core imports the recipe
        "sftmix/recipe.py": "from bench import cli\n",  # the recipe imports bench
        "sftmix/a.py": "from . import b\n", "sftmix/b.py": "from . import a\n",  # a cycle
        "bench/baseline.py": "import sftmix.recipe\n",  # reporting imports training
        "bench/cli.py": "", "bench/tables/__init__.py": "", "bench/view/__init__.py": "", "bench/plots.py": "",
        "bench/bootstrap.py": "", "bench/paper.py": "",
        # a cycle between two subpackages of bench (as executors -> pipeline -> executors was)
        "bench/executors/job.py": "import bench.pipeline.worker\n",
        "bench/pipeline/worker.py": "from bench.executors import base\n", "bench/executors/base.py": "",
    }
    src = tmp_path / "src"
    for rel, body in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        for d in path.relative_to(src).parents:
            if d != Path("."):
                (src / d / "__init__.py").touch()
    p = _lint(tmp_path, src)
    assert p.returncode == 1, p.stdout[-4000:]
    assert "0 kept, 4 broken" in p.stdout, p.stdout[-4000:]
    for contract in ("The recipe stands alone", "core is below both packages", "Reporting reads run directories",
                     "No import cycles"):
        assert f"{contract}" in p.stdout


def test_help_and_table_do_not_import_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from bench.cli import main
        for argv in (["--help"], ["table", {str(tmp_path / "no-run")!r}]):
            try:
                main(argv)
            except SystemExit:
                pass
        print(sorted(m for m in ("torch", "transformers", "sftmix.trainer") if m in sys.modules))
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"

"""The layering (docs/ARCHITECTURE.md), checked by import-linter with the contracts in pyproject.toml: core below both
packages, the recipe alone, reporting free of sftmix, no import cycles inside a package; no import circle between
any two modules (grimp's graph); imports at module top unless a comment says why; and the light start-up of the
commands a user types most."""
import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the test extra (pip install -e '.[test]')")
grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (pip install -e '.[test]')")
PACKAGES = ("core", "sftmix", "bench")
# Where an import inside a function must say why: the three packages, the test suite and the scripts.
SOURCES = ("core/**/*.py", "sftmix/**/*.py", "bench/**/*.py", "tests/*.py", "tests/scripts/*.py", "scripts/*.py")


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


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module in ``graph`` (Tarjan's algorithm, iterative):
    each is a set of modules that import one another in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(m: str) -> tuple[str, list[str]]:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        return m, sorted(graph.find_modules_directly_imported_by(m))

    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [visit(root)]
        while work:
            m, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    work.append(visit(w))
                elif w in on_stack:
                    low[m] = min(low[m], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[m])
            if low[m] == index[m]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == m:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _graph(pythonpath: Path, *packages: str):
    code = ("import json, sys, grimp; g = grimp.build_graph(*sys.argv[1:], cache_dir=None); "
            "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), *sys.path])}
    p = subprocess.run([sys.executable, "-c", code, *packages], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    edges = json.loads(p.stdout)

    class Graph:  # the two calls import_cycles makes, over grimp's graph built in a fresh interpreter
        modules = set(edges)

        @staticmethod
        def find_modules_directly_imported_by(m):
            return set(edges[m])

    return Graph


def test_no_module_imports_into_a_circle():
    """Between any two modules of core, sftmix and bench (function-level imports count too), not only between
    the siblings of one package as the no-cycles contract checks."""
    assert import_cycles(_graph(ROOT, *PACKAGES)) == []


def test_the_circle_check_catches_a_two_module_circle(tmp_path):
    files = {"pkg/__init__.py": "", "pkg/a.py": "from pkg.sub import b\n", "pkg/sub/__init__.py": "",
             "pkg/sub/b.py": "def f():\n    from pkg import a  # lazy, and still a circle\n",
             "pkg/c.py": "import pkg.a\n"}
    for rel, body in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    assert import_cycles(_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.sub.b"]]
    (tmp_path / "pkg/sub/b.py").write_text("")
    assert import_cycles(_graph(tmp_path, "pkg")) == []


def uncommented_function_imports(root: Path, patterns=SOURCES) -> list[str]:
    """``path:line`` of every import inside a function with no comment on its line or the line before, in the files
    ``patterns`` match under ``root``: an import belongs at the module top unless a comment says why not (a heavy or
    optional dependency, a start-up cost, an import that must follow a change of environment)."""
    found = []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            lines = path.read_text(encoding="utf-8").splitlines()
            for fn in ast.walk(ast.parse("\n".join(lines), str(path))):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and not _says_why(lines, node.lineno - 1):
                        found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(set(found))


def _says_why(lines: list[str], i: int) -> bool:
    """A comment on line ``i``, or on the line before the block of import lines ``i`` belongs to (one comment says
    why for a block of lazy imports)."""
    while True:
        if "#" in lines[i]:
            return True
        before = lines[i - 1].strip() if i > 0 else ""
        if before.startswith("#"):
            return True
        if not before.startswith(("import ", "from ")):
            return False
        i -= 1


def test_function_level_imports_say_why():
    left = uncommented_function_imports(ROOT)
    assert left == [], "imports inside functions without a comment saying why (hoist them to the module top): " + \
        ", ".join(left)


def test_the_import_comment_check_catches_a_bare_one(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench/m.py").write_text(textwrap.dedent("""
        import json


        def ok():
            import torch  # heavy optional dependency
            # heavy: imports torch
            from sftmix import recipe
            return json, torch, recipe


        class C:
            def bad(self):
                from bench import tables
                from bench import view
                return tables, view

            def block(self):
                # start-up cost: one comment for the block
                from bench import tables
                from bench import view
                return tables, view
    """))
    (tmp_path / "tests").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "tests/test_m.py").write_text("def test_bare():\n    import json\n    assert json\n")
    (tmp_path / "scripts/s.py").write_text("def main():\n    import yaml  # optional here\n    yaml.x = 1\n"
                                           "    from csv import reader\n")
    assert uncommented_function_imports(tmp_path) == ["bench/m.py:14", "bench/m.py:15", "scripts/s.py:4",
                                                      "tests/test_m.py:2"]


LIGHT_COMMANDS = {"--help": ["--help"], "table": ["table", "{run}"], "status": ["status", "{run}"],
                  "variants": ["variants"], "tasks": ["tasks"]}


@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_light_commands_do_not_import_torch(tmp_path, command):
    """What a user types most starts without torch or transformers (seconds of import), on a real run directory
    for the commands that read one (a run whose config is written; no stage ran)."""
    run = tmp_path / "run"
    argv = [a.format(run=run) for a in LIGHT_COMMANDS[command]]
    code = textwrap.dedent(f"""
        import sys
        from bench.cli import main
        from bench.config import load_run_config
        from bench.rundir import RunDir
        rd = RunDir({str(run)!r})
        rd.root.mkdir()
        rd.mark_version()
        rd.config.write_text(load_run_config(None, {{"run.out": {str(run)!r}}}).to_yaml())
        try:
            code = main({argv!r})
        except SystemExit as e:
            code = e.code
        print("exit", code)
        print(sorted(m for m in ("torch", "transformers", "sftmix.trainer", "vllm") if m in sys.modules))
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    if command in ("status", "variants", "tasks", "--help"):
        assert lines[-2] == "exit 0", p.stdout[-2000:] + p.stderr[-2000:]
    assert lines[-1] == "[]", p.stdout[-2000:]

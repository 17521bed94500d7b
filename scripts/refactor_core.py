#!/usr/bin/env python3
"""Move the infrastructure both packages share out of ``sftmix`` into ``core`` and the toy evaluation data into
``bench`` (issue 24, item 3), and rewrite every import and reference to the moved modules across the tree.

Mechanical and idempotent: run it from the repository root (``python scripts/refactor_core.py``); a second run on
a tree that already has the layout changes nothing, and a run on a tree where other branches added files with the
old imports (``from sftmix.errors import UserError``, ``from .io import write_json`` inside ``sftmix``...) rewrites
those too. Function-level imports of ``core.errors``/``core.io``/``core.registry`` move to the module's top (core
imports nothing of the tree, so no cycle can follow, and costs nothing to import). Files are moved with ``git mv``
so history follows them. Prints what it changed; ``--check`` only reports (exit 1 when something is left to change).
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

CORE = "core"
# Whole modules that move: old dotted name -> new dotted name.
MODULE_MOVES = {
    "sftmix.errors": f"{CORE}.errors",
    "sftmix.registry": f"{CORE}.registry",
    "sftmix.io": f"{CORE}.io",
    "sftmix.schema": f"{CORE}.schema",  # the pydantic error -> one-line message base (issue 24 item 6), if present
    "sftmix.toydata": "bench.toydata",  # the generator of the toy data: its evaluation half is bench's
}
# Names that left their module before the move (see the commit "sftmix/sources.py"): (old module, name) -> module.
SYMBOL_MOVES = {
    ("sftmix.io", "data_identity"): "sftmix.sources",
    ("sftmix.toydata", "BUNDLED"): "sftmix.sources",
    ("sftmix.toydata", "ASSETS_DIR"): "sftmix.sources",
}
# Data files that move (relative paths), and the package-data fallbacks in task YAMLs that name them.
FILE_MOVES = {f"sftmix/assets/{n}": f"bench/assets/{n}" for n in ("toy_mcq.jsonl", "toy_open.jsonl", "toy_exact.jsonl")}
YAML_FALLBACK = re.compile(r"package:\s*sftmix(\s*,\s*file:\s*assets/toy_(?:mcq|open|exact)\.jsonl)")
CORE_INIT = '"""What ``sftmix`` (the recipe) and ``bench`` (the harness) share and neither owns: the one user-error\n' \
            'type, the registry, the config schema base, atomic writes and hashes. Imports neither package."""\n'
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".sh", ".txt"}
SELF = Path(__file__).resolve()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def tree_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files."""
    out = git("ls-files", "-co", "--exclude-standard", "-z")
    return sorted({Path(p) for p in out.split("\0") if p and Path(p).is_file()})


def mod_path(module: str) -> Path:
    return Path(*module.split(".")).with_suffix(".py")


def move_files(dry: bool) -> dict[Path, str]:
    """``git mv`` each module and data file still at its old place. Returns new path -> old dotted module name."""
    moved_from: dict[Path, str] = {}
    pairs = [(mod_path(o), mod_path(n), o) for o, n in MODULE_MOVES.items()]
    pairs += [(Path(o), Path(n), None) for o, n in FILE_MOVES.items()]
    for src, dst, old in pairs:
        if old is not None:
            moved_from[dst] = old
        if not src.exists():
            continue
        if dst.exists():
            print(f"refactor_core: both {src} and {dst} exist: merge them by hand", file=sys.stderr)
            continue
        print(f"move {src} -> {dst}")
        if not dry:
            dst.parent.mkdir(parents=True, exist_ok=True)
            git("mv", str(src), str(dst))
    init = Path(CORE) / "__init__.py"
    if not init.exists():
        print(f"create {init}")
        if not dry:
            init.parent.mkdir(exist_ok=True)
            init.write_text(CORE_INIT, encoding="utf-8")
            git("add", str(init))
    return moved_from


def module_of(path: Path, moved_from: dict[Path, str]) -> tuple[str, str, bool]:
    """(the module's name before the move, after it, whether it is a package ``__init__``)."""
    parts = list(path.with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    new = ".".join(parts)
    return moved_from.get(path, new), new, is_pkg


def resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def render_from(target: str, here: str, is_pkg: bool, relative: bool) -> str:
    """``from X`` for target module ``target`` seen from module ``here``: relative when it was and stays inside the
    same top-level package, else absolute."""
    pkg = here.split(".") if is_pkg else here.split(".")[:-1]
    tparts = target.split(".")
    if not relative or not pkg or tparts[0] != pkg[0]:
        return target
    common = 0
    while common < min(len(pkg), len(tparts)) and pkg[common] == tparts[common]:
        common += 1
    return "." * (len(pkg) - common + 1) + ".".join(tparts[common:])


def new_module(name: str) -> str:
    for old, new in MODULE_MOVES.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return name


def rewrite_imports(text: str, old_mod: str, new_mod: str, is_pkg: bool) -> str:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = resolve(node, old_mod, is_pkg)
            groups: dict[str, list[str]] = {}
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in MODULE_MOVES:  # `from sftmix import errors`: a submodule that moved
                    tgt, name = MODULE_MOVES[full].rsplit(".", 1)
                    alias = f"{name} as {a.asname}" if a.asname else (name if name == a.name else f"{name} as {a.name}")
                else:
                    tgt = SYMBOL_MOVES.get((base, a.name)) or new_module(base)
                    alias = f"{a.name} as {a.asname}" if a.asname else a.name
                groups.setdefault(tgt, []).append(alias)
            rendered = [(render_from(t, new_mod, is_pkg, bool(node.level)), names) for t, names in groups.items()]
            same = len(rendered) == 1 and rendered[0][0] == ("." * node.level + (node.module or ""))
            if same:
                continue
        elif isinstance(node, ast.Import):
            if not any(new_module(a.name) != a.name for a in node.names):
                continue
            rendered = None
        else:
            continue
        first, last = node.lineno - 1, node.end_lineno - 1
        indent = re.match(r"\s*", lines[first]).group(0)
        tail = lines[last][node.end_col_offset:].rstrip("\n")  # a trailing comment stays
        if rendered is None:
            stmts = ["import " + ", ".join(new_module(a.name) + (f" as {a.asname}" if a.asname else "")
                                           for a in node.names)]
        else:
            stmts = [_from_line(src, names, indent) for src, names in rendered]
        new = "\n".join(indent + s if i else indent + s for i, s in enumerate(stmts))
        edits.append((first, last, new + tail + "\n"))
    for first, last, new in sorted(edits, reverse=True):
        lines[first:last + 1] = [new]
    return order_blocks("".join(lines))


SIMPLE_FROM = re.compile(r"from (\.*)([\w.]*) import [^()\n]*(#.*)?\n")


def order_blocks(text: str) -> str:
    """In a run of one-line module-level ``from`` imports mixing ``core`` and relative ones, absolute first (isort's
    order), so a rewritten ``from .errors`` does not sit among a package's relative imports."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and SIMPLE_FROM.fullmatch(lines[j]):
            j += 1
        run = lines[i:j]
        if any(ln.startswith(f"from {CORE}.") for ln in run) and any(ln.startswith("from .") for ln in run):
            lines[i:j] = sorted(run, key=lambda ln: (ln.startswith("from ."), ln.split()[1]))
        i = max(j, i + 1)
    return "".join(lines)


def _from_line(src: str, names: list[str], indent: str) -> str:
    line = f"from {src} import {', '.join(names)}"
    if len(indent) + len(line) <= 120:
        return line
    return f"from {src} import (" + f",\n{indent}    ".join(names) + ")"


# Function-level imports of these move to the module's top: core imports nothing of the tree (no cycle can follow)
# and costs nothing to import, so deferring it only hid the dependency. Not core.schema (pydantic).
HOIST = (f"{CORE}.errors", f"{CORE}.io", f"{CORE}.registry")
HOIST_IN = (CORE, "sftmix", "bench")


def _bound_at_top(tree: ast.Module) -> dict[str, str | None]:
    """Names the module binds at its top level -> the module they are imported from (None: defined here)."""
    bound: dict[str, str | None] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound[node.name] = None
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        bound[n.id] = None
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                bound[a.asname or a.name] = None if node.level else node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                bound[a.asname or a.name.split(".")[0]] = None
    return bound


def hoist_core_imports(text: str) -> str:
    """Move ``from core.X import a, b`` statements in function bodies to the module's top (merged into an existing
    ``from core.X import`` there). Aliased imports, and names the module binds otherwise, stay where they are."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    bound = _bound_at_top(tree)
    wanted: dict[str, list[str]] = {}
    remove: list[ast.ImportFrom] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in fn.body:
            if (isinstance(node, ast.ImportFrom) and not node.level and node.module in HOIST
                    and all(a.asname is None and bound.get(a.name, node.module) == node.module for a in node.names)):
                remove.append(node)
                names = wanted.setdefault(node.module, [])
                names += [a.name for a in node.names if a.name not in names]
    if not remove:
        return text
    lines = text.splitlines(keepends=True)
    for node in sorted(remove, key=lambda n: n.lineno, reverse=True):
        first, last = node.lineno - 1, node.end_lineno - 1
        before = lines[first - 1].strip() if first else ""
        block_empty = not before.startswith(("from ", "import "))
        if block_empty and last + 1 < len(lines) and not lines[last + 1].strip():
            last += 1  # the blank line that separated the (now empty) import block from the code
        del lines[first:last + 1]
    tree = ast.parse("".join(lines))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    edits = []
    inserts: dict[int, list[str]] = {}
    for module, names in sorted(wanted.items()):
        have = [n for n in top if isinstance(n, ast.ImportFrom) and not n.level and n.module == module]
        if have:
            node = have[0]
            old = [a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names]
            merged = old + sorted(n for n in names if n not in old)
            tail = lines[node.end_lineno - 1][node.end_col_offset:].rstrip("\n")
            edits.append((node.lineno - 1, node.end_lineno - 1, _from_line(module, merged, "") + tail + "\n"))
            continue
        inserts.setdefault(_anchor(tree, top, module), []).append(_from_line(module, sorted(names), "") + "\n")
    for at, (new, blank) in {at: _block(tree, top, at, news) for at, news in inserts.items()}.items():
        edits.append((at, at - 1, ("\n" if blank else "") + new))
    for first, last, new in sorted(edits, key=lambda e: e[0], reverse=True):
        lines[first:last + 1] = [new]
    return "".join(lines)


def _anchor(tree: ast.Module, top: list, module: str) -> int:
    """The 0-based line before which a new ``from core.X import`` goes: among the module's core imports in order,
    else before its first relative or first-party import, else after its last import (else after its docstring)."""
    core = [n for n in top if isinstance(n, ast.ImportFrom) and not n.level and (n.module or "").startswith(CORE + ".")]
    if core:
        later = [n for n in core if n.module > module]
        return later[0].lineno - 1 if later else core[-1].end_lineno
    first_party = [n for n in top if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").split(".")[0]
                                                                         in ("sftmix", "bench"))]
    if first_party:
        return first_party[0].lineno - 1
    if top:
        return top[-1].end_lineno
    return tree.body[0].end_lineno if tree.body and isinstance(tree.body[0], ast.Expr) else 0


def _block(tree: ast.Module, top: list, at: int, news: list[str]) -> tuple[str, bool]:
    """The new lines for one anchor, and whether a blank line must separate them from the third-party imports
    above (a new group after the module's last import)."""
    after_last = bool(top) and at == top[-1].end_lineno
    last = top[-1] if top else None
    third_party = after_last and (isinstance(last, ast.Import) or not (
        last.level or (last.module or "").split(".")[0] in (CORE, "sftmix", "bench")))
    return "".join(sorted(news)), third_party


def dotted_subs() -> list[tuple[re.Pattern, str]]:
    """Dotted names and paths in any text (monkeypatch targets, docstrings, docs, ``python -m``)."""
    subs = [(re.compile(rf"\b{re.escape(o)}\.{n}\b"), f"{t}.{n}") for (o, n), t in SYMBOL_MOVES.items()]
    for old, new in MODULE_MOVES.items():
        subs.append((re.compile(rf"(?<![\w.]){re.escape(old)}\b"), new))
        subs.append((re.compile(rf"(?<![\w/]){re.escape(str(mod_path(old)))}"), str(mod_path(new))))
    for old, new in FILE_MOVES.items():
        subs.append((re.compile(rf"(?<![\w/]){re.escape(old)}"), new))
    return subs


def rewrite_pyproject(text: str) -> str:
    text = re.sub(r'include = \["sftmix\*", "bench\*"\]', f'include = ["{CORE}*", "sftmix*", "bench*"]', text)
    m = re.search(r'^bench = \[(.*)\]$', text, flags=re.M)
    if m and '"assets/*"' not in m.group(1):
        text = text[:m.start(1)] + '"assets/*", ' + text[m.start(1):]
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report what would change; exit 1 if anything would")
    ap.add_argument("--no-hoist", action="store_true",
                    help="leave function-level core imports where they are (to replay the commits made before the "
                         "hoist: run with --no-hoist, cherry-pick them, then run again without it)")
    args = ap.parse_args()
    root = Path(git("rev-parse", "--show-toplevel").strip())
    os.chdir(root)
    moved_from = move_files(args.check)
    subs = dotted_subs()
    changed = []
    for path in tree_files():
        if path.resolve() == SELF or path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8")
        new = text
        if path.suffix == ".py":
            new = rewrite_imports(new, *module_of(path, moved_from))
            if path.parts[0] in HOIST_IN and not args.no_hoist:
                new = hoist_core_imports(new)
        for pat, rep in subs:
            new = pat.sub(rep, new)
        if path.suffix in (".yaml", ".yml"):
            new = YAML_FALLBACK.sub(r"package: bench\1", new)
        if path.name == "pyproject.toml":
            new = rewrite_pyproject(new)
        if new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for p in changed:
        print(f"rewrite {p}")
    if args.check:
        return 1 if changed or any(mod_path(o).exists() for o in MODULE_MOVES) else 0
    print(f"refactor_core: {len(changed)} files rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

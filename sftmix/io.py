"""Atomic writes and stable hashes: nothing half-written survives a crash, and every artefact can be keyed."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread writes files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The file gets the mode a plain ``open()`` would give (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def stable_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def hash_obj(obj: Any, n: int = 16) -> str:
    """Short sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(stable_json(obj).encode("utf-8")).hexdigest()[:n]


def hash_file(path: str | os.PathLike, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def data_identity(source: str) -> dict:
    """Hash of a training data set: file contents for a local file (``toy``: the bundled one), the id for a hub set."""
    from .toydata import BUNDLED  # not sftmix.data: a no-op re-run must not pay for torch's import

    if source.startswith(("bigbench:", "bbh:")):  # the task files' contents (the split is a function of them)
        from . import bbh, bigbench
        from .errors import UserError

        module = bbh if source.startswith("bbh:") else bigbench
        try:  # the rows also depend on how they are rendered and split: ROWS_VERSION
            return {"source": source, "rows_version": module.ROWS_VERSION,
                    "sha256_16": hash_obj([hash_file(p) for p in module.source_files(source)])}
        except UserError:  # not on this machine: validation reports it (a dry run plans anyway)
            return {"source": source, "missing": True}
    path = Path(BUNDLED.get(source, source))
    if path.is_file():
        return {"source": source, "sha256_16": hash_file(path)}
    return {"source": source, "hub": True}


def package_file(package: str, relative: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.exists():
            return path
    return None

"""Where the recipe's training data comes from, by name, and its identity (what a finished training is keyed by).

``toy`` is the bundled ``assets/toy_train.jsonl`` (made by :mod:`bench.toydata` with the toy evaluation sets it is
paired with); ``bigbench:...`` and ``bbh:...`` are the BIG-bench / BIG-Bench Hard task files; anything else is a
local file or a hub data set. Torch-free: a no-op re-run checks identities without importing torch.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from core.io import hash_file, hash_obj

from . import bbh, bigbench

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUNDLED = {"toy": ASSETS_DIR / "toy_train.jsonl"}  # data names that resolve to a bundled file


def data_identity(source: str) -> dict:
    """Hash of a training data set: file contents for a local file (``toy``: the bundled one), the id for a hub set."""
    if source.startswith(("bigbench:", "bbh:")):  # the task files' contents (the split is a function of them)
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

"""`bench view`: one self-contained HTML file per set of runs - summary and provenance, the tables exactly as
`bench table` prints them, the plots, and an item browser (every prompt, each variant's answer side by side, the
reference, every judge verdict, the per-item difference from NTP; filters, search, sort, a link per item).

Reads only the run directories, through :mod:`bench.rundir` and :mod:`bench.tables` (never ``sftmix``): :mod:`.data`
gathers, :mod:`.page` renders (``assets/view.css``, ``assets/view.js``), :mod:`.serve` serves the file on
127.0.0.1 for ``--serve``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..provenance import git_commit
from ..rundir import write_text
from .data import gather
from .page import embed_json, render_page

__all__ = ["build_report", "embed_json", "gather", "render_page", "write_report"]


def build_report(run_dirs: Sequence[str | Path], layouts: Sequence[str] = ("auto",), paper: bool = False,
                 n_resamples: int = 2000, seed: int = 0) -> str:
    """The HTML report of the given run directories, as one string."""
    view = gather(run_dirs, layouts, paper, n_resamples, seed)
    names = ", ".join(r["label"] for r in view["runs"])
    return render_page(view, f"bench view: {names}", git_commit())


def write_report(run_dirs: Sequence[str | Path], out: str | Path, **kw) -> Path:
    """Write :func:`build_report` to ``out`` atomically; returns the path."""
    out = Path(out)
    write_text(out, build_report(run_dirs, **kw))
    return out

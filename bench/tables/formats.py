"""Table output: markdown (pipe table + notes), csv (numbers only: Δ, CI and n in their own columns) and latex
(a tabular environment + notes as % comments); and the table files of a run directory (``tables/``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..rundir import RunDir, fail, write_text
from .build import build_table
from .layouts import FORMATS
from .model import Table


def _md(df: pd.DataFrame) -> str:
    def esc(x) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def format_table(table: Table, fmt: str = "md") -> str:
    """``md``: pipe table + notes; ``csv``: numbers only (Δ, CI and n in their own columns, no notes);
    ``latex``: a tabular environment + notes as % comments."""
    if fmt == "md":
        return _md(table.display_frame()) + "\n\n" + "\n".join(f"- {n}" for n in table.notes) + "\n"
    if fmt == "csv":
        # 12 significant digits: the numbers as computed, without binary noise such as 27.500000000000004
        return table.numeric_frame().to_csv(index=False, float_format="%.12g")
    if fmt in ("latex", "tex"):
        # pandas' to_latex goes through Styler, which needs jinja2 (a torch dependency, so always installed).
        tex = table.display_frame().to_latex(index=False, escape=True)
        return tex + "".join(f"% {n}\n" for n in table.notes)
    fail(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")


def render_table(run_dirs: Sequence[str | Path], layout: str = "default", fmt: str = "md", paper: bool = False,
                 n_resamples: int = 2000, seed: int = 0) -> str:
    """The table ``layout`` of the given run directories as text in ``fmt`` (md, csv, latex)."""
    if fmt not in FORMATS + ("tex",):
        fail(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    return format_table(build_table(run_dirs, layout, paper, n_resamples, seed), fmt)


def write_tables(run_dir: str | Path, layout: str = "default", formats: Sequence[str] = ("md", "csv", "latex"),
                 paper: bool = False) -> list[Path]:
    """Write ``RUN/tables/<layout>.{md,csv,tex}`` atomically; returns the paths."""
    table = build_table([run_dir], layout, paper)
    rd = RunDir(run_dir)
    paths = []
    for fmt in formats:
        path = rd.table(table.layout, fmt)
        write_text(path, format_table(table, fmt))
        paths.append(path)
    return paths

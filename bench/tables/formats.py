"""Table output: markdown (pipe table + notes), csv (numbers only: Δ, CI and n in their own columns) and latex
(a tabular environment + notes as % comments); and the table files of a run directory (``tables/``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..rundir import RunDir, fail, write_text
from .build import build_table
from .contamination import build_contamination_table, require_table
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
    ``latex``: a tabular environment + notes as % comments. A table without rows is its notes alone."""
    if not table.rows and fmt != "csv":
        return "".join(f"{'- ' if fmt == 'md' else '% '}{n}\n" for n in table.notes)
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


CONTAMINATION_MODES = ("auto", "only", "off")
CONTAMINATION_TITLE = "Contamination: scores on all items and on the clean items"


def with_contamination(text: str, extra: Table | None, fmt: str) -> str:
    """The main table's text followed by the contamination table's (md, latex; a csv holds one table)."""
    if extra is None or fmt == "csv":
        return text
    if not extra.rows:  # nothing dirty: its one note
        return text + "\n" + format_table(extra, fmt)
    title = f"### {CONTAMINATION_TITLE}\n\n" if fmt == "md" else f"% {CONTAMINATION_TITLE}\n"
    return text + "\n" + title + format_table(extra, fmt)


def render_table(run_dirs: Sequence[str | Path], layout: str = "default", fmt: str = "md", paper: bool = False,
                 n_resamples: int = 2000, seed: int = 0, contamination: str = "auto",
                 warnings: list[str] | None = None) -> str:
    """The table ``layout`` of the given run directories as text in ``fmt`` (md, csv, latex). ``contamination``:
    ``auto`` appends the contamination table (md, latex) when the runs have contamination reports, ``only`` gives
    that table alone, ``off`` never shows it. ``warnings``, when given, receives the notes a command should also
    say on stderr (an unfinished run, different judges)."""
    if fmt not in FORMATS + ("tex",):
        fail(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    if contamination not in CONTAMINATION_MODES:
        fail(f"unknown contamination mode {contamination!r}; choose from {', '.join(CONTAMINATION_MODES)}")
    if contamination == "only":
        return format_table(require_table(run_dirs, n_resamples, seed), fmt)
    table = build_table(run_dirs, layout, paper, n_resamples, seed)
    if warnings is not None:
        warnings.extend(table.warnings)
    text = format_table(table, fmt)
    extra = build_contamination_table(run_dirs, n_resamples, seed) if contamination == "auto" else None
    return with_contamination(text, extra, fmt)


def write_tables(run_dir: str | Path, layout: str = "default", formats: Sequence[str] = ("md", "csv", "latex"),
                 paper: bool = False) -> list[Path]:
    """Write ``RUN/tables/<layout>.{md,csv,tex}`` atomically, and ``RUN/tables/contamination.{md,csv,tex}`` when the
    run has contamination reports; returns the paths, the layout's first."""

    rd = RunDir(run_dir)
    paths = []
    for table in (build_table([run_dir], layout, paper), build_contamination_table([run_dir])):
        for fmt in formats if table is not None else ():
            path = rd.table(table.layout, fmt)
            write_text(path, format_table(table, fmt))
            paths.append(path)
    return paths

"""The table model: a :class:`Cell` (value, and its difference from the baseline with a CI) and a :class:`Table`
(label columns, value columns, rows, notes), with the two frames the formatters print."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

MISSING = "—"


@dataclass
class Cell:
    value: float | None = None
    delta: float | None = None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    per_seed: dict[int, float] | None = None  # run.seeds: each seed's Δ

    def text(self, digits: int = 2) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return MISSING
        out = f"{self.value:.{digits}f}"
        if self.delta is not None and not math.isnan(self.delta):
            ci = f" [{self.lo:.{digits}f}, {self.hi:.{digits}f}]" if self.lo is not None else ""
            seeds = f"; seeds {', '.join(f'{d:+.{digits}f}' for d in self.per_seed.values())}" if self.per_seed else ""
            out += f" ({self.delta:+.{digits}f}{ci}{seeds})"
        return out

    def per_seed_text(self) -> str:
        return ";".join(f"s{k}:{v:+.6g}" for k, v in (self.per_seed or {}).items())


@dataclass
class Table:
    """A rendered-ready table: label columns, value columns (Cells) and the notes printed under it."""

    layout: str
    label_cols: list[str]
    value_cols: list[str]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # the tasks behind the value columns
    warnings: list[str] = field(default_factory=list)  # notes a command also says on stderr (incomplete, ...)

    def display_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{**{c: r.get(c, "") for c in self.label_cols},
                              **{c: r[c].text() if isinstance(r.get(c), Cell) else MISSING for c in self.value_cols}}
                             for r in self.rows], columns=self.label_cols + self.value_cols)

    def numeric_frame(self) -> pd.DataFrame:
        """One column per number: value, and ``Δ``, ``Δ lo``, ``Δ hi``, ``n`` for columns that have deltas."""
        with_delta = {c for c in self.value_cols for r in self.rows
                      if isinstance(r.get(c), Cell) and r[c].delta is not None}
        seeded = any(isinstance(r.get(c), Cell) and r[c].per_seed for r in self.rows for c in self.value_cols)
        data = []
        for r in self.rows:
            d = {c: r.get(c, "") for c in self.label_cols}
            for c in self.value_cols:
                cell = r.get(c) if isinstance(r.get(c), Cell) else Cell()
                d[c] = cell.value
                if c in with_delta:
                    d.update({f"{c} Δ": cell.delta, f"{c} Δ lo": cell.lo, f"{c} Δ hi": cell.hi, f"{c} n": cell.n})
                    if seeded:
                        d[f"{c} Δ per seed"] = cell.per_seed_text()
            data.append(d)
        df = pd.DataFrame(data)
        for c in with_delta:  # counts stay integers beside the NaNs of baseline rows
            df[f"{c} n"] = df[f"{c} n"].astype("Int64")
        return df

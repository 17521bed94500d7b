"""The self-contained HTML page of `bench view`: static parts (summary, provenance, tables, plots) rendered here with
every run-derived string escaped; the item browser rendered in the browser from embedded JSON (``view.js``, which
only ever uses ``textContent``). No external resource: CSS and JS are inline, plots are data URIs, and the page's
Content-Security-Policy allows nothing else (``default-src 'none'``; the one script and style by their hashes, so
even an injected ``<script>`` could not run)."""
from __future__ import annotations

import base64
import hashlib
import html
import json
import time
from importlib import resources
from typing import Any

MISSING = "\u2014"


def _asset(name: str) -> str:
    return resources.files("bench.view").joinpath("assets", name).read_text(encoding="utf-8")


def _e(x: Any) -> str:
    return html.escape(MISSING if x is None else str(x), quote=True)


def embed_json(obj: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: ``<``, ``>``, ``&`` and the JS line separators
    escaped as ``\\uXXXX``, so no string in the data can close the block or start markup."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return text


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


# ---------------------------------------------------------------------------------------------- static parts


def _facts_table(rows: list[tuple[str, Any]], cls: str = "facts") -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>'


def _grid(records: list[dict], cls: str = "small") -> str:
    if not records:
        return ""
    keys = list(dict.fromkeys(k for r in records for k in r))
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(k))}</td>" for k in keys) + "</tr>" for r in records)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _run_section(run: dict) -> str:
    parts = [f'<div class="run" data-run="{_e(run["label"])}"><h3>Run {_e(run["label"])}</h3>',
             _facts_table([(f["name"], f["value"]) for f in run["facts"]])]
    if run.get("task_data"):
        parts.append("<details open><summary>Task data and prompt fingerprints</summary>"
                     + _grid(run["task_data"]) + "</details>")
    if run.get("fingerprints"):
        parts.append("<details><summary>Per variant and task: data, prompt, scorer and judge fingerprints"
                     "</summary>" + _grid(run["fingerprints"]) + "</details>")
    if run.get("protocols"):
        protos = run["protocols"]
        rows = list(protos.items()) if isinstance(protos, dict) else [(i, p) for i, p in enumerate(protos)]
        parts.append("<details><summary>Protocols</summary>" + _facts_table(rows) + "</details>")
    if run.get("stages"):
        total = sum(s.get("seconds") or 0 for s in run["stages"])
        stages = [{**s, "seconds": None if s.get("seconds") is None else f"{s['seconds']:.1f}"} for s in run["stages"]]
        parts.append(f"<details><summary>Stages ({len(stages)}, {total:.0f} s in all)</summary>"
                     + _grid(stages) + "</details>")
    if run.get("provenance"):
        parts.append("<details><summary>provenance.json</summary><pre class=\"json\">"
                     + _e(json.dumps(run["provenance"], indent=1, ensure_ascii=False, sort_keys=True))
                     + "</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def _num_attrs(num: dict | None) -> str:
    if not num:
        return ""
    return "".join(f' data-{k}="{_e(repr(float(v)) if k != "n" else int(v))}"' for k, v in num.items()
                   if v is not None)


def _table_section(t: dict) -> str:
    n_labels = len(t["label_cols"])
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in t["label_cols"] + t["value_cols"])
    rows = []
    for i, row in enumerate(t["rows"]):
        tds = []
        for j, (cell, col) in enumerate(zip(row, t["label_cols"] + t["value_cols"])):
            cls = ' class="num"' if j >= n_labels else ""
            tds.append(f'<td{cls} data-col="{_e(col)}"{_num_attrs(cell.get("num"))}>{_e(cell["text"])}</td>')
        rows.append(f'<tr data-row="{i}">' + "".join(tds) + "</tr>")
    notes = "".join(f"<li>{_e(n)}</li>" for n in t["notes"])
    return (f'<h3>Layout {_e(t["layout"])}</h3><table class="results" data-layout="{_e(t["layout"])}"><thead><tr>'
            f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table><ul class="notes">{notes}</ul>')


def _plots_section(plots: list[dict]) -> str:
    parts = []
    for run in plots:
        figs = []
        for p in run["plots"]:
            how = " (drawn from the run's records; no PNG in its plots/)" if p["drawn"] else ""
            figs.append(f'<figure data-plot="{_e(p["name"])}"><img alt="{_e(p["title"])}" src="{p["uri"]}">'
                        f"<figcaption>{_e(p['title'])}{_e(how)}</figcaption></figure>")
        if len(plots) > 1:
            parts.append(f"<h3>Run {_e(run['run'])}</h3>")
        parts.append('<div class="plots">' + ("".join(figs) or '<p class="missing">no plots in this run</p>')
                     + "</div>")
    return "".join(parts)


CONTROLS = """<div class="controls" role="search">
<label>Task <select id="f-task"></select></label>
<label>Category <select id="f-category"></select></label>
<label><input type="checkbox" id="f-disagree"> variants disagree</label>
<label><input type="checkbox" id="f-failed"> judge failed</label>
<label id="f-dirty-wrap" hidden>Contamination <select id="f-dirty"><option value="">all items</option>
<option value="dirty">dirty only</option><option value="clean">clean only</option></select></label>
<label>Search <input type="search" id="f-search" placeholder="prompt, answer, reference, judge text, id"></label>
<label>Sort <select id="f-sort"><option value="file">run order</option>
<option value="diff-desc">difference, largest first</option>
<option value="diff-asc">difference, smallest first</option>
<option value="absdiff">|difference|, largest first</option></select></label>
<label>difference <select id="f-sortcol"></select></label>
<fieldset id="f-columns"><legend>variants shown</legend></fieldset>
<button type="button" id="f-reset">reset filters</button>
<span class="pager"><button type="button" id="f-prev">&lsaquo; prev</button> <span id="f-page"></span>
<button type="button" id="f-next">next &rsaquo;</button>
<label>per page <select id="f-per-page"></select></label></span>
</div>
<p id="task-info"></p>
<p id="count" aria-live="polite"></p>
<div id="item-list"></div>"""


def render_page(view: dict, title: str, made_by: dict) -> str:
    """The whole HTML document for :func:`bench.view.data.gather`'s ``view``."""
    css, js = _asset("view.css"), _asset("view.js")
    csp = (f"default-src 'none'; img-src data:; style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
           "base-uri 'none'; form-action 'none'")
    runs = "".join(_run_section(r) for r in view["runs"])
    tables = "".join(_table_section(t) for t in view["tables"])
    b = view["browser"]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    settings = view["settings"]
    made = (f"made by bench view on {stamp}; bench commit {made_by.get('commit', 'unknown')}"
            + (" (uncommitted changes)" if made_by.get("dirty") else "")
            + f"; tables: bootstrap {settings['resamples']} resamples, seed {settings['bootstrap_seed']}")
    return f"""<!doctype html>
<html lang="en" data-rendered="none">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sftmix-bench view">
<link rel="icon" href="data:,">
<title>{_e(title)}</title>
<style>{css}</style>
</head>
<body>
<header class="page"><h1>{_e(title)}</h1><p>{_e(made)}</p>
<nav class="toc"><a href="#summary">Summary and provenance</a><a href="#tables">Tables</a><a href="#plots">Plots</a>
<a href="#items">Items ({len(b["items"])})</a></nav></header>
<main>
<section class="block" id="summary"><h2>Summary and provenance</h2>{runs}</section>
<section class="block" id="tables"><h2>Tables</h2>{tables}</section>
<section class="block" id="plots"><h2>Plots</h2>{_plots_section(view["plots"])}</section>
<section class="block" id="items"><h2>Items</h2>{CONTROLS}</section>
</main>
<script type="application/json" id="bench-data">{embed_json(b)}</script>
<script>{js}</script>
</body>
</html>
"""

"""`bench perf --only view`: how large `bench view`'s page is for a paper-scale run and how soon it shows items.

The run is fabricated (no model): AlpacaEval's shape, 805 items x 8 variants by default, answers and references of
~1,500 characters, one judge verdict per item with its log-probabilities, written through :mod:`bench.rundir` as the
score stage writes them. Measured: the time to build the report (gather + render, the `bench view` command minus
interpreter start-up), the file size, and in headless Chromium (Playwright, the system browser: no download) the
time from navigation start to the first items painted (``performance.mark('bench-view-first-items')`` in
``view.js``), to every item in the page, and the JS heap. Each load is a fresh page; the fastest of ``loads`` counts.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from ..rundir import ItemValues, RunDir, TaskSummary, TrainRecord, write_jsonl
from ..view import write_report

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIRST_RENDER_TARGET_MS = 1000.0  # the first items on screen within a second of opening the file
WORDS = ("the model answers with care and detail about data training mixup confidence split judge prompt "
         "reference evaluation benchmark variant baseline item score win rate length").split()


def find_chromium() -> str | None:
    """A Chromium-family browser: ``$BENCH_CHROMIUM``, else the first of :data:`CHROMIUM_CANDIDATES` on PATH."""
    env = os.environ.get("BENCH_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    return next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)


def _text(rng: random.Random, chars: int) -> str:
    words, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        words.append(w)
        n += len(w) + 1
    return " ".join(words)


def fabricate_view_run(root: str | Path, n_items: int = 805, n_variants: int = 8, chars: int = 1500,
                       seed: int = 0) -> Path:
    """An AlpacaEval-shaped finished run under ``root`` (no model, no training); returns its path."""
    rng = random.Random(seed)
    root = Path(root)
    rd = RunDir(root)
    variants = ["ntp", "sftmix"] + [f"sftmix-{k}" for k in range(n_variants - 2)]
    rd.mark_version()
    rd.config.write_text("run:\n  model_name: fabricated\n  train_data_name: fabricated\n"
                         f"  variants: [{', '.join(variants)}]\n  tasks: [alpaca_eval]\n", encoding="utf-8")
    prompts = [_text(rng, 200) for _ in range(n_items)]
    refs = [_text(rng, chars) for _ in range(n_items)]
    cats = ["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"]
    for v in variants:
        gens, verdicts, values = [], [], []
        for i in range(n_items):
            eid = str(i)
            gens.append({"task": "alpaca_eval", "example_id": eid, "turn": 0, "category": cats[i % 5],
                         "messages": [{"role": "user", "content": prompts[i]}], "reference": refs[i],
                         "text": _text(rng, int(chars * rng.uniform(0.5, 1.5))), "model": f"fabricated/{v}"})
            pref = rng.uniform(1, 2)
            failed = rng.random() < 0.01
            verdicts.append({"task": "alpaca_eval", "example_id": eid, "turn": 1, "repeat": 0, "judge": "judge-x",
                             "judge_kind": "llm", "score": None if failed else pref, "failed": failed,
                             "failure": "unparsable" if failed else None,
                             "raw": {"text": "m", "top_logprobs": [{"token": "m", "logprob": -0.2},
                                                                  {"token": "M", "logprob": -1.7}]},
                             "meta": {"swapped": bool(i % 2)}, "variant": v})
            if not failed:
                values.append({"example_id": eid, "turn": 1, "category": cats[i % 5], "value": pref - 1})
        write_jsonl(rd.generations(v, "alpaca_eval"), gens)
        write_jsonl(rd.judgments(v, "alpaca_eval"), verdicts)
        wr = 100 * sum(x["value"] for x in values) / len(values)
        TaskSummary(task="alpaca_eval", variant=v, kind="chat", metrics={"win_rate": wr, "lc_win_rate": None},
                    model="fabricated", train_data="fabricated", judge="judge-x", judge_kind="llm",
                    n_items=n_items, n_failed=n_items - len(values)).write(rd)
        ItemValues(values).write(rd, v, "alpaca_eval")
        TrainRecord(variant={"name": v}, log_history=[{"step": s, "loss": 2.0 / s} for s in range(1, 20)]).write(rd, v)
    return root


_TIMES = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const mark = (name) => performance.getEntriesByName(name)[0].startTime;
    return {first_items_ms: mark('bench-view-first-items'), page_items_ms: mark('bench-view-page-items'),
            dom_content_loaded_ms: nav ? nav.domContentLoadedEventEnd : null,
            heap_mb: performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null,
            n_rendered: document.querySelectorAll('#item-list article.item').length,
            n_matched: Number(document.getElementById('count').dataset.count)};
}"""


def _load(browser, url: str) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    # a selector, not wait_for_function: the page's CSP forbids the eval that wait_for_function needs
    page.wait_for_selector("html[data-rendered='all']", state="attached", timeout=600_000)
    page.wait_for_timeout(100)  # the first-items mark is set in the frame after the first chunk
    t = page.evaluate(_TIMES)
    page.close()
    return {**t, "errors": errors}


def measure_page(html: Path, loads: int = 3, browser_path: str | None = None, one_page: bool = True) -> dict:
    """Open ``html`` in headless Chromium ``loads`` times (the fastest counts): ms from navigation start to the first
    items painted and to the first page complete, the JS heap; with ``one_page`` also one load with every item on
    one page (``?per-page=all``), the cost the pagination avoids."""
    from playwright.sync_api import sync_playwright  # heavy optional dependency

    exe = browser_path or find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found (apt-get install chromium, or set BENCH_CHROMIUM)")
    url = html.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe)
        try:
            runs = [_load(browser, url) for _ in range(loads)]
            whole = _load(browser, url + "?per-page=all") if one_page else None
        finally:
            browser.close()
    best = min(runs, key=lambda r: r["first_items_ms"])
    out = {**best, "first_items_ms_runs": [r["first_items_ms"] for r in runs], "browser": exe}
    if whole is not None:
        out["one_page"] = {k: whole[k] for k in ("first_items_ms", "page_items_ms", "n_rendered", "heap_mb")}
    return out


def view_worker(spec: dict) -> dict:
    """Fabricate the run, build the report (timed), measure the page in Chromium."""
    shape = spec.get("shape") or {}
    n_items, n_variants = int(shape.get("view_items", 805)), int(shape.get("view_variants", 8))
    with tempfile.TemporaryDirectory() as tmp:
        run = fabricate_view_run(Path(tmp) / "run", n_items, n_variants)
        out = Path(tmp) / "report.html"
        t0 = time.perf_counter()
        write_report([run], out)
        build_s = time.perf_counter() - t0
        result = {"items": n_items, "variants": n_variants, "build_s": build_s, "size_mb": out.stat().st_size / 1e6}
        result.update(measure_page(out, loads=int(shape.get("view_loads", 3))))
    return result


def view_targets(section: dict) -> list[dict]:
    """The first-render target for the `view` section of a perf report."""
    r = section.get("view", {})
    if not r:
        return []
    ok = "error" not in r and r.get("n_matched") == r.get("items") and r.get("n_rendered") and not r.get("errors")
    ms = r.get("first_items_ms") if ok else None
    bound = FIRST_RENDER_TARGET_MS
    return [{"target": f"bench view, {r.get('items')} items x {r.get('variants')} variants: first items on screen",
             "ratio": None, "value": None if ms is None else f"{ms:.0f} ms ({r['size_mb']:.1f} MB file)",
             "bound": f"<= {bound:.0f} ms", "margin": None if ms is None else ms / bound - 1,
             "status": "n/a" if ms is None else ("PASS" if ms <= bound else "MISS")}]


def render_view(section: dict) -> list[str]:
    """The `view` section of perf-<device>.md."""
    r = section.get("view")
    if not r:
        return []
    out = ["", "## bench view: report size and time to first render", ""]
    if "error" in r:
        return out + [f"n/a: {r['error']}"]
    heap = "n/a" if r.get("heap_mb") is None else f"{r['heap_mb']:.0f} MB"
    loads = ", ".join(f"{x:.0f}" for x in r.get("first_items_ms_runs", []))
    out += ["| run | file | build (gather + render) | first items painted | first page complete | JS heap | load |",
            "|---|---|---|---|---|---|---|",
            f"| {r['items']} items x {r['variants']} variants (AlpacaEval-shaped) | {r['size_mb']:.1f} MB | "
            f"{r['build_s']:.1f} s | {r['first_items_ms']:.0f} ms | {r['page_items_ms']:.0f} ms "
            f"({r['n_rendered']} items) | {heap} | {r.get('load_avg') or 'n/a'} |",
            "", f"Milliseconds from navigation start in headless Chromium ({r.get('browser')}), the fastest of the "
            f"loads ({loads} ms); filters, search and sort run over all {r['n_matched']} items of the embedded data."]
    one = r.get("one_page")
    if one:
        out.append(f"Every item on one page instead (`?per-page=all`): first items {one['first_items_ms']:.0f} ms, "
                   f"all {one['n_rendered']} items laid out {one['page_items_ms']:.0f} ms - why the page "
                   "paginates runs of more than 3,000 answers.")
    return out
